"""Daily metric rollups: what makes a performance report over any N days cheap.

Per (component, model, hardware, metric, day): count, sum, min, max, the unit
(the least of its points' units), and a
mergeable log-bucket histogram (`metric_hist`, one row per non-empty bucket).
Summing the rows of N days gives that window's count/mean/min/max, and summing
the histograms gives its percentiles with ≤ ALPHA relative error (DDSketch:
bucket i holds γ^(i-1) < |v| ≤ γ^i with γ = (1+α)/(1-α), and reports 2γ^i/(γ+1)).
The percentile at q interpolates, like quantile_cont, between the values of ranks
⌊q·(n−1)⌋ and ⌈q·(n−1)⌉ (0-based), each read from the histogram within ALPHA; so
it is within ALPHA of the exact interpolated percentile whenever those two values
have the same sign. |v| < 1e-9 counts as 0.

A sketch percentile never leaves [min, max]: rank 0 is the minimum and rank n−1 the
maximum, both known exactly, and every other rank's value is clamped between them
(a bucket's representative can lie outside its group's range). A day of at most
EXACT_MAX_POINTS points also keeps its values (`vals`, sorted), so a window of at
most that many points has exact percentiles.
"""

import bisect
import math

from runlake.views.view import View, same

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
# The sign and bucket index share one integer whose order is the values' order:
# key = sign(v) * (i + OFFSET), OFFSET keeping i + OFFSET > 0 for |v| ≥ 1e-9.
OFFSET = 1100
BUCKET = (
    f"CASE WHEN abs(value) < 1e-9 THEN 0 ELSE "
    f"CAST(sign(value) * (ceil(ln(abs(value)) / {LN_GAMMA!r}) + {OFFSET}) AS INTEGER) END"
)
# The value a bucket key reports.
REPRESENTATIVE = (
    f"CASE WHEN bucket = 0 THEN 0.0 ELSE sign(bucket) * 2 * "
    f"pow({GAMMA!r}, abs(bucket) - {OFFSET}) / ({GAMMA!r} + 1) END"
)

QUANTILES = (0.5, 0.95, 0.99)
# A (group, day) of at most this many points keeps its values: a window of at most
# this many points then has exact percentiles. ~8 bytes a point, in the database and
# in the performance series (at 10 M events most days have fewer points than this).
EXACT_MAX_POINTS = 64


def representative(bucket: int) -> float:
    """REPRESENTATIVE in Python, for percentiles merged outside SQL (the report)."""
    if bucket == 0:
        return 0.0
    return math.copysign(2 * GAMMA ** (abs(bucket) - OFFSET) / (GAMMA + 1), bucket)


def merged_percentile(buckets: list[int], cum: list[int], q: float,
                      lo: float, hi: float) -> float:
    """The percentile at q of a merged histogram given as its bucket keys in order and
    their running counts, of points whose minimum is `lo` and maximum `hi`: like
    `rank_buckets` + `interpolated`, with ranks 0 and n−1 read exactly and the others
    clamped to [lo, hi]."""
    last = cum[-1] - 1
    pos = q * last

    def at(rank: int) -> float:
        if rank == 0:
            return lo
        if rank == last:
            return hi
        return min(max(representative(buckets[bisect.bisect_right(cum, rank)]), lo), hi)

    a, b = at(math.floor(pos)), at(math.ceil(pos))
    return min(max(a + (b - a) * (pos - math.floor(pos)), lo), hi)


def exact_percentile(values: list[float], q: float) -> float:
    """quantile_cont of `values`, sorted: interpolated between the two ranks around
    q·(n−1), like DuckDB and numpy's default."""
    pos = q * (len(values) - 1)
    a, b = values[math.floor(pos)], values[math.ceil(pos)]
    return min(max(a + (b - a) * (pos - math.floor(pos)), a), b)


def rank_buckets(q: float) -> str:
    """Aggregates over a CTE with each bucket's running count `cum` and the group's
    `total`: the buckets holding ranks ⌊q·(n−1)⌋ and ⌈q·(n−1)⌉."""
    name = f"{round(q * 100)}"
    return (f"min(bucket) FILTER (WHERE cum > floor({q} * (total - 1))) AS b{name}_lo, "
            f"min(bucket) FILTER (WHERE cum > ceil({q} * (total - 1))) AS b{name}_hi")


def interpolated(q: float, alias: str) -> str:
    """The percentile at q from `rank_buckets(q)` and `total` of the row `alias`."""
    name = f"{round(q * 100)}"
    lo = REPRESENTATIVE.replace("bucket", f"{alias}.b{name}_lo")
    hi = REPRESENTATIVE.replace("bucket", f"{alias}.b{name}_hi")
    pos = f"{q} * ({alias}.total - 1)"
    return f"(({lo}) + (({hi}) - ({lo})) * ({pos} - floor({pos})))"


# Percentiles of merged histograms: from rows (keys..., bucket, n), one per non-empty
# bucket, `percentiles(keys, source)` is a query of (keys..., total, p50, p95, p99).
def percentiles(keys: str, source: str) -> str:
    part = f"PARTITION BY {keys}"
    return f"""
    SELECT {keys}, total, {", ".join(f"{interpolated(q, 'r')} AS p{round(q * 100)}"
                                     for q in QUANTILES)}
    FROM (
        SELECT {keys}, any_value(total) AS total, {", ".join(map(rank_buckets, QUANTILES))}
        FROM (
            SELECT *, sum(n) OVER ({part} ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS cum,
                   sum(n) OVER ({part}) AS total
            FROM ({source})
        ) GROUP BY ALL
    ) r"""


KEY = ("component", "model", "hardware", "metric", "day")
# New points of runs whose groups did not move are merged in (fold's `new_points`);
# groups in `recompute_metrics` (runs deleted or re-attributed) are recomputed.
_GROUPS = "SELECT DISTINCT * FROM recompute_metrics"
# Both rollups recompute the same (group, day) keys.
# The runs of the recomputed groups' (component, model, hardware) are found first:
# joining every point to every run before the scope cut grew with the whole history.
# A replay writes the rollups in day order (the fold appends new days at the end
# anyway): the report's window then reads only its days' row groups.
_SCOPING = {"scope": f"SEMI JOIN g ON {same('r', 'g', *KEY)}", "groups": _GROUPS,
            "match": same("v", "g", *KEY), "order": "day",
            "narrow": "SEMI JOIN (SELECT DISTINCT component, model, hardware FROM g) k "
                      f"ON {same('r', 'k', 'component', 'model', 'hardware')}"}
_ON = same("v", "p", *KEY)

_POINTS = """
    SELECT m.component, r.model, r.hardware, m.name AS metric, CAST(m.ts AS DATE) AS day, m.value,
           m.unit
    FROM metrics m JOIN (SELECT component, run_id, model, hardware FROM runs r {narrow}) r
        ON m.component = r.component AND m.run_id = r.run_id"""

DAILY = View(
    name="metric_daily",
    create="""
CREATE TABLE IF NOT EXISTS metric_daily (
    component VARCHAR NOT NULL, model VARCHAR, hardware VARCHAR, metric VARCHAR NOT NULL,
    day DATE NOT NULL, count BIGINT NOT NULL, sum DOUBLE NOT NULL, min DOUBLE, max DOUBLE,
    unit VARCHAR, vals DOUBLE[])""",
    select=f"""
SELECT component, model, hardware, metric, day, count(*), sum(value), min(value), max(value),
       min(unit), CASE WHEN count(*) <= {EXACT_MAX_POINTS} THEN list_sort(list(value)) END
FROM ({_POINTS}) r {{scope}} GROUP BY ALL""",
    **_SCOPING,
    add=f"""
MERGE INTO metric_daily v USING (
    SELECT component, model, hardware, metric, day,
           count(*) AS n, sum(value) AS s, min(value) AS lo, max(value) AS hi, min(unit) AS u,
           CASE WHEN count(*) <= {EXACT_MAX_POINTS} THEN list_sort(list(value)) END AS vs
    FROM new_points GROUP BY ALL
) p ON {_ON}
WHEN MATCHED THEN UPDATE SET count = v.count + p.n, sum = v.sum + p.s,
    min = least(v.min, p.lo), max = greatest(v.max, p.hi), unit = least(v.unit, p.u),
    vals = CASE WHEN v.count + p.n <= {EXACT_MAX_POINTS} THEN list_sort(list_concat(v.vals, p.vs)) END
WHEN NOT MATCHED THEN INSERT VALUES
    (p.component, p.model, p.hardware, p.metric, p.day, p.n, p.s, p.lo, p.hi, p.u, p.vs)""",
)

HIST = View(
    name="metric_hist",
    create="""
CREATE TABLE IF NOT EXISTS metric_hist (
    component VARCHAR NOT NULL, model VARCHAR, hardware VARCHAR, metric VARCHAR NOT NULL,
    day DATE NOT NULL, bucket INTEGER NOT NULL, count BIGINT NOT NULL)""",
    select=f"""
SELECT component, model, hardware, metric, day, {BUCKET} AS bucket, count(*)
FROM ({_POINTS}) r {{scope}} GROUP BY ALL""",
    **_SCOPING,
    add=f"""
MERGE INTO metric_hist v USING (
    SELECT component, model, hardware, metric, day, bucket, count(*) AS n
    FROM new_points GROUP BY ALL
) p ON {_ON} AND v.bucket = p.bucket
WHEN MATCHED THEN UPDATE SET count = v.count + p.n
WHEN NOT MATCHED THEN INSERT VALUES
    (p.component, p.model, p.hardware, p.metric, p.day, p.bucket, p.n)""",
)
