"""Runs per (model, hardware) of a component: the dashboard's success-rate heatmap.

Computed from `runs` on each call, not kept as a view: a grouped count over one
component's runs, whose cost the benchmark measures (BENCHMARKS.md, issue 21).
success_rate = completed / (completed + failed), null when both are 0, as in
group_stats."""

from __future__ import annotations

from typing import Any

from runlake.views.queries import STATUSES, Cursor, _dicts, _page

CELLS_SQL = f"""
SELECT model, hardware, count(*) AS runs,
       {", ".join(f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in STATUSES)}
FROM runs WHERE component = ?
GROUP BY model, hardware
ORDER BY model NULLS LAST, hardware NULLS LAST"""


def model_hardware(cur: Cursor, component: str, limit: int, offset: int) -> dict[str, Any]:
    rows = _dicts(cur, f"SELECT *, count(*) OVER () AS total FROM ({CELLS_SQL}) "
                       "LIMIT ? OFFSET ?", [component, limit, offset])
    total = rows[0]["total"] if rows else _dicts(
        cur, f"SELECT count(*) AS n FROM ({CELLS_SQL})", [component])[0]["n"]
    items = []
    for row in rows:
        by_status = {s: row[s] for s in STATUSES}
        done = by_status["completed"] + by_status["failed"]
        items.append({"model": row["model"], "hardware": row["hardware"], "runs": row["runs"],
                      "by_status": by_status,
                      "success_rate": by_status["completed"] / done if done else None})
    return _page(items, limit, offset, total)
