"""Base tables (DESIGN §3) and the SQL that applies one batch of events to them.

Every statement reads the temp table `batch`: the batch's events, duplicates
already dropped, `ts` as naive UTC TIMESTAMP. Order-independent merges keep the
fold deterministic: "latest" rows are chosen by (ts, seq), spans by min/max,
and appends carry their seq. Deletes act by seq: the fold splits a batch at
each delete (see ingest/fold.py), so a delete sees exactly the events before it.
"""

from __future__ import annotations

import duckdb

# run_events/status_events keep every `run`/`status` event (about 1 in 8 events)
# so a run's attributes can be recomputed exactly whatever order events arrive in.
CREATE = """
CREATE TABLE IF NOT EXISTS fold_state (folded_seq BIGINT NOT NULL, schema_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_ids (id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS component_events (component VARCHAR NOT NULL, events BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS run_span (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, events BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS run_events (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL,
    model VARCHAR, hardware VARCHAR, batch_id VARCHAR, name VARCHAR, params VARCHAR);
CREATE TABLE IF NOT EXISTS status_events (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL,
    status VARCHAR NOT NULL, error VARCHAR);
CREATE TABLE IF NOT EXISTS steps (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, step VARCHAR NOT NULL,
    status VARCHAR NOT NULL, progress DOUBLE, message VARCHAR,
    ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE NOT NULL,
    unit VARCHAR, step BIGINT, ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, level VARCHAR NOT NULL, message VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, uri VARCHAR,
    size_bytes BIGINT, media_type VARCHAR, ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL, test VARCHAR NOT NULL, outcome VARCHAR NOT NULL,
    duration_s DOUBLE, message VARCHAR, ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_events (
    component VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, description VARCHAR, expected_count BIGINT,
    ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
"""

# Tables holding rows of one run: a delete removes the run from all of them.
RUN_TABLES = (
    "run_span", "run_events", "status_events", "steps", "tags",
    "metrics", "logs", "artifacts", "results",
)


def _latest(table: str, key: str, cols: str, src_cols: str, where: str) -> str:
    """Upsert keeping, per (component, run_id, key), the row of the latest (ts, seq)."""
    set_cols = ", ".join(f"{c} = s.{c}" for c in cols.split(", "))
    return f"""
MERGE INTO {table} t USING (
    -- Partition over the renamed columns: in `batch`, `step` is a metric's integer step.
    SELECT * FROM (SELECT component, run_id, {src_cols}, ts, seq FROM batch WHERE {where})
    QUALIFY row_number() OVER (PARTITION BY component, run_id, {key} ORDER BY ts DESC, seq DESC) = 1
) s ON t.component = s.component AND t.run_id = s.run_id AND t.{key} = s.{key}
WHEN MATCHED AND (s.ts > t.ts OR (s.ts = t.ts AND s.seq > t.seq))
    THEN UPDATE SET {set_cols}, ts = s.ts, seq = s.seq
WHEN NOT MATCHED THEN INSERT BY NAME"""


# (event type the statement reads, or None for every batch, SQL): statements for
# types absent from a batch are skipped, since each costs a few ms even when empty.
APPLY: tuple[tuple[str | None, str], ...] = (
    (None, """
MERGE INTO run_span t USING (
    SELECT component, run_id, min(ts) AS lo, max(ts) AS hi, count(*) AS n FROM batch
    WHERE run_id IS NOT NULL AND type NOT IN ('delete', 'batch') GROUP BY 1, 2
) s ON t.component = s.component AND t.run_id = s.run_id
WHEN MATCHED THEN UPDATE SET created_at = least(t.created_at, s.lo),
    updated_at = greatest(t.updated_at, s.hi), events = t.events + s.n
WHEN NOT MATCHED THEN INSERT VALUES (s.component, s.run_id, s.lo, s.hi, s.n)"""),
    ("run", """
INSERT INTO run_events SELECT component, run_id, ts, seq, model, hardware, batch_id, name, params
FROM batch WHERE type = 'run'"""),
    ("status", """
INSERT INTO status_events SELECT component, run_id, ts, seq, status, error
FROM batch WHERE type = 'status'"""),
    ("step", _latest("steps", "step", "status, progress, message",
            "step_name AS step, status, progress, message", "type = 'step'")),
    ("tag", _latest("tags", "key", "value", "key, tag_value AS value", "type = 'tag'")),
    ("result", _latest("results", "test", "outcome, duration_s, message",
                       "test, outcome, duration_s, message", "type = 'result'")),
    ("metric", """
INSERT INTO metrics SELECT component, run_id, name, value, unit, step, ts, seq
FROM batch WHERE type = 'metric'"""),
    ("log", """
INSERT INTO logs SELECT component, run_id, level, message, ts, seq
FROM batch WHERE type = 'log'"""),
    ("artifact", """
INSERT INTO artifacts SELECT component, run_id, name, uri, size_bytes, media_type, ts, seq
FROM batch WHERE type = 'artifact'"""),
    ("batch", """
INSERT INTO batch_events SELECT component, batch_id, description, expected_count, ts, seq
FROM batch WHERE type = 'batch'"""),
)

# The runs a delete removes: the named run, or every run whose batch_id (latest
# by (ts, seq) among the events folded so far) is the named batch.
DOOMED_RUN = "CREATE OR REPLACE TEMP TABLE doomed AS SELECT ?::VARCHAR AS component, ?::VARCHAR AS run_id"
DOOMED_BATCH = """
CREATE OR REPLACE TEMP TABLE doomed AS
SELECT component, run_id FROM (
    SELECT component, run_id, arg_max(batch_id, (ts, seq)) FILTER (WHERE batch_id IS NOT NULL) AS b
    FROM run_events WHERE component = $1 GROUP BY ALL
) WHERE b = $2"""
# Once per batch, over every event kept (deletes included): ids seen, events counted.
RECORD = (
    "INSERT INTO event_ids SELECT id FROM batch_all WHERE id IS NOT NULL",
    """
MERGE INTO component_events t USING (SELECT component, count(*) AS n FROM batch_all GROUP BY 1) s
    ON t.component = s.component
WHEN MATCHED THEN UPDATE SET events = t.events + s.n
WHEN NOT MATCHED THEN INSERT VALUES (s.component, s.n)""",
)
DELETE_BATCH_EVENTS = "DELETE FROM batch_events WHERE component = ? AND batch_id = ?"


def create(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(CREATE)


def apply(con: duckdb.DuckDBPyConnection, types: set[str] | frozenset[str]) -> None:
    """Apply the events in temp table `batch` (no deletes among them) whose
    event types are among `types`."""
    for needs, sql in APPLY:
        if needs is None or needs in types:
            con.execute(sql)


def delete_doomed(con: duckdb.DuckDBPyConnection) -> None:
    """Remove every row of the runs in temp table `doomed` from every run table."""
    for table in RUN_TABLES:
        con.execute(
            f"DELETE FROM {table} USING doomed d "
            f"WHERE {table}.component = d.component AND {table}.run_id = d.run_id"
        )
