"""Per (component, batch_id): the batch's attributes, its runs by status and its
progress = finished runs (completed, failed or cancelled) / expected_count.

A batch exists once a `batch` event declares it or a run names it."""

from runlake.views.view import View, same

CREATE = """
CREATE TABLE IF NOT EXISTS batch_stats (
    component VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, description VARCHAR,
    expected_count BIGINT, runs BIGINT NOT NULL,
    pending BIGINT NOT NULL, running BIGINT NOT NULL, completed BIGINT NOT NULL,
    failed BIGINT NOT NULL, cancelled BIGINT NOT NULL, finished BIGINT NOT NULL,
    progress DOUBLE, declared_at TIMESTAMP, first_seen TIMESTAMP, last_seen TIMESTAMP)"""

SELECT = """
WITH keys AS (
    SELECT DISTINCT component, batch_id FROM runs r {scope}
    UNION SELECT DISTINCT component, batch_id FROM batch_events r {scope}
), attrs AS (
    SELECT component, batch_id,
           arg_max(description, (ts, seq)) FILTER (WHERE description IS NOT NULL) AS description,
           arg_max(expected_count, (ts, seq)) FILTER (WHERE expected_count IS NOT NULL)
               AS expected_count,
           min(ts) AS declared_at
    FROM batch_events r {scope} GROUP BY ALL
), counts AS (
    SELECT component, batch_id, count(*) AS runs,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           min(created_at) AS first_seen, max(updated_at) AS last_seen
    FROM runs r {scope} GROUP BY ALL
)
SELECT k.component, k.batch_id, a.description, a.expected_count,
       coalesce(c.runs, 0), coalesce(c.pending, 0), coalesce(c.running, 0),
       coalesce(c.completed, 0), coalesce(c.failed, 0), coalesce(c.cancelled, 0),
       coalesce(c.completed + c.failed + c.cancelled, 0) AS finished,
       CASE WHEN a.expected_count > 0
            THEN coalesce(c.completed + c.failed + c.cancelled, 0) / a.expected_count END,
       a.declared_at, c.first_seen, c.last_seen
FROM keys k LEFT JOIN attrs a USING (component, batch_id)
LEFT JOIN counts c USING (component, batch_id)
WHERE k.batch_id IS NOT NULL"""

VIEW = View(
    name="batch_stats",
    create=CREATE,
    select=SELECT,
    scope="SEMI JOIN g ON r.component = g.component AND r.batch_id = g.batch_id",
    groups="""
SELECT component, batch_id FROM old_keys WHERE batch_id IS NOT NULL
UNION SELECT component, batch_id FROM new_keys WHERE batch_id IS NOT NULL
UNION SELECT component, batch_id FROM touched_batches""",
    match=same("v", "g", "component", "batch_id"),
)
