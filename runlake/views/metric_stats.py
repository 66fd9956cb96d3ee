"""Per (component, model, hardware, metric) over all time: count, mean, min, max
exact, and p50/p95/p99 from the merged daily histograms (interpolated between
ranks like quantile_cont, each rank within 1 % relative error; see metric_daily).

It is refreshed from the rollups, never from the points: recomputing exact
percentiles scanned every point of each touched group, a cost that grew with
history (100 ms per 1 000-event batch at 3 M events). A point belongs to the
model and hardware its run has now, as in the rollups it is built from.

`metric_hist_all` is the all-time histogram per group: the daily histograms
summed over days, kept additively like them. Merging the days at every refresh
instead cost ~250 ms per 80 k-event batch at 1 M events.

A percentile is clamped to the group's [min, max]: a bucket's representative can
lie outside it (the performance report also reads ranks 0 and n−1 exactly, and a
small window's values; this all-time view, which no route serves, only clamps).
"""

from runlake.views.metric_daily import percentiles
from runlake.views.view import View, group_key, same

KEY = ("component", "model", "hardware", "metric")
GKEY = group_key(*KEY)
# Touched groups, with their gkey: the all-time histogram is keyed by it alone.
_GROUPS = f"SELECT component, model, hardware, metric, {GKEY} AS gkey FROM (SELECT DISTINCT " \
    "component, model, hardware, metric FROM {source})"

HIST_ALL = View(
    name="metric_hist_all",
    create="""
CREATE TABLE IF NOT EXISTS metric_hist_all (
    gkey UHUGEINT NOT NULL, bucket INTEGER NOT NULL, count BIGINT NOT NULL)""",
    # From metric_hist, already refreshed for this batch: the groups whose runs were
    # deleted or moved are summed again; the others take the batch's new points.
    # gkey is computed once per group and bucket, after the sums.
    select=f"""
SELECT {GKEY}, bucket, n FROM (
    SELECT component, model, hardware, metric, bucket, sum(count) AS n
    FROM metric_hist r {{scope}} GROUP BY ALL)""",
    scope=f"SEMI JOIN g ON {same('r', 'g', *KEY)}",
    groups=_GROUPS.format(source="recompute_metrics"),
    match="v.gkey = g.gkey",
    add=f"""
MERGE INTO metric_hist_all v USING (
    SELECT {GKEY} AS gkey, bucket, n FROM (
        SELECT component, model, hardware, metric, bucket, count(*) AS n
        FROM new_points GROUP BY ALL)
    WHERE gkey NOT IN (SELECT gkey FROM g)
) p ON v.gkey = p.gkey AND v.bucket = p.bucket
WHEN MATCHED THEN UPDATE SET count = v.count + p.n
WHEN NOT MATCHED THEN INSERT VALUES (p.gkey, p.bucket, p.n)""",
)

CREATE = """
CREATE TABLE IF NOT EXISTS metric_stats (
    component VARCHAR NOT NULL, model VARCHAR, hardware VARCHAR, metric VARCHAR NOT NULL,
    count BIGINT NOT NULL, mean DOUBLE, min DOUBLE, max DOUBLE,
    p50 DOUBLE, p95 DOUBLE, p99 DOUBLE)"""

# {scope} picks the touched groups' histograms by gkey, {narrow} their daily rows.
SELECT = f"""
WITH q AS ({percentiles("gkey", "SELECT gkey, bucket, count AS n FROM metric_hist_all r {scope}")}
), d AS (
    SELECT *, {GKEY} AS gkey FROM (
        SELECT component, model, hardware, metric, sum(count) AS count,
               sum(sum) / sum(count) AS mean, min(min) AS min, max(max) AS max
        FROM metric_daily r {{narrow}} GROUP BY ALL)
)
SELECT d.component, d.model, d.hardware, d.metric, d.count, d.mean, d.min, d.max,
       {", ".join(f"greatest(d.min, least(d.max, q.p{p})) AS p{p}" for p in (50, 95, 99))}
FROM d JOIN q USING (gkey)"""

VIEW = View(
    name="metric_stats",
    create=CREATE,
    select=SELECT,
    scope="SEMI JOIN g USING (gkey)",
    narrow=f"SEMI JOIN g ON {same('r', 'g', *KEY)}",
    groups=_GROUPS.format(source="touched_metrics"),
    match=same("v", "g", *KEY),
)
