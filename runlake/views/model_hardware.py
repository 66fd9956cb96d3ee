"""Runs per (model, hardware) of a component: the dashboard's success-rate heatmap.

Computed from `runs` on each call, not kept as a view: a grouped count over one
component's runs, whose cost the benchmark measures (BENCHMARKS.md, issue 21).
success_rate = completed / (completed + failed), null when both are 0, as in
group_stats."""

from __future__ import annotations

from typing import Any

from runlake.views.keyset import Key, page_sql, token_values
from runlake.views.queries import STATUSES, Cursor, _dicts, _page, stats_tie

CELLS_SQL = f"""
SELECT model, hardware, count(*) AS runs,
       {", ".join(f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in STATUSES)}
FROM runs WHERE component = ?
GROUP BY model, hardware
ORDER BY model NULLS LAST, hardware NULLS LAST"""


# `next` (docs/facets.md "Paging"): keyset on the model (nulls last), the tie the
# hardware made non-null and unique within a model ('0' || hardware, '1' for none),
# which sorts as `hardware NULLS LAST`. A cell's key never changes, only its counts.
CELLS_SORT = "model,hardware"
CELLS_KEYS = [Key("model", False, "text")]
CELLS_TIE = stats_tie("hardware")


def model_hardware(cur: Cursor, component: str, limit: int, offset: int,
                   after_row: tuple[list[Any], str] | None = None) -> dict[str, Any]:
    """A page of cells and, under `ended`, where it ended (its last cell's model as a
    token holds it, and its tie) when more follow, else None. `after_row` (from a
    `next` token) starts past that cell instead of skipping `offset` rows."""
    rows = _dicts(cur, *page_sql(
        f"SELECT *, {CELLS_TIE} AS _tie, count(*) OVER () AS total FROM ({CELLS_SQL})",
        "TRUE", [component], CELLS_KEYS, CELLS_TIE, limit, offset, after_row))
    total = rows[0]["total"] if rows and after_row is None else _dicts(
        cur, f"SELECT count(*) AS n FROM ({CELLS_SQL})", [component])[0]["n"]
    ended = None
    if len(rows) > limit:
        ended = (token_values(CELLS_KEYS, rows[limit - 1]), rows[limit - 1]["_tie"])
    items = []
    for row in rows[:limit]:
        by_status = {s: row[s] for s in STATUSES}
        done = by_status["completed"] + by_status["failed"]
        items.append({"model": row["model"], "hardware": row["hardware"], "runs": row["runs"],
                      "by_status": by_status,
                      "success_rate": by_status["completed"] / done if done else None})
    page = _page(items, limit, offset, total)
    page["ended"] = ended
    return page
