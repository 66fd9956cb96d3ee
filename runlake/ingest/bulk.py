"""Bulk replay: the base tables from whole Parquet segments, in one pass per table.

Replay used to fold the log in 1 M-event batches, each a transaction whose
MERGEs joined the batch against tables that kept growing: 370–470 k events/s.
Here DuckDB reads the segments itself (its Parquet reader is parallel and never
builds Python objects) and each base table is filled by one statement over the
whole log, with the very SQL the batched fold runs (`tables.APPLY`, `RECORD`,
`DUPLICATES`):
`batch` and `batch_all` become views over the segments.

What the batched fold decides event by event is decided here as sets first:
- duplicate ids: every event whose id an earlier seq already has is dropped;
- deletes act by seq: a run keeps only events after its last delete (its "cut").
  A batch delete cuts the runs whose batch_id, as of that delete, was the batch;
  that depends on the cuts before it, so batch deletes are taken in seq order,
  one statement each (a log holds few of them).
A log of many batch deletes is folded by the batched path instead (`fits`).
The segments are scanned twice to find duplicates, then deletes, then once per table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from runlake.events.columns import COLUMNS, LOG_SCHEMA, TS_MAX_US, TS_MIN_US
from runlake.views import tables

# Above this many batch deletes, one statement each costs more than batching.
MAX_BATCH_DELETES = 1000
# Below this many events the batches win: each statement here decodes the
# segments again, while a batch is scanned in memory; above it the batches'
# MERGEs into ever larger tables cost more (measured: 1 M events 10 % slower
# in bulk, 3 M about even, 10 M 52 % faster; see BENCHMARKS.md).
MIN_ROWS = 2_000_000

# Rows whose ts no reader can hold are bad data, left out as EventLog.read leaves them.
_EVENTS = f"""
SELECT * EXCLUDE (received_at) REPLACE (CAST(ts AS TIMESTAMP) AS ts){{missing}}
FROM read_parquet({{files}}, union_by_name = true)
WHERE epoch_us(ts) BETWEEN {TS_MIN_US} AND {TS_MAX_US}"""
_KEPT = """
SELECT * FROM bulk_log l WHERE NOT EXISTS (SELECT 1 FROM bulk_dropped d WHERE d.seq = l.seq)"""
_DELETES = """
CREATE OR REPLACE TEMP TABLE bulk_deletes AS
SELECT seq, component, run_id, batch_id FROM batch_all WHERE type = 'delete'"""
# Run deletes cut their run; batch deletes are added to `bulk_cuts` one by one.
_RUN_CUTS = """
CREATE OR REPLACE TEMP TABLE bulk_cuts AS
SELECT component, run_id, seq FROM bulk_deletes WHERE run_id IS NOT NULL"""
_RUN_EVENTS = """
CREATE OR REPLACE TEMP TABLE bulk_run_events AS
SELECT component, run_id, batch_id, ts, seq FROM batch_all WHERE type = 'run'"""
# The runs of component $2 whose latest batch_id (by (ts, seq)) among the events
# before delete $1 and after their last cut before it is batch $3 (tables.DOOMED_BATCH).
_BATCH_CUT = """
INSERT INTO bulk_cuts
SELECT component, run_id, $1 FROM (
    SELECT e.component, e.run_id,
           arg_max(e.batch_id, (e.ts, e.seq)) FILTER (WHERE e.batch_id IS NOT NULL) AS b
    FROM bulk_run_events e
    LEFT JOIN (SELECT component, run_id, max(seq) AS cut FROM bulk_cuts
               WHERE seq < $1 AND component = $2 GROUP BY ALL) c USING (component, run_id)
    WHERE e.component = $2 AND e.seq < $1 AND e.seq > coalesce(c.cut, 0)
    GROUP BY ALL
) WHERE b = $3"""
_FINAL_CUTS = """
CREATE OR REPLACE TEMP TABLE bulk_run_cut AS
SELECT component, run_id, max(seq) AS cut FROM bulk_cuts GROUP BY ALL;
CREATE OR REPLACE TEMP TABLE bulk_batch_cut AS
SELECT component, batch_id, max(seq) AS cut FROM bulk_deletes
WHERE run_id IS NULL GROUP BY ALL"""
# What survives the deletes: a run's events after its cut, a batch's after its.
_SURVIVING = """
SELECT * FROM batch_all a WHERE type <> 'delete'
AND NOT EXISTS (SELECT 1 FROM bulk_run_cut c
                WHERE c.component = a.component AND c.run_id = a.run_id AND a.seq < c.cut)
AND NOT EXISTS (SELECT 1 FROM bulk_batch_cut c WHERE a.type = 'batch'
                AND c.component = a.component AND c.batch_id = a.batch_id AND a.seq < c.cut)"""
_VIEWS = ("batch", "batch_all", "bulk_log")
_TABLES = ("bulk_dropped", "bulk_deletes", "bulk_cuts", "bulk_run_events",
           "bulk_run_cut", "bulk_batch_cut")


class SegmentFold:
    """The events of Parquet `files` as `batch_all` (duplicates dropped) on `con`,
    with their deletes found; `apply` then fills the (empty) base tables from
    them, in seq order, inside the caller's transaction. The views are left to
    `rebuild_views`. Use it as a context manager: it drops its temp objects."""

    def __init__(self, con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
        self.con = con
        try:
            self._find(files)
        except BaseException:
            self.__exit__()  # `with` never started: drop what was made
            raise

    def _find(self, files: Sequence[Path]) -> None:
        con = self.con
        names = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
        con.execute("CREATE OR REPLACE TEMP VIEW bulk_log AS "
                    + _EVENTS.format(files=names, missing=_missing_columns(files)))
        con.execute("CREATE OR REPLACE TEMP TABLE bulk_dropped AS "
                    + tables.DUPLICATES.format(source="bulk_log"))
        dropped = con.execute("SELECT count(*) FROM bulk_dropped").fetchone() != (0,)
        con.execute("CREATE OR REPLACE TEMP VIEW batch_all AS "
                    + (_KEPT if dropped else "SELECT * FROM bulk_log"))
        con.execute(_DELETES)
        # Run deletes are taken as a set; only batch deletes come to Python, in order.
        self.deletes = con.execute("SELECT count(*) FROM bulk_deletes").fetchone() != (0,)
        self.batch_deletes = con.execute(
            "SELECT seq, component, batch_id FROM bulk_deletes WHERE run_id IS NULL "
            "ORDER BY seq").fetchall()

    @property
    def fits(self) -> bool:
        """Whether bulk suits these events: few enough batch deletes to take one by one."""
        return len(self.batch_deletes) <= MAX_BATCH_DELETES

    def apply(self) -> None:
        con = self.con
        tables.record(con, empty=True)
        if self.deletes:
            con.execute(_RUN_CUTS)
            if self.batch_deletes:
                con.execute(_RUN_EVENTS)
                for seq, component, batch_id in self.batch_deletes:
                    con.execute(_BATCH_CUT, [seq, component, batch_id])
            con.execute(_FINAL_CUTS)
        con.execute("CREATE OR REPLACE TEMP VIEW batch AS " + (
            _SURVIVING if self.deletes else "SELECT * FROM batch_all WHERE type <> 'delete'"))
        # Every type: a step for a type absent from the log inserts nothing, and
        # finding out which are present would scan the segments once more.
        tables.apply(con, None, empty=True)

    def __enter__(self) -> SegmentFold:
        return self

    def __exit__(self, *exc: object) -> None:
        for view in _VIEWS:
            self.con.execute(f"DROP VIEW IF EXISTS {view}")
        for table in _TABLES:
            self.con.execute(f"DROP TABLE IF EXISTS {table}")


_DUCK_TYPES = {pa.int64(): "BIGINT", pa.string(): "VARCHAR", pa.float64(): "DOUBLE"}


def _missing_columns(files: Sequence[Path]) -> str:
    """Null columns for those of LOG_SCHEMA that no segment holds (every segment is
    of an older schema version), so the fold's SQL finds every column it names."""
    have: set[str] = set()
    for f in files:
        have.update(pq.read_schema(f).names)
    return "".join(f", NULL::{_DUCK_TYPES[LOG_SCHEMA.field(c).type]} AS {c}"
                   for c in COLUMNS if c not in have)
