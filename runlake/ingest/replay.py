"""Replay (DESIGN §3): rebuild the database from the log into a new file, then swap.

The log is the source of truth, so the database can always be thrown away and
rebuilt. Replay folds the log into `<db>.replay` without any view upkeep (base
tables only, big batches), computes every view once at the end, checkpoints,
and renames the new file over the old one. Until that rename the old file is
untouched, so a replay that fails or is interrupted changes nothing.

Two ways in: `runlake replay` (offline: no server may hold the data folder) and
`Rebuild`, which a running server starts for `POST /api/db/replay`. There the
old file keeps answering reads and the fold keeps it current while the new one
is built; then the fold stops, the new file catches up with what arrived
meanwhile, the files swap, and the fold resumes on the new file. Appends never
wait for any of it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import duckdb
import msgspec

from runlake.events.log import EventLog
from runlake.ingest import bulk
from runlake.ingest.fold import Fold, fold_in_transaction, fold_table, log_tables, rebuild_views
from runlake.progress import Progress
from runlake.settings import Settings
from runlake.views.db import (
    MEMORY_LIMIT,
    SCHEMA_VERSION,
    Database,
    connect,
    folded_seq,
    replace_file,
    schema_version,
)

log = logging.getLogger("runlake.replay")


@dataclass(frozen=True)
class ReplayResult:
    events: int
    folded_seq: int
    seconds: float
    db_bytes: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# A server's replays fold at least this many events per batch: base tables only,
# where bigger batches are cheaper per event.
SERVER_BATCH_ROWS = 1_000_000


class Counter(Protocol):
    def update(self, n: int) -> None: ...


class Cancelled(Exception):
    """The replay was asked to stop (the server is shutting down)."""


def staging_path(db_path: Path) -> Path:
    """Where a replay builds the new file, beside the old one (same filesystem)."""
    return db_path.with_name(db_path.name + ".replay")


def build(event_log: EventLog, path: Path, *, batch_rows: int = SERVER_BATCH_ROWS,
          upto: int | None = None, progress: Counter | None = None,
          stop: threading.Event | None = None, memory_limit: str = MEMORY_LIMIT,
          bulk_min_rows: int = bulk.MIN_ROWS) -> int:
    """Fold the log (up to seq `upto`) into a fresh DuckDB file at `path`.

    Returns the seq folded to. Whole segments holding at least `bulk_min_rows`
    events are folded in one pass (ingest/bulk.py), the rest in batches. Each is
    its own transaction with its high-water mark, so `path` is a valid database
    after every one; the views are computed once, in the last transaction.
    """
    remove_database(path)
    last = event_log.last_seq if upto is None else upto
    try:
        con = connect(path, threads=os.cpu_count() or 2, memory_limit=memory_limit)
        try:
            _check(stop)
            done = _bulk(con, event_log, last, bulk_min_rows)
            if progress is not None and done:
                progress.update(done)
            fold_log(con, event_log, done, last, batch_rows, incremental=False,
                     progress=progress, stop=stop)
            con.execute("BEGIN")
            rebuild_views(con)
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
            return folded_seq(con)
        finally:
            con.close()
    except BaseException:  # a half-built file is of no use to anyone
        remove_database(path)
        raise


def fold_log(con: duckdb.DuckDBPyConnection, event_log: EventLog, after: int, upto: int,
             batch_rows: int, *, incremental: bool, progress: Counter | None = None,
             stop: threading.Event | None = None) -> None:
    """Fold the log's events after seq `after` up to `upto` into `con`, a batch at a
    time, counting them on `progress`; raise Cancelled once `stop` is set."""
    for table, end in log_tables(event_log, after, upto, batch_rows):
        _check(stop)
        fold_table(con, table, incremental=incremental, last=end)
        if progress is not None:
            progress.update(table.num_rows)


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Cancelled("replay cancelled")


def _bulk(con: duckdb.DuckDBPyConnection, event_log: EventLog, last: int, min_rows: int) -> int:
    """Fold the whole segments up to seq `last` in one pass (ingest/bulk.py); returns
    the seq folded to (0: nothing, the batches do it all). One transaction."""
    segments = [s for s in event_log.segments() if s.last <= last]  # contiguous: EventLog's rule
    if not segments or segments[0].first != 1 or segments[-1].last < min_rows:
        return 0
    with bulk.SegmentFold(con, [s.path for s in segments]) as fold:
        if not fold.fits:
            return 0
        # One statement per table: no progress to show until it is done.
        log.info("folding the %d events of %d segments in one pass",
                 segments[-1].last, len(segments))
        fold_in_transaction(con, segments[-1].last, fold.apply)
    return segments[-1].last


def remove_database(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)


def ensure_current(event_log: EventLog, db_path: Path, batch_rows: int) -> bool:
    """Rebuild a database file of an older schema version from the log (an upgrade).

    Returns True if it did. Views are derived data: rebuilding is always safe.
    """
    version = schema_version(db_path)
    if version is None or version == SCHEMA_VERSION:
        return False
    log.warning("database %s has schema version %s, this runlake uses %d: rebuilding it "
                "from the log", db_path, version, SCHEMA_VERSION)
    staging = staging_path(db_path)
    build(event_log, staging, batch_rows=max(batch_rows, SERVER_BATCH_ROWS))
    replace_file(staging, db_path)
    return True


def replay(event_log: EventLog, settings: Settings, *, show_progress: bool = True
           ) -> ReplayResult:
    """`runlake replay`: rebuild `settings.db_path` from `event_log`, offline.

    The caller holds the log open (ingest/datafolder.py): its lock keeps a server
    from starting on this data folder meanwhile, and a running one (which holds
    the database open) from being replayed under.
    """
    total = event_log.last_seq
    staging = staging_path(settings.db_path)
    progress = Progress("replay", total) if show_progress else None
    start = time.monotonic()
    seq = build(event_log, staging, batch_rows=settings.fold_batch_rows,
                progress=progress, memory_limit=settings.replay_memory)
    replace_file(staging, settings.db_path)
    seconds = time.monotonic() - start
    if progress is not None:
        progress.finish()
    result = ReplayResult(total, seq, seconds, settings.db_path.stat().st_size)
    log.info("replayed %d events in %.1f s (%.0f events/s) into %s",
             total, seconds, result.events_per_s, settings.db_path)
    return result


class ReplayStatus(msgspec.Struct):
    """A replay's progress (`GET /api/db/replay`): state is idle, running, done or failed;
    times in UTC (RFC 3339 on the wire, as every time the API answers)."""

    state: str
    events: int
    total: int
    events_per_s: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


def _utc(epoch: float) -> datetime | None:
    """An epoch time as a UTC datetime; 0 (not yet) as None."""
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


class Rebuild:
    """A replay inside a running server, one at a time, in a thread of its own.

    `status()` is what `GET /api/db/replay` shows: state (idle, running, done,
    failed), events folded of the total, rate, and the error if it failed.
    """

    def __init__(self, db: Database, fold: Fold, event_log: EventLog, batch_rows: int) -> None:
        self.db, self.fold, self.event_log, self.batch_rows = db, fold, event_log, batch_rows
        self.state = "idle"
        self.done = self.total = 0
        self.started_at = self.finished_at = 0.0
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, n: int) -> None:
        self.done += n

    def start(self) -> bool:
        """Start a replay; False if one is already running."""
        with self._lock:
            if self.state == "running":
                return False
            self.state, self.error = "running", None
            self.done, self.total = 0, self.event_log.last_seq
            self.started_at, self.finished_at = time.time(), 0.0
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="runlake-replay", daemon=True)
            self._thread.start()
            return True

    def stop(self) -> None:
        """Cancel a running replay (server shutdown); the old file stays."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def status(self) -> ReplayStatus:
        end = self.finished_at or time.time()
        seconds = max(end - self.started_at, 1e-9) if self.started_at else 0.0
        return ReplayStatus(
            state=self.state, events=self.done, total=self.total,
            events_per_s=round(self.done / seconds) if seconds else 0,
            started_at=_utc(self.started_at), finished_at=_utc(self.finished_at),
            error=self.error,
        )

    def _run(self) -> None:
        staging = staging_path(self.db.path)
        try:
            build(self.event_log, staging, batch_rows=max(self.batch_rows, SERVER_BATCH_ROWS),
                  upto=self.total, progress=self, stop=self._stop)
            # Catch up with what arrived during the build while the fold still keeps
            # the old file current; only the last small gap waits for the swap.
            self._catch_up(staging)
            self.fold.stop()  # folds the old file to the end of the log, then stops
            try:
                self._catch_up(staging)
                self.db.replace_with(staging)
            finally:
                self.fold.resume()
            self._finish("done")
            log.info("replay swapped in: %d events, folded to seq %d",
                     self.total, self.fold.folded_seq)
        except Exception as e:  # reported by status(); the old file is untouched
            remove_database(staging)
            self._finish("failed", str(e))
            if not isinstance(e, Cancelled):
                log.exception("replay failed")

    def _finish(self, state: str, error: str | None = None) -> None:
        with self._lock:  # finished_at first: a new start() may follow at once
            self.finished_at = time.time()
            self.state, self.error = state, error

    def _catch_up(self, staging: Path) -> None:
        """Fold into the new file what was appended while it was being built."""
        con = connect(staging)
        try:
            # Up to the log's end now: the fold does the rest after the swap.
            fold_log(con, self.event_log, folded_seq(con), self.event_log.last_seq,
                     self.batch_rows, incremental=True, progress=self, stop=self._stop)
            con.execute("CHECKPOINT")
        finally:
            con.close()
