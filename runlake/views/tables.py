"""Base tables (DESIGN §3) and the SQL that applies one batch of events to them.

Every statement reads the temp table `batch`: the batch's events, duplicates
already dropped, `ts` as naive UTC TIMESTAMP. Order-independent merges keep the
fold deterministic: "latest" rows are chosen by (ts, seq), spans by min/max,
and appends carry their seq. Deletes act by seq: the fold splits a batch at
each delete (see ingest/fold.py), so a delete sees exactly the events before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

# run_events/status_events keep every `run`/`status` event (about 1 in 8 events)
# so a run's attributes can be recomputed exactly whatever order events arrive in.
CREATE = """
CREATE TABLE IF NOT EXISTS fold_state (folded_seq BIGINT NOT NULL, schema_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_ids (id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS component_events (component VARCHAR NOT NULL, events BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS run_span (
    component VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, events BIGINT NOT NULL,
    first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL);
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
    duration_s DOUBLE, message VARCHAR, ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL, file VARCHAR, classname VARCHAR, worker VARCHAR);
CREATE TABLE IF NOT EXISTS batch_events (
    component VARCHAR NOT NULL, batch_id VARCHAR NOT NULL, description VARCHAR, expected_count BIGINT,
    ts TIMESTAMP NOT NULL, seq BIGINT NOT NULL);
"""

# Tables holding rows of one run: a delete removes the run from all of them.
RUN_TABLES = (
    "run_span", "run_events", "status_events", "steps", "tags",
    "metrics", "logs", "artifacts", "results",
)


@dataclass(frozen=True)
class Apply:
    """How one base table takes a batch: `source` is a query over `batch` giving
    the table's rows (by name); `merge`, for tables whose rows are upserted, is
    the MERGE's ON and WHEN clauses (target `t`, source `s`). `needs` is the event
    type the source reads (None: every batch); a table whose type is absent from a
    batch is skipped, since each statement costs a few ms even when empty."""

    needs: str | None
    table: str
    source: str
    merge: str | None = None

    def sql(self, *, empty: bool = False) -> str:
        """The statement; into an `empty` table (bulk replay) a MERGE is an INSERT."""
        if self.merge is None or empty:
            return f"INSERT INTO {self.table} BY NAME {self.source}"
        return f"MERGE INTO {self.table} t USING ({self.source}) s {self.merge}"


def _latest(needs: str, table: str, key: str, cols: str, src_cols: str) -> Apply:
    """Upsert keeping, per (component, run_id, key), the row of the latest (ts, seq);
    `key` may name several columns ("test, attempt")."""
    names = [*cols.split(", "), "ts", "seq"]
    on = " AND ".join(f"t.{k} = s.{k}" for k in key.split(", "))
    set_cols = ", ".join(f"{c} = s.{c}" for c in names)
    return Apply(
        needs=needs,
        table=table,
        # Partitioned by the renamed columns: in `batch`, `step` is a metric's integer
        # step. In seq order, so that every writer (bulk replay's INSERT, the MERGE of
        # a batched replay or of the fold) adds new rows in seq order and a run's rows
        # lie in the few row groups its seq span covers (`queries.get_run` relies on
        # it); the sort is a small part of a bulk statement, nothing to speak of on a
        # live batch. (arg_max over a struct, or each key's latest seq joined back to
        # the batch, was faster for steps and slower for tags and results.)
        source=f"""
SELECT * FROM (SELECT component, run_id, {src_cols}, ts, seq FROM batch WHERE type = '{needs}')
QUALIFY row_number() OVER (PARTITION BY component, run_id, {key} ORDER BY ts DESC, seq DESC) = 1
ORDER BY seq""",
        merge=f"""
ON t.component = s.component AND t.run_id = s.run_id AND {on}
WHEN MATCHED AND (s.ts > t.ts OR (s.ts = t.ts AND s.seq > t.seq)) THEN UPDATE SET {set_cols}
WHEN NOT MATCHED THEN INSERT BY NAME""",
    )


def _append(needs: str, table: str, cols: str) -> Apply:
    # In seq order, as `_latest`: a bulk replay's parallel scan of many segments through
    # its anti-joins (deletes, duplicates) keeps no insertion order of its own.
    return Apply(needs, table, f"SELECT {cols} FROM batch WHERE type = '{needs}' ORDER BY seq")


APPLY: tuple[Apply, ...] = (
    # New runs in first_seq order: the order the fold adds them in, batch by batch,
    # which a bulk replay's one GROUP BY over the whole log would otherwise scramble.
    Apply(None, "run_span", """
SELECT component, run_id, min(ts) AS created_at, max(ts) AS updated_at, count(*) AS events,
       min(seq) AS first_seq, max(seq) AS last_seq
FROM batch WHERE run_id IS NOT NULL AND type NOT IN ('delete', 'batch') GROUP BY 1, 2
ORDER BY first_seq""", """
ON t.component = s.component AND t.run_id = s.run_id
WHEN MATCHED THEN UPDATE SET created_at = least(t.created_at, s.created_at),
    updated_at = greatest(t.updated_at, s.updated_at), events = t.events + s.events,
    first_seq = least(t.first_seq, s.first_seq), last_seq = greatest(t.last_seq, s.last_seq)
WHEN NOT MATCHED THEN INSERT BY NAME"""),
    _append("run", "run_events", "component, run_id, ts, seq, model, hardware, batch_id, name, params"),
    _append("status", "status_events", "component, run_id, ts, seq, status, error"),
    _latest("step", "steps", "step", "status, progress, message",
            "step_name AS step, status, progress, message"),
    _latest("tag", "tags", "key", "value", "key, tag_value AS value"),
    # Every attempt of a test is its own row (issue 20); no attempt means the first.
    _latest("result", "results", "test, attempt", "outcome, duration_s, message, file, classname, worker",
            "test, coalesce(attempt, 1) AS attempt, outcome, duration_s, message, file, classname, worker"),
    _append("metric", "metrics", "component, run_id, name, value, unit, step, ts, seq"),
    _append("log", "logs", "component, run_id, level, message, ts, seq"),
    _append("artifact", "artifacts", "component, run_id, name, uri, size_bytes, media_type, ts, seq"),
    _append("batch", "batch_events", "component, batch_id, description, expected_count, ts, seq"),
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
    Apply(None, "event_ids", "SELECT id FROM batch_all WHERE id IS NOT NULL"),
    Apply(None, "component_events",
          "SELECT component, count(*) AS events FROM batch_all GROUP BY 1", """
ON t.component = s.component
WHEN MATCHED THEN UPDATE SET events = t.events + s.events
WHEN NOT MATCHED THEN INSERT BY NAME"""),
)
# The seqs of events in {source} (seq, id) to drop: an id counts once, for its first
# (lowest) seq, across the whole history (`event_ids`). Usually none.
DUPLICATES = """
SELECT seq FROM {source} i WHERE id IS NOT NULL
QUALIFY EXISTS (SELECT 1 FROM event_ids e WHERE e.id = i.id)
    OR seq <> min(seq) OVER (PARTITION BY id)"""
DELETE_BATCH_EVENTS = "DELETE FROM batch_events WHERE component = ? AND batch_id = ?"


def create(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(CREATE)


def record(con: duckdb.DuckDBPyConnection, *, empty: bool = False) -> None:
    """Count the events of `batch_all` and remember their ids (RECORD), once per batch."""
    for step in RECORD:
        con.execute(step.sql(empty=empty))


def apply(con: duckdb.DuckDBPyConnection, types: set[str] | frozenset[str] | None, *,
          empty: bool = False) -> None:
    """Apply the events in `batch` (no deletes among them) whose types are among
    `types` (None: every type); `empty`: every base table is empty, so upserts
    are plain inserts."""
    for step in APPLY:
        if step.needs is None or types is None or step.needs in types:
            con.execute(step.sql(empty=empty))


def delete_doomed(con: duckdb.DuckDBPyConnection) -> None:
    """Remove every row of the runs in temp table `doomed` from every run table."""
    for table in RUN_TABLES:
        con.execute(
            f"DELETE FROM {table} USING doomed d "
            f"WHERE {table}.component = d.component AND {table}.run_id = d.run_id"
        )
