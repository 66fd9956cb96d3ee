"""One metric of one run cut into at most N buckets of consecutive points (by seq range),
W&B-style: per bucket the min and max (a band) and the last value (the line), so a
chart draws a bounded number of points whatever the run's length (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

from runlake.views.queries import Cursor, _dicts, run_span

# A bucket is an equal slice of the metric's seq range (no sort: a window such as
# ntile would order every point first), so it holds consecutive points and ranges
# never overlap; a metric interleaved unevenly with other events gets buckets of
# unequal counts. Up to N points, each point is its own bucket.
BUCKETS_SQL = """
WITH pts AS (
    SELECT value, unit, step, ts, seq FROM metrics
    WHERE component = ? AND run_id = ? AND seq BETWEEN ? AND ? AND name = ?),
span AS (SELECT min(seq) AS first, max(seq) - min(seq) + 1 AS width, count(*) AS n FROM pts)
SELECT arg_max(step, seq) AS step, max(ts) AS ts, count(*) AS count, min(value) AS min,
       max(value) AS max, arg_max(value, seq) AS last, min(seq) AS first_seq,
       max(seq) AS last_seq, arg_max(unit, seq) AS unit
FROM pts, span
GROUP BY CASE WHEN n <= ? THEN seq ELSE (seq - first) * ? // width END
ORDER BY first_seq"""


def metric_buckets(cur: Cursor, component: str, run_id: str, name: str,
                   buckets: int) -> dict[str, Any] | None:
    """The metric's buckets (None if there is no such run; no buckets if the run has
    no point of that name)."""
    span = run_span(cur, component, run_id)
    if span is None:
        return None
    rows = _dicts(cur, BUCKETS_SQL, [component, run_id, *span, name, buckets, buckets])
    unit = rows[-1]["unit"] if rows else None
    for row in rows:
        del row["unit"]
    return {"name": name, "unit": unit, "points": sum(r["count"] for r in rows),
            "buckets": rows}
