"""Per (component, model, hardware, metric) over every point: count, mean, min,
max and exact p50/p95/p99 (`quantile_cont`). A point belongs to the model and
hardware its run has now, so a run's attribute change moves its points."""

from runlake.views.view import View, same

KEY = ("component", "model", "hardware", "metric")

CREATE = """
CREATE TABLE IF NOT EXISTS metric_stats (
    component VARCHAR NOT NULL, model VARCHAR, hardware VARCHAR, metric VARCHAR NOT NULL,
    unit VARCHAR, count BIGINT NOT NULL, mean DOUBLE, min DOUBLE, max DOUBLE,
    p50 DOUBLE, p95 DOUBLE, p99 DOUBLE)"""

SELECT = """
SELECT component, model, hardware, metric, min(unit), count(*), avg(value), min(value), max(value),
       quantile_cont(value, 0.5), quantile_cont(value, 0.95), quantile_cont(value, 0.99)
FROM (
    SELECT m.component, r.model, r.hardware, m.name AS metric, m.unit, m.value
    FROM metrics m JOIN runs r ON m.component = r.component AND m.run_id = r.run_id
) r {scope}
GROUP BY ALL"""

VIEW = View(
    name="metric_stats",
    create=CREATE,
    select=SELECT,
    scope=f"SEMI JOIN g ON {same('r', 'g', *KEY)}",
    groups="SELECT DISTINCT component, model, hardware, metric FROM touched_metrics",
    match=same("v", "g", *KEY),
)
