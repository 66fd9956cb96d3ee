"""The `runs` view: one row per run, derived from its events (DESIGN §3 definitions).

Attributes are the latest non-null value by (ts, seq); status and error come from
the latest status event (no status event: `pending`); started_at is the earliest
`running`; finished_at is the latest status's ts while that status is terminal.
first_seq/last_seq bound the seqs of the run's events (since its last delete): every
row of the run in any table carries a seq between them, which lets a run's reads
skip the row groups outside that span.
"""

from runlake.views.view import View, same

CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    model VARCHAR, hardware VARCHAR, batch_id VARCHAR, name VARCHAR, params VARCHAR,
    status VARCHAR NOT NULL, error VARCHAR,
    created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, finished_at TIMESTAMP,
    duration_s DOUBLE, updated_at TIMESTAMP NOT NULL, events BIGINT NOT NULL,
    first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL)"""

SELECT = """
SELECT component, run_id, model, hardware, batch_id, name, params, status, error,
       created_at, started_at, finished_at,
       (epoch_us(finished_at) - epoch_us(coalesce(started_at, created_at))) / 1e6 AS duration_s,
       updated_at, events, first_seq, last_seq
FROM (
    SELECT r.component, r.run_id, a.model, a.hardware, a.batch_id, a.name, a.params,
           coalesce(st.last.status, 'pending') AS status, st.last.error AS error,
           r.created_at, st.started_at,
           CASE WHEN st.last.status IN ('completed', 'failed', 'cancelled')
                THEN st.last.ts END AS finished_at,
           r.updated_at, r.events, r.first_seq, r.last_seq
    FROM run_span r {scope}
    LEFT JOIN (
        SELECT component, run_id,
               arg_max(model, (ts, seq)) FILTER (WHERE model IS NOT NULL) AS model,
               arg_max(hardware, (ts, seq)) FILTER (WHERE hardware IS NOT NULL) AS hardware,
               arg_max(batch_id, (ts, seq)) FILTER (WHERE batch_id IS NOT NULL) AS batch_id,
               arg_max(name, (ts, seq)) FILTER (WHERE name IS NOT NULL) AS name,
               arg_max(params, (ts, seq)) FILTER (WHERE params IS NOT NULL) AS params
        FROM run_events r {scope} GROUP BY ALL
    ) a USING (component, run_id)
    LEFT JOIN (
        SELECT component, run_id,
               arg_max({{'status': status, 'error': error, 'ts': ts}}, (ts, seq)) AS last,
               min(ts) FILTER (WHERE status = 'running') AS started_at
        FROM status_events r {scope} GROUP BY ALL
    ) st USING (component, run_id)
)"""

VIEW = View(
    name="runs",
    create=CREATE,
    select=SELECT,
    scope="SEMI JOIN touched_runs t ON r.component = t.component AND r.run_id = t.run_id",
    groups="SELECT component, run_id FROM touched_runs",
    match=same("v", "g", "component", "run_id"),
    # The order the fold leaves rows in (a touched run's row is rewritten at the end),
    # so zone maps serve the same reads after a replay: the newest-first list's top-N
    # filter on created_at skips all but the last row groups.
    order="last_seq",
)
