"""The runs list's filters, sorts and keyset pages (docs/facets.md), over the `runs` view.

One filter builder serves the runs list and the facets, so both take the same
filters with the same meaning: several values of a field match any of them (IN),
fields combine with AND; `param.<path>` compares the params' JSON value at the path
as text. Every value is a bound parameter; column names come from the whitelists here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runlake.views import keyset
from runlake.views.keyset import Key
from runlake.views.queries import (
    _TAGGED,
    RUN_COLUMNS,
    Cursor,
    _dicts,
    _one,
    _page,
    _run_item,
    contains_text,
    created_between,
)

# Columns a run may be sorted on: every scalar column of the runs list.
SORT_COLUMNS = ("created_at", "updated_at", "started_at", "finished_at", "duration_s",
                "run_id", "status", "model", "hardware", "batch_id", "name", "error")
TIME_COLUMNS = frozenset({"created_at", "updated_at", "started_at", "finished_at"})
# Filters that take several values, by column.
MULTI_COLUMNS = ("status", "model", "hardware", "batch_id", "name")


@dataclass(frozen=True)
class RunFilter:
    """The filters of a runs list or a facet; empty means no filter."""

    values: dict[str, list[str]] = field(default_factory=dict)  # column: any of these
    tags: list[tuple[str, str]] = field(default_factory=list)  # all of these
    params: dict[str, list[str]] = field(default_factory=dict)  # path: any of these
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None

    @property
    def empty(self) -> bool:
        return not (any(self.values.values()) or self.tags or self.params or self.since
                    or self.until or self.q)


def json_path(path: str) -> str:
    """`a.b` as the JSON path `$."a"."b"` (keys are [A-Za-z0-9_-], checked by the parser)."""
    return "$" + "".join(f'."{key}"' for key in path.split("."))


def where(component: str, f: RunFilter) -> tuple[str, list[Any]]:
    """The filter as a condition over `runs` and its parameters."""
    conds, params = ["component = ?"], [component]
    for col in MULTI_COLUMNS:
        values = sorted(set(f.values.get(col, ())))
        if len(values) == 1:
            conds.append(f"{col} = ?")
            params.append(values[0])
        elif values:
            conds.append(f"{col} IN ({', '.join('?' * len(values))})")
            params += values
    for path, values in sorted(f.params.items()):
        uniq = sorted(set(values))
        conds.append(f"json_extract_string(params, ?) IN ({', '.join('?' * len(uniq))})")
        params += [json_path(path), *uniq]
    if f.tags:
        pairs = sorted(set(f.tags))
        conds.append(_TAGGED)
        params += [[k for k, _ in pairs], [v for _, v in pairs], component, len(pairs)]
    created, created_params = created_between(f.since, f.until)
    conds += created
    params += created_params
    if f.q:
        text, text_params = contains_text(("run_id", "name", "model"), f.q)
        conds.append(text)
        params += text_params
    return " AND ".join(conds), params


def sort_key(sort: str) -> Key:
    """The runs list's `sort` (`-` for descending) as a keyset Key."""
    col = sort.lstrip("-")
    if col not in SORT_COLUMNS:
        raise ValueError(f"unknown sort {sort!r}")
    kind = "time" if col in TIME_COLUMNS else "number" if col == "duration_s" else "text"
    return Key(col, sort.startswith("-"), kind)


def list_runs(cur: Cursor, component: str, f: RunFilter, *, sort: str = "-created_at",
              limit: int = 50, offset: int = 0, after: tuple[Any, str] | None = None
              ) -> tuple[dict[str, Any], bool]:
    """A page of the component's runs matching `f`, and whether more follow. `after`
    (a sort value, SQL-ready (keyset.sql_value), and run id from a `next` token) starts the page past that row
    instead of skipping `offset` rows; `total` counts every match either way."""
    key = sort_key(sort)
    cond, params = where(component, f)
    total = _one(cur, f"SELECT count(*) FROM runs r WHERE {cond}", params)
    after_row = None if after is None else ([after[0]], after[1])
    rows = _dicts(cur, *keyset.page_sql(f"SELECT {RUN_COLUMNS} FROM runs r", cond, params,
                                        [key], "run_id", limit, offset, after_row))
    more = len(rows) > limit
    return _page([_run_item(r) for r in rows[:limit]], limit, offset, total), more
