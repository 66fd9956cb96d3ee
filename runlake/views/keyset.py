"""Keyset conditions for the lists that page with `next` (docs/facets.md "Paging").

A list's order is a few sort keys, each NULLS LAST, then a unique tie-break column
ascending. The page after a row holds the rows strictly after it in that order; the
sort values come back from a token (the client's to send), so `sql_values` checks
each against its key's kind before it reaches SQL. The runs list keeps its own
one-key form (run_list._after); this is the same rule for several keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

Kind = Literal["number", "time", "text"]


class Key(NamedTuple):
    """One sort key: a column (or alias) of the query, its direction and its kind."""

    column: str
    desc: bool
    kind: Kind


def order_by(keys: list[Key], tie: str) -> str:
    """The ORDER BY clause the keyset condition follows."""
    return ", ".join([*(f"{k.column} {'DESC' if k.desc else 'ASC'} NULLS LAST" for k in keys),
                      tie])


def after(keys: list[Key], values: list[Any], tie: str, tie_value: str | int
          ) -> tuple[str, list[Any]]:
    """Rows strictly after the row with `values` (SQL-ready, see sql_values) and
    `tie_value` in order_by(keys, tie): for some key i, equal on every key before it
    and after it on key i; or equal on every key and after it on the tie."""
    parts: list[tuple[str, list[Any]]] = []
    equal: list[tuple[str, list[Any]]] = []
    for key, value in zip(keys, values, strict=True):
        if value is not None:  # past a value: further that way, or the nulls (last)
            op = "<" if key.desc else ">"
            parts.append(_all([*equal, (f"({key.column} {op} ? OR {key.column} IS NULL)",
                                        [value])]))
            equal.append((f"{key.column} = ?", [value]))
        else:  # nothing is past a null on this key but the other nulls
            equal.append((f"{key.column} IS NULL", []))
    parts.append(_all([*equal, (f"{tie} > ?", [tie_value])]))
    return "(" + " OR ".join(sql for sql, _ in parts) + ")", [v for _, ps in parts for v in ps]


def page_sql(select_from: str, where: str, params: list[Any], keys: list[Key], tie: str,
             limit: int, offset: int, after_row: tuple[list[Any], Any] | None
             ) -> tuple[str, list[Any]]:
    """One page of `select_from WHERE where` in order_by(keys, tie), one row more than
    `limit` (so the caller knows whether more follow): past `after_row` (SQL-ready sort
    values and the tie's value, from a `next` token) when given, else `offset` rows in.
    `params` are those of `select_from` and `where`, in order."""
    skip = offset
    if after_row is not None:
        extra, extra_params = after(keys, after_row[0], tie, after_row[1])
        where, params, skip = f"({where}) AND {extra}", [*params, *extra_params], 0
    return (f"{select_from} WHERE {where} ORDER BY {order_by(keys, tie)} LIMIT ? OFFSET ?",
            [*params, limit + 1, skip])


def _all(terms: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    return "(" + " AND ".join(sql for sql, _ in terms) + ")", [v for _, ps in terms for v in ps]


def token_values(keys: list[Key], row: dict[str, Any]) -> list[Any]:
    """A row's sort values as a token holds them (times as RFC 3339 text)."""
    return [token_value(row[k.column]) for k in keys]


def token_value(value: Any) -> Any:
    """One sort value as a token holds it (times as RFC 3339 text)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def sql_values(keys: list[Key], values: Any) -> list[Any]:
    """A token's sort values as SQL compares them (times naive UTC, like the columns);
    ValueError when they cannot be these keys' (wrong count or kind)."""
    if not isinstance(values, list) or len(values) != len(keys):
        raise ValueError(f"needs {len(keys)} sort values")
    return [sql_value(k, v) for k, v in zip(keys, values, strict=True)]


def sql_value(key: Key, value: Any) -> Any:
    """One token value as SQL compares it (see sql_values)."""
    if value is None:
        return None
    if key.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key.column} needs a number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{key.column} needs text")
    if key.kind == "time":
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError(f"{key.column} needs a time with a timezone")
        try:
            return parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
            raise ValueError(f"{key.column} is outside years 1-9999 in UTC") from None
    return value
