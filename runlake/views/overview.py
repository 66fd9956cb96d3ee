"""Per-component totals: runs by status and success rate (summed from
model_stats, which partitions every run by model), and events folded."""

from runlake.views.view import View

CREATE = """
CREATE TABLE IF NOT EXISTS overview (
    component VARCHAR NOT NULL, runs BIGINT NOT NULL,
    pending BIGINT NOT NULL, running BIGINT NOT NULL, completed BIGINT NOT NULL,
    failed BIGINT NOT NULL, cancelled BIGINT NOT NULL, success_rate DOUBLE,
    events BIGINT NOT NULL, first_seen TIMESTAMP, last_seen TIMESTAMP)"""

SELECT = """
SELECT e.component, coalesce(s.runs, 0), coalesce(s.pending, 0), coalesce(s.running, 0),
       coalesce(s.completed, 0), coalesce(s.failed, 0), coalesce(s.cancelled, 0),
       CASE WHEN s.completed + s.failed > 0 THEN s.completed / (s.completed + s.failed) END,
       e.events, s.first_seen, s.last_seen
FROM component_events e {scope}
LEFT JOIN (
    SELECT component, sum(runs) AS runs, sum(pending) AS pending, sum(running) AS running,
           sum(completed) AS completed, sum(failed) AS failed, sum(cancelled) AS cancelled,
           min(first_seen) AS first_seen, max(last_seen) AS last_seen
    FROM model_stats GROUP BY component
) s USING (component)"""

VIEW = View(
    name="overview",
    create=CREATE,
    select=SELECT,
    scope="SEMI JOIN g ON e.component = g.component",
    groups="SELECT DISTINCT component FROM touched_components",
    match="v.component = g.component",
)
