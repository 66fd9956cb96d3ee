"""Facets (docs/facets.md): a field's top values over a component's runs, with every
filter of the runs list.

A facet of `model`, `hardware` or `batch_id` with no filter reads the view that
already keeps those counts (model_stats, hardware_stats, batch_stats): a few rows.
Any other facet counts the `runs` view in slices of rows (by rowid, which DuckDB
prunes to the row groups of the slice) inside one transaction, so every slice sees
the same snapshot while the fold goes on. Between slices it checks the facet's time
budget: past it, the answer covers the slices counted so far and says `truncated`
(as Datasette's facet time limit does), never an unbounded scan.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

from runlake.views.queries import STATUSES, Cursor, _utc
from runlake.views.run_list import MULTI_COLUMNS, RunFilter, json_path, where

SLICE_ROWS = 100_000  # rows of `runs` counted per statement, between budget checks
# Fields whose unfiltered counts a view keeps: (view, its column). Batches declared
# with no run yet have runs = 0 there; a facet lists values that runs hold.
VIEW_FIELDS = {"model": "model_stats", "hardware": "hardware_stats", "batch_id": "batch_stats"}

_COUNTS = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in STATUSES)

FROM_VIEW = """
SELECT {col} AS value, pending, running, completed, failed, cancelled, last_seen
FROM {view} WHERE component = ? AND {col} IS NOT NULL AND runs > 0"""

# One slice: the matching runs' value of the field, by status, latest update.
SLICE = """
SELECT value, {counts}, max(updated_at)
FROM ({values}) WHERE value IS NOT NULL GROUP BY value"""
# The value per run: a column, or the params' JSON value at a path, as text.
RUN_VALUES = """
SELECT {expr} AS value, status, updated_at FROM runs
WHERE rowid >= ? AND rowid < ? AND {cond}"""
# A tag's value per run: runs without that tag have none.
TAG_VALUES = """
SELECT t.value, r.status, r.updated_at
FROM (SELECT component, run_id, status, updated_at FROM runs
      WHERE rowid >= ? AND rowid < ? AND {cond}) r
JOIN tags t ON t.component = r.component AND t.run_id = r.run_id AND t.key = ?"""


def _item(value: str, counts: list[int], last_seen: Any) -> dict[str, Any]:
    by_status = dict(zip(STATUSES, counts, strict=True))
    done = by_status["completed"] + by_status["failed"]
    return {"value": value, "runs": sum(counts), "by_status": by_status,
            "success_rate": by_status["completed"] / done if done else None,
            "last_seen": _utc(last_seen)}


def _slices(cur: Cursor, component: str, field: str, f: RunFilter, budget_s: float
            ) -> tuple[dict[str, list[Any]], bool]:
    """{value: [counts by status..., last_seen]} over the runs matching `f`, counted
    slice by slice until done or past `budget_s`; and whether it stopped early."""
    started = time.monotonic()
    cond, params = where(component, f)
    if field.startswith("tag:"):
        values_sql = TAG_VALUES.format(cond=cond)

        def args(lo: int, hi: int) -> list[Any]:
            return [lo, hi, *params, field.removeprefix("tag:")]
    else:
        expr, expr_params = ("json_extract_string(params, ?)",
                             [json_path(field.removeprefix("param:"))]) \
            if field.startswith("param:") else (field, [])
        values_sql = RUN_VALUES.format(expr=expr, cond=cond)

        def args(lo: int, hi: int) -> list[Any]:
            return [*expr_params, lo, hi, *params]
    sql = SLICE.format(counts=_COUNTS, values=values_sql)
    merged: dict[str, list[Any]] = {}
    step = SLICE_ROWS  # read at call time: a test counts in smaller slices
    lo, (end,) = 0, cur.execute("SELECT coalesce(max(rowid) + 1, 0) FROM runs").fetchone()
    while lo < end:
        # One slice always; past the budget no more (a budget of 0 counts one slice).
        if lo > 0 and time.monotonic() - started >= budget_s:
            return merged, True
        for value, *counts, last_seen in cur.execute(sql, args(lo, lo + step)).fetchall():
            have = merged.get(value)
            if have is None:
                merged[value] = [*counts, last_seen]
            else:
                for i, n in enumerate(counts):
                    have[i] += n
                have[-1] = max(have[-1], last_seen)
        lo += step
    return merged, False


def facet(cur: Cursor, component: str, field: str, f: RunFilter, *, limit: int = 10,
          offset: int = 0, budget_s: float = 1.0) -> dict[str, Any]:
    """The top values of `field` (a column of MULTI_COLUMNS, `tag:<key>` or
    `param:<path>`) over the component's runs matching `f`: most runs first, ties by
    value; `total_values` counts the distinct values (of the runs counted, when
    `truncated`)."""
    if not (field in MULTI_COLUMNS or field.startswith(("tag:", "param:"))):
        raise ValueError(f"unknown facet field {field!r}")
    cur.execute("BEGIN TRANSACTION")  # one snapshot for every slice
    try:
        if f.empty and field in VIEW_FIELDS:
            rows = cur.execute(FROM_VIEW.format(col=field, view=VIEW_FIELDS[field]),
                               [component]).fetchall()
            merged = {value: rest for value, *rest in rows}
            truncated = False
        else:
            merged, truncated = _slices(cur, component, field, f, budget_s)
    finally:
        cur.execute("ROLLBACK")
    ranked = heapq.nsmallest(offset + limit, merged.items(),
                             key=lambda kv: (-sum(kv[1][:-1]), kv[0]))
    items = [_item(v, rest[:-1], rest[-1]) for v, rest in ranked[offset:]]
    return {"component": component, "field": field, "items": items,
            "total_values": len(merged), "truncated": truncated, "limit": limit,
            "offset": offset}
