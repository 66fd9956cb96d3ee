"""Per (component, model, hardware, metric) over all time: count, mean, min, max
exact, and p50/p95/p99 from the merged daily histograms (interpolated between
ranks like quantile_cont, each rank within 1 % relative error; see metric_daily).

It is refreshed from the daily rollups, never from the points: recomputing
exact percentiles scanned every point of each touched group, a cost that grew
with history (100 ms per 1 000-event batch at 3 M events). A point belongs to
the model and hardware its run has now, as in the rollups it is built from.
"""

from runlake.views.metric_daily import percentiles
from runlake.views.view import View, same

KEY = ("component", "model", "hardware", "metric")
_ON = same("d", "q", *KEY)

CREATE = """
CREATE TABLE IF NOT EXISTS metric_stats (
    component VARCHAR NOT NULL, model VARCHAR, hardware VARCHAR, metric VARCHAR NOT NULL,
    count BIGINT NOT NULL, mean DOUBLE, min DOUBLE, max DOUBLE,
    p50 DOUBLE, p95 DOUBLE, p99 DOUBLE)"""

_HIST = """
    SELECT component, model, hardware, metric, bucket, sum(count) AS n
    FROM metric_hist r {scope} GROUP BY ALL"""
SELECT = f"""
WITH q AS ({percentiles(", ".join(KEY), _HIST)}
), d AS (
    SELECT component, model, hardware, metric, sum(count) AS count,
           sum(sum) / sum(count) AS mean, min(min) AS min, max(max) AS max
    FROM metric_daily r {{scope}} GROUP BY ALL
)
SELECT d.component, d.model, d.hardware, d.metric, d.count, d.mean, d.min, d.max,
       q.p50, q.p95, q.p99
FROM d JOIN q ON {_ON}"""

VIEW = View(
    name="metric_stats",
    create=CREATE,
    select=SELECT,
    scope=f"SEMI JOIN g ON {same('r', 'g', *KEY)}",
    groups="SELECT DISTINCT component, model, hardware, metric FROM touched_metrics",
    match=same("v", "g", *KEY),
)
