"""The DuckDB file: one writer (the fold), many readers, each on its own cursor.

Reads run in a thread pool so no handler touches DuckDB on the event loop.
`replace_with` swaps in a file a replay built: reads in flight finish on the old
file, reads that arrive meanwhile wait for the new one.

No read holds a reader thread for long: one past its time budget, one whose
caller was cancelled (the client went away) and every read in flight at `close`
are interrupted (`cursor.interrupt()`), which frees the thread within a statement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from runlake.errors import QueryTimeout, RunlakeError, Unavailable
from runlake.events.wal import fsync_dir
from runlake.views import VIEWS, tables
from runlake.views.metric_series import MetricSeries

T = TypeVar("T")
log = logging.getLogger("runlake.db")
# DuckDB's buffer cap for the server's database and for replays: the whole server
# must stay within 1 GiB RSS (DESIGN §9); DuckDB spills or evicts beyond it.
MEMORY_LIMIT = "512MB"
# DuckDB checkpoints (compresses and writes out what the WAL holds) when a commit
# takes the WAL past this. At its default, 16 MB, it came every few batches and
# each checkpoint rewrote the same recent row groups again: a larger threshold cut
# the fold's cost per batch (BENCHMARKS.md). The price: a bigger WAL to replay when
# the server starts after a crash.
CHECKPOINT_THRESHOLD = "256MB"
# Bumped whenever a table or view changes shape: a database of another version is
# rebuilt from the log when the server opens it (ingest/replay.py `ensure_current`).
SCHEMA_VERSION = 8
# How often a read told to stop is interrupted again until it has: DuckDB forgets
# an interrupt that comes between two of the read's statements (the next one runs).
INTERRUPT_EVERY_S = 0.05


class _Reading:
    """One read: its cursor while it runs, when it started, and the error it is to
    end with once told to stop (the first reason given wins)."""

    __slots__ = ("cursor", "started", "error", "timer", "_lock")

    def __init__(self) -> None:
        self.cursor: duckdb.DuckDBPyConnection | None = None
        self.started: float | None = None  # monotonic, once on a reader thread
        self.error: RunlakeError | None = None
        self.timer: asyncio.TimerHandle | None = None  # the budget's, on the caller's loop
        self._lock = threading.Lock()  # the cursor is interrupted from other threads

    def attach(self, cur: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self.error is not None:  # stopped before it could start: run nothing
                raise self.error
            self.cursor = cur

    def detach(self) -> None:
        with self._lock:
            self.cursor = None

    def stop(self, error: RunlakeError) -> None:
        """Interrupt the statement running now (if any); the read ends with `error`."""
        with self._lock:
            if self.error is None:
                self.error = error
            if self.cursor is not None:
                self.cursor.interrupt()


class Database:
    """A DuckDB file holding the base tables and views. `close()` is idempotent."""

    def __init__(self, path: Path, *, threads: int = 2, memory_limit: str = MEMORY_LIMIT,
                 readers: int = 4) -> None:
        self.path = Path(path)
        self.threads, self.memory_limit, self.readers = threads, memory_limit, readers
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._readers = 0  # reads in flight
        self._active: set[_Reading] = set()  # their handles, for `close` to interrupt
        self._swapping = False
        self._closing = False
        self._cond = threading.Condition()
        self.series = MetricSeries()  # the performance report's; the fold notes its changes

    def open(self) -> Database:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = self._connect()
        self._pool = ThreadPoolExecutor(self.readers, thread_name_prefix="runlake-read")
        with self._cond:
            self._closing = False
        return self

    def _connect(self) -> duckdb.DuckDBPyConnection:
        return connect(self.path, threads=self.threads, memory_limit=self.memory_limit)

    def replace_with(self, new: Path) -> None:
        """Make the database file `new` this database's file, in one rename.

        The caller has stopped the writer (the fold). Waits for reads in flight,
        closes the old file, renames, and reopens; reads arriving meanwhile wait.
        """
        with self._cond:
            self._swapping = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            if self._con is not None:
                self._con.close()
                self._con = None
            replace_file(new, self.path)
        finally:
            self.series.reset()  # whichever file reopens, it may not be what was loaded
            try:
                self._con = self._connect()  # the new file, or the old one if the rename failed
            finally:
                with self._cond:
                    self._swapping = False
                    self._cond.notify_all()
        if self._pool is not None:
            self.preload_series()

    def preload_series(self) -> None:
        """Load the performance series on a reader thread now rather than at the first
        report, which would wait for it (seconds at 10 M events). A failure is
        logged; the first report tries again."""
        def done(fut: Future[None]) -> None:
            if isinstance(e := fut.exception(), Unavailable):  # closed meanwhile
                log.info("loading the performance series stopped: %s", e)
            elif e is not None:
                log.error("loading the performance series failed: %s", e)

        self._readers_pool().submit(self._read, self.series.ensure_loaded,
                                    _Reading()).add_done_callback(done)

    def close(self) -> None:
        """Interrupt the reads in flight (they end with 503 `unavailable`), refuse the
        queued ones, and close the file: a slow read does not hold up shutdown."""
        with self._lock:
            with self._cond:
                self._closing = True
                while self._readers:
                    for reading in self._active:
                        reading.stop(Unavailable("the database is closing"))
                    self._cond.wait(INTERRUPT_EVERY_S)  # then again: see INTERRUPT_EVERY_S
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._con is not None:
                self._con.close()
                self._con = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The writer connection (for the fold)."""
        if self._con is None:
            raise Unavailable("the database is closed")
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.connection.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    def read_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`read` for a thread that may block (an export's pump): waits for `fn(cursor)`
        to run on a reader thread, so it counts against the limit like any read."""
        return self._readers_pool().submit(self._read, fn, _Reading()).result()

    def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], T], reading: _Reading) -> T:
        with self._cond:
            self._cond.wait_for(lambda: not self._swapping)
            if self._closing:
                raise Unavailable("the database is closing")
            self._readers += 1
            self._active.add(reading)
        try:
            reading.started = time.monotonic()
            cur = self.cursor()
            try:
                reading.attach(cur)
                return fn(cur)
            except Exception as e:
                # Stopped: whatever the interrupt broke (the statement, or a cleanup
                # in the transaction it aborted), the read ends with the reason.
                if reading.error is not None and e is not reading.error:
                    raise reading.error from e
                raise
            finally:
                reading.detach()
                cur.close()
        finally:
            with self._cond:
                self._readers -= 1
                self._active.discard(reading)
                self._cond.notify_all()

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T], *,
                   budget_s: float | None = None) -> T:
        """Run `fn(cursor)` on a reader thread with a cursor of its own.

        `budget_s`: the longest it may run once on its thread (waiting for one is not
        counted); past it the read is interrupted and raises `QueryTimeout`. If the
        caller is cancelled (its client went away), the read is interrupted too."""
        loop = asyncio.get_running_loop()
        reading = _Reading()
        fut = asyncio.wrap_future(self._readers_pool().submit(self._read, fn, reading),
                                  loop=loop)
        if budget_s is not None:
            reading.timer = loop.call_later(budget_s, _expire, reading, budget_s, fut)
        try:
            return await asyncio.shield(fut)  # cancelling the caller must not cancel fut
        except asyncio.CancelledError:
            reading.stop(Unavailable("the request was cancelled"))
            _interrupt_until_done(reading, fut)
            raise
        finally:
            if reading.timer is not None:
                reading.timer.cancel()

    def _readers_pool(self) -> ThreadPoolExecutor:
        """The reader threads: every read of the database runs on one of them, so
        at most `readers` DuckDB reads run at once whatever the requests."""
        if self._pool is None:
            raise Unavailable("the database is closed")
        return self._pool


def _expire(reading: _Reading, budget_s: float, fut: asyncio.Future[Any]) -> None:
    """The budget timer: stop the read if it has run `budget_s` on its thread, else
    look again when it will have (it waited for a thread, or has not started yet)."""
    if fut.done():
        return
    loop = fut.get_loop()
    ran = 0.0 if reading.started is None else time.monotonic() - reading.started
    if ran < budget_s:
        reading.timer = loop.call_later(budget_s - ran, _expire, reading, budget_s, fut)
        return
    reading.stop(QueryTimeout(
        f"the query ran past its time budget of {budget_s:g} s and was stopped: narrow it "
        "(filters such as model, hardware, status, tag, since/until, or fewer days) "
        "or ask for a smaller page", [{"budget_s": budget_s}]))
    _interrupt_until_done(reading, fut)


def _interrupt_until_done(reading: _Reading, fut: asyncio.Future[Any]) -> None:
    """Interrupt the read now and every INTERRUPT_EVERY_S until its thread is done
    (a statement it starts after one interrupt meets the next)."""
    if not fut.done():
        reading.stop(reading.error or Unavailable("the read was stopped"))
        fut.get_loop().call_later(INTERRUPT_EVERY_S, _interrupt_until_done, reading, fut)


def connect(path: Path, *, threads: int | None = None,
            memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """A writable connection to the database file at `path`: UTC, schema created."""
    config: dict[str, str | int] = {"memory_limit": memory_limit,
                                    "checkpoint_threshold": CHECKPOINT_THRESHOLD}
    if threads is not None:
        config["threads"] = threads
    con = duckdb.connect(str(path), config=config)
    con.execute("SET TimeZone = 'UTC'")
    create_schema(con)
    return con


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    tables.create(con)
    for view in VIEWS:
        con.execute(view.create)
    if con.execute("SELECT count(*) FROM fold_state").fetchone() == (0,):
        con.execute("INSERT INTO fold_state VALUES (0, ?)", [SCHEMA_VERSION])


def schema_version(path: Path) -> int | None:
    """The schema version of the database file at `path`; None if there is none."""
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException:  # empty or not a DuckDB file: rebuild it from the log
        return 0
    try:
        row = con.execute("SELECT schema_version FROM fold_state").fetchone()
    except duckdb.CatalogException:  # a DuckDB file without runlake's tables
        return 0
    finally:
        con.close()
    return int(row[0]) if row else 0


def folded_seq(con: duckdb.DuckDBPyConnection) -> int:
    """The high-water mark: the last seq folded into this database."""
    row = con.execute("SELECT folded_seq FROM fold_state").fetchone()
    return int(row[0]) if row else 0


def replace_file(new: Path, db_path: Path) -> None:
    """Rename the database file `new` over `db_path`.

    The old file's DuckDB write-ahead log goes first: left beside the new file
    it would be replayed into it. Without it the old file is still a consistent
    (if older) database, and the fold would redo what it loses.
    """
    Path(str(db_path) + ".wal").unlink(missing_ok=True)
    os.replace(new, db_path)
    fsync_dir(db_path.parent)
