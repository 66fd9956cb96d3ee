"""The fold (DESIGN §3): apply the log past the high-water mark to DuckDB.

Each batch is one transaction that also stores the new high-water mark, so a
crash at any point leaves the database at a batch boundary and the next fold
resumes from there: exactly once. Work is set-based SQL over the Arrow batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import partial
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from runlake.events.columns import LOG_SCHEMA
from runlake.events.log import EventLog
from runlake.views import VIEWS, tables
from runlake.views import tests as test_stats
from runlake.views.db import Database, folded_seq
from runlake.views.metric_daily import BUCKET
from runlake.views.metric_series import MetricSeries

log = logging.getLogger("runlake.fold")
T = TypeVar("T")

NAIVE_TS = pa.timestamp("us")  # the tables hold naive UTC; the cast keeps the values
SMALL_CHUNK_ROWS = 2048  # DuckDB's vector size

# The scope of an incremental refresh: which runs, batches, components and metric
# groups this batch touched, and the runs' keys before (old_keys) and after.
_SCOPE_BEFORE = (
    """CREATE OR REPLACE TEMP TABLE touched_runs AS
    SELECT DISTINCT component, run_id FROM batch_all WHERE run_id IS NOT NULL
    UNION SELECT r.component, r.run_id FROM runs r JOIN batch_all d
        ON d.type = 'delete' AND r.component = d.component AND r.batch_id = d.batch_id""",
    """CREATE OR REPLACE TEMP TABLE old_keys AS
    SELECT component, run_id, model, hardware, batch_id FROM runs r
    SEMI JOIN touched_runs t ON r.component = t.component AND r.run_id = t.run_id""",
    """CREATE OR REPLACE TEMP TABLE touched_batches AS
    SELECT DISTINCT component, batch_id FROM batch_all
    WHERE type IN ('batch', 'delete') AND batch_id IS NOT NULL""",
    """CREATE OR REPLACE TEMP TABLE touched_components AS
    SELECT DISTINCT component FROM batch_all""",
    """CREATE OR REPLACE TEMP TABLE dead_metrics (
        component VARCHAR, model VARCHAR, hardware VARCHAR, metric VARCHAR, day DATE)""",
    test_stats.TOUCHED,
)
# Before a delete removes runs, remember which metric groups their points were in.
_DEAD_METRICS = """
INSERT INTO dead_metrics
SELECT DISTINCT m.component, o.model, o.hardware, m.name, CAST(m.ts AS DATE) FROM metrics m
JOIN doomed d ON m.component = d.component AND m.run_id = d.run_id
JOIN old_keys o ON m.component = o.component AND m.run_id = o.run_id"""
_SCOPE_AFTER = (
    """CREATE OR REPLACE TEMP TABLE new_keys AS
    SELECT component, run_id, model, hardware, batch_id FROM runs r
    SEMI JOIN touched_runs t ON r.component = t.component AND r.run_id = t.run_id""",
    """CREATE OR REPLACE TEMP TABLE changed_runs AS
    SELECT o.component, o.run_id FROM old_keys o JOIN new_keys n
        ON o.component = n.component AND o.run_id = n.run_id
    WHERE o.model IS DISTINCT FROM n.model OR o.hardware IS DISTINCT FROM n.hardware""",
    """CREATE OR REPLACE TEMP TABLE recompute_metrics AS SELECT * FROM dead_metrics""",
)
# Only when some run's model or hardware changed (rare): its points move groups.
_MOVED_METRICS = """
INSERT INTO recompute_metrics
SELECT DISTINCT m.component, k.model, k.hardware, m.name, CAST(m.ts AS DATE) FROM metrics m
SEMI JOIN changed_runs c ON m.component = c.component AND m.run_id = c.run_id
JOIN (SELECT * FROM old_keys UNION ALL SELECT * FROM new_keys) k
    ON m.component = k.component AND m.run_id = k.run_id"""
# The batch's surviving points (seq ≥ the batch's first: zone maps skip older rows)
# that mergeable views add in; points in recomputed groups are already counted there.
# Each with its histogram bucket, computed once for the two histograms that take it.
_NEW_POINTS = (
    f"""CREATE OR REPLACE TEMP TABLE new_points AS
    SELECT m.component, n.model, n.hardware, m.name AS metric, CAST(m.ts AS DATE) AS day, m.value,
           m.unit, {BUCKET} AS bucket
    FROM metrics m JOIN new_keys n ON m.component = n.component AND m.run_id = n.run_id
    WHERE m.seq >= $1
    AND NOT EXISTS (SELECT 1 FROM recompute_metrics g WHERE g.component = m.component
        AND g.model IS NOT DISTINCT FROM n.model AND g.hardware IS NOT DISTINCT FROM n.hardware
        AND g.metric = m.name AND g.day = CAST(m.ts AS DATE))""",
    """CREATE OR REPLACE TEMP TABLE touched_metrics AS
    SELECT DISTINCT * FROM recompute_metrics
    UNION SELECT DISTINCT component, model, hardware, metric, day FROM new_points""",
)


def fold_batch(con: duckdb.DuckDBPyConnection, table: pa.Table, *, incremental: bool = True) -> bool:
    """Apply one batch of log rows (seq-ordered) inside the caller's transaction.

    incremental=True refreshes the views for the groups the batch touched;
    False only updates base tables (replay rebuilds every view at the end).
    True if views were refreshed (the fold's scope tables then describe this batch).
    """
    batch_all = _without_duplicates(con, table)
    if batch_all.num_rows == 0:  # every event was a duplicate
        return False
    con.register("batch_all", batch_all)
    try:
        _fold_registered(con, batch_all, incremental)
    except BaseException:
        _forget(con, "batch_all", "batch")
        raise
    con.unregister("batch_all")
    con.unregister("batch")
    return incremental


def _forget(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Unregister `names` after an error. The error may have aborted the transaction,
    in which DuckDB refuses even `unregister` ("Current transaction is aborted"): an
    error that would replace the real one. The caller's ROLLBACK drops what the
    transaction registered anyway."""
    for name in names:
        with suppress(duckdb.Error):
            con.unregister(name)


def _without_duplicates(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Table:
    """The batch as the SQL reads it: no received_at, naive UTC ts, duplicates dropped.

    The batch stays an Arrow table that DuckDB scans in place: copying it into a
    temp table cost more than all the statements that read it.
    """
    table = table.drop_columns(["received_at"])
    at = table.schema.get_field_index("ts")
    table = table.set_column(at, "ts", table.column(at).cast(NAIVE_TS))
    if table.column("id").null_count == table.num_rows:
        return table
    con.register("incoming", table.select(["seq", "id"]))
    try:
        # Only the seqs to drop (usually none): the batch itself is never copied.
        dropped = con.sql(tables.DUPLICATES.format(source="incoming")).to_arrow_table().column("seq")
    except BaseException:
        _forget(con, "incoming")
        raise
    con.unregister("incoming")
    if len(dropped) == 0:
        return table
    return table.filter(pc.invert(pc.is_in(table.column("seq"), value_set=dropped)))


def _fold_registered(con: duckdb.DuckDBPyConnection, table: pa.Table, incremental: bool) -> None:
    tables.record(con)
    types = frozenset(pc.unique(table.column("type")).to_pylist())
    deletes = con.execute(
        "SELECT seq, component, run_id, batch_id FROM batch_all WHERE type = 'delete' ORDER BY seq"
    ).fetchall() if "delete" in types else []
    if incremental:
        for sql in _SCOPE_BEFORE:
            con.execute(sql)
    lo = 0
    seqs = table.column("seq")
    not_delete = pc.not_equal(table.column("type"), "delete") if deletes else None
    for seq, component, run_id, batch_id in [*deletes, (None, None, None, None)]:
        # Events between two deletes form one sub-batch, applied before the next delete.
        if not deletes:
            con.register("batch", table)
        else:
            keep = pc.and_(pc.greater(seqs, lo), not_delete)
            if seq is not None:
                keep = pc.and_(keep, pc.less(seqs, seq))
            con.register("batch", table.filter(keep))
        tables.apply(con, types)
        if seq is None:
            break
        if run_id is not None:
            con.execute(tables.DOOMED_RUN, [component, run_id])
        else:
            con.execute(tables.DOOMED_BATCH, [component, batch_id])
            con.execute(tables.DELETE_BATCH_EVENTS, [component, batch_id])
        if incremental:
            con.execute(_DEAD_METRICS)
        tables.delete_doomed(con)
        lo = int(seq)
    if not incremental:
        return
    runs_view, *others = VIEWS
    runs_view.refresh(con)
    for sql in _SCOPE_AFTER:
        con.execute(sql)
    if con.execute("SELECT count(*) FROM changed_runs").fetchone() != (0,):
        con.execute(_MOVED_METRICS)
    first_seq = seqs[0].as_py()
    for sql in _NEW_POINTS:
        con.execute(sql, [first_seq] if "$1" in sql else [])
    for view in others:
        view.refresh(con)


def rebuild_views(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute every view from the base tables (replay, and the tests' reference)."""
    for view in VIEWS:
        view.rebuild(con)


def fold_table(con: duckdb.DuckDBPyConnection, table: pa.Table, *, incremental: bool = True,
               series: MetricSeries | None = None, last: int | None = None) -> int:
    """One transaction: apply `table` and store its last seq as the high-water mark.
    `series`, if given, is told once the batch has committed which metric rollups
    it touched."""
    last = int(table.column("seq")[-1].as_py()) if last is None else last
    refreshed = fold_in_transaction(con, last, partial(fold_batch, con, table,
                                                       incremental=incremental))
    if refreshed and series is not None:  # the batch's temp scope tables outlive its commit
        series.note(MetricSeries.touched(con))
    return last


def fold_in_transaction(con: duckdb.DuckDBPyConnection, last: int, apply: Callable[[], T]) -> T:
    """Run `apply` and store `last` as the high-water mark, in one transaction;
    returns what `apply` returned, once committed."""
    con.execute("BEGIN")
    try:
        result = apply()
        con.execute("UPDATE fold_state SET folded_seq = ?", [last])
        con.execute("COMMIT")
    except BaseException as e:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error as failed:  # keep the error that got us here in front
            e.add_note(f"and the ROLLBACK failed too: {failed}")
        raise
    return result


# (component, run_id, status, batch_id) of a run a batch changed; status None: deleted.
ChangedRun = tuple[str, str, str | None, str | None]
MAX_CHANGED_RUNS = 1000  # per batch told to listeners; a bigger batch names its first ones
_CHANGED = """SELECT t.component, t.run_id, r.status, r.batch_id FROM changed t
LEFT JOIN runs r ON r.component = t.component AND r.run_id = t.run_id
ORDER BY t.component, t.run_id"""


def changed_runs(con: duckdb.DuckDBPyConnection, table: pa.Table) -> list[ChangedRun]:
    """The runs `table` (a committed batch) named, with their status now: at most
    MAX_CHANGED_RUNS. A batch delete's runs are not named one by one."""
    named = table.select(["component", "run_id"]).filter(pc.is_valid(table.column("run_id")))
    pairs = named.group_by(["component", "run_id"]).aggregate([]).slice(0, MAX_CHANGED_RUNS)
    con.register("changed", pairs)
    try:
        return [tuple(row) for row in con.execute(_CHANGED).fetchall()]  # type: ignore[misc]
    finally:
        con.unregister("changed")


def log_tables(event_log: EventLog, after: int, upto: int | None,
               batch_rows: int) -> Iterator[tuple[pa.Table, int]]:
    """The log's events past seq `after` up to `upto` (None: to its end, as it grows),
    as tables of at most `batch_rows` events: the batches every fold applies. Each
    with the last seq it covers, which rows the log leaves out as bad data may pass."""
    while after < (last := event_log.last_seq if upto is None else upto):
        end = min(last, after + batch_rows)
        batches = list(event_log.read(after + 1, end))
        table = pa.Table.from_batches(batches, schema=LOG_SCHEMA)
        if table.num_rows < SMALL_CHUNK_ROWS * len(batches):
            # Mostly small group commits (one event per request): every statement
            # of the fold scans each chunk as its own tiny vector. One copy is cheaper.
            table = table.combine_chunks()
        yield table, end
        after = end


class Fold:
    """Follows the log in a background thread, folding what arrives into `db`."""

    def __init__(self, db: Database, event_log: EventLog, batch_rows: int = 200_000,
                 min_interval_s: float = 0.25, *, series: MetricSeries | None = None) -> None:
        """`series`: the performance report's (the server's), told what each batch touched."""
        self.db, self.log, self.batch_rows, self.series = db, event_log, batch_rows, series
        self.min_interval_s = min_interval_s
        self.folded_seq = folded_seq(db.connection)
        self.events_folded = 0
        self.batches_folded = 0
        self.last_error: str | None = None  # the last attempt's error; None once one succeeds
        self.errors = 0  # failed attempts since start (the loop retries every second)
        self._logged_error: str | None = None  # logged with its traceback once, not per retry
        self._caught_up_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self._waiters_lock = threading.Lock()
        # Called on the fold thread after each batch commits, with the new high-water
        # mark and the runs the batch changed (live streams, api/broadcast.py); asked
        # for only while someone listens, so no stream costs the fold nothing.
        self.listeners: list[Callable[[int, list[ChangedRun]], None]] = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="runlake-fold", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Fold to the end of the log, then stop. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def resume(self) -> None:
        """Start again from the database's high-water mark (a replay swapped the file).

        The thread starts even if the database cannot be read now: its loop retries
        and reports the error through /readyz."""
        try:
            self.folded_seq = folded_seq(self.db.connection)
            self._wake(self.folded_seq)
        finally:
            self.start()

    def lag(self) -> tuple[int, float]:
        """(events appended but not yet folded, seconds since the fold was caught up)."""
        behind = max(0, self.log.last_seq - self.folded_seq)
        return behind, (time.monotonic() - self._caught_up_at) if behind else 0.0

    def fold_available(self) -> int:
        """Fold everything in the log now; returns how many events were folded."""
        done = 0
        for table, end in log_tables(self.log, self.folded_seq, None, self.batch_rows):
            self.folded_seq = fold_table(self.db.connection, table, last=end, series=self.series)
            self.events_folded += table.num_rows
            self.batches_folded += 1
            done += table.num_rows
            if self.listeners:  # before the wake: waiters then see the state they expect
                self._tell(self.folded_seq, table)
            self._wake(self.folded_seq)
        self._caught_up_at = time.monotonic()
        return done

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            if not self.attempt():
                self._stop.wait(1.0)
            if self._stop.is_set():
                if self.log.last_seq <= self.folded_seq or self.last_error:
                    return
                continue
            # A batch costs a fixed amount of work (and a DuckDB commit that competes
            # with the log's fsync) whatever its size: under a trickle of small
            # appends, wait to fold more at once. Visible stays well under a second.
            if (pause := self.min_interval_s - (time.monotonic() - started)) > 0:
                self._stop.wait(pause)
            self.log.wait(self.folded_seq, timeout=0.2)

    def attempt(self) -> bool:
        """Fold what the log holds now; False if that failed. A failure is kept in
        `last_error` (shown by /readyz and /metrics until an attempt succeeds) and
        logged with its traceback once per distinct error, not at every retry."""
        try:
            self.fold_available()
        except Exception as e:  # keep following the log; report through readyz
            self.errors += 1
            self.last_error = message = f"{type(e).__name__}: {e}"
            if message != self._logged_error:
                self._logged_error = message
                log.error("fold failed at seq %d", self.folded_seq + 1, exc_info=True)
            else:
                log.debug("fold failed again at seq %d: %s", self.folded_seq + 1, message)
            return False
        if self.last_error is not None:
            log.info("fold recovered: folded to seq %d", self.folded_seq)
        self.last_error = self._logged_error = None
        return True

    async def wait_folded(self, seq: int, timeout: float) -> bool:
        """Wait until the fold has passed `seq` (read-your-writes), at most `timeout` s."""
        if self.folded_seq >= seq:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        with self._waiters_lock:
            self._waiters.append((seq, fut))
        if self.folded_seq >= seq:
            self._wake(self.folded_seq)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        finally:
            with self._waiters_lock:
                self._waiters = [(s, f) for s, f in self._waiters if f is not fut]

    def _tell(self, folded: int, table: pa.Table) -> None:
        try:  # the batch has committed: nothing here may fail the fold
            runs = changed_runs(self.db.connection, table)
            for listener in list(self.listeners):
                listener(folded, runs)
        except Exception:
            log.exception("telling fold listeners of seq %d failed", folded)

    def _wake(self, folded: int) -> None:
        with self._waiters_lock:
            ready = [f for s, f in self._waiters if s <= folded]
        for fut in ready:
            loop = fut.get_loop()
            loop.call_soon_threadsafe(_set_true, fut)


def _set_true(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)
