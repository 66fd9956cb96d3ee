"""Per (component, model) and per (component, hardware) run statistics (DESIGN §3).

runs by status, success_rate = completed / (completed + failed) (null when both
are 0), duration avg/p50/p95 over runs that have a duration (exact,
`quantile_cont`), first_seen = earliest created_at, last_seen = latest updated_at.
"""

from runlake.views.view import View, same


def _view(name: str, col: str) -> View:
    return View(
        name=name,
        create=f"""
CREATE TABLE IF NOT EXISTS {name} (
    component VARCHAR NOT NULL, {col} VARCHAR, runs BIGINT NOT NULL,
    pending BIGINT NOT NULL, running BIGINT NOT NULL, completed BIGINT NOT NULL,
    failed BIGINT NOT NULL, cancelled BIGINT NOT NULL, success_rate DOUBLE,
    duration_avg_s DOUBLE, duration_p50_s DOUBLE, duration_p95_s DOUBLE,
    first_seen TIMESTAMP, last_seen TIMESTAMP)""",
        select=f"""
SELECT component, {col}, runs, pending, running, completed, failed, cancelled,
       CASE WHEN completed + failed > 0 THEN completed / (completed + failed) END,
       duration_avg_s, duration_p50_s, duration_p95_s, first_seen, last_seen
FROM (
    SELECT component, {col}, count(*) AS runs,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           avg(duration_s) AS duration_avg_s,
           quantile_cont(duration_s, 0.5) AS duration_p50_s,
           quantile_cont(duration_s, 0.95) AS duration_p95_s,
           min(created_at) AS first_seen, max(updated_at) AS last_seen
    FROM runs r {{scope}} GROUP BY component, {col}
)""",
        scope=f"SEMI JOIN g ON {same('r', 'g', 'component', col)}",
        groups=f"SELECT component, {col} FROM old_keys UNION SELECT component, {col} FROM new_keys",
        match=same("v", "g", "component", col),
    )


MODEL_VIEW = _view("model_stats", "model")
HARDWARE_VIEW = _view("hardware_stats", "hardware")
