"""The append-only event log (DESIGN §2): group commit, segments, recovery, reads.

Layout under the log directory:

    seg-<first>-<last>.parquet   immutable segments (the source of truth)
    wal/wal-<first>.arrows       the write-ahead file of the newest events
    LOCK                         held by the one process that appends

One writer thread takes everything waiting on its queue, numbers it, writes it
as one WAL frame and fsyncs once (group commit), then resolves every waiting
future: an append returns only once its events are durable. When the tail is
large or old enough the writer seals it and starts a new WAL file; a roller
thread writes the sealed tail as a segment and then deletes its WAL file.
"""

from __future__ import annotations

import asyncio
import bisect
import fcntl
import logging
import operator
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from runlake.errors import LogError, LogLocked
from runlake.events.columns import LOG_SCHEMA, events_to_table, renumber, ts_out_of_range
from runlake.events.schema import Event
from runlake.events.segments import (
    Segment,
    list_segments,
    read_segment,
    remove_temp_files,
    write_segment,
)
from runlake.events.wal import WalWriter, encode_frame, fsync_dir, read_frames, truncate, wal_name

log = logging.getLogger("runlake.log")

Acknowledgement = tuple[int, int]  # (first_seq, last_seq)


@dataclass
class _Append:
    events: list[Event] | None
    table: pa.Table | None
    future: Future[Acknowledgement] = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return len(self.events) if self.events is not None else self.table.num_rows  # type: ignore[union-attr]


# The tail in memory: one (first seq, table) per group commit, in seq order. Reads
# bisect on the first seqs instead of scanning thousands of small commits.
_Tables = list[tuple[int, pa.Table]]
_FIRST = operator.itemgetter(0)


@dataclass
class _Sealed:
    tables: _Tables
    wal: Path | None


_STOP = object()


class EventLog:
    """The log of one data folder. `open()` it before use; `close()` rolls the tail."""

    def __init__(
        self,
        directory: Path,
        *,
        readonly: bool = False,
        roll_rows: int = 250_000,
        roll_bytes: int = 64 * 1024 * 1024,
        roll_seconds: float = 60.0,
        max_group_rows: int = 200_000,
    ) -> None:
        self.directory = Path(directory)
        self.wal_dir = self.directory / "wal"
        self.readonly = readonly
        self.roll_rows, self.roll_bytes, self.roll_seconds = roll_rows, roll_bytes, roll_seconds
        self.max_group_rows = max_group_rows
        self._cond = threading.Condition()
        self._segments: list[Segment] = []
        self._sealed: list[_Sealed] = []
        self._tail: _Tables = []
        self._tail_bytes = 0
        self._tail_since = 0.0
        self._last_seq = 0
        self._failed: BaseException | None = None
        self._queue: queue.SimpleQueue[_Append | object] = queue.SimpleQueue()
        self._roll_queue: queue.SimpleQueue[_Sealed | object] = queue.SimpleQueue()
        self._wal: WalWriter | None = None
        self._lock_fd = -1
        self._threads: list[threading.Thread] = []
        self._open = False
        self.appended_events = 0
        self.group_commits = 0
        self._reported: set[int] = set()  # seqs of bad rows already logged
        # Called on the writer thread with the new last seq after each durable commit
        # (live streams, api/broadcast.py): each must only hand the number on, never block.
        self.listeners: list[Callable[[int], None]] = []

    # -- lifetime ---------------------------------------------------------

    def open(self) -> EventLog:
        if self._open:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.wal_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise LogError(f"cannot create log directory {self.directory}: {e}") from e
        if self.readonly:
            self._load_snapshot()
        else:
            self._take_lock()
            self._recover()
            self._start_wal()
            self._threads = [
                threading.Thread(target=self._write_loop, name="runlake-log-writer", daemon=True),
                threading.Thread(target=self._roll_loop, name="runlake-log-roller", daemon=True),
            ]
            for t in self._threads:
                t.start()
        self._open = True
        return self

    def close(self) -> None:
        """Finish pending appends, roll the tail into a segment, release the lock.

        Safe to call twice; appends after close fail with LogError.
        """
        if not self._open:
            return
        self._open = False
        if self.readonly:
            return
        self._queue.put(_STOP)
        for t in self._threads:
            t.join()
        if self._wal is not None:
            self._wal.close()
            if self._wal.size == 0:
                self._wal.path.unlink(missing_ok=True)
            self._wal = None
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> EventLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appends ----------------------------------------------------------

    def submit(self, events: list[Event]) -> Future[Acknowledgement]:
        """Queue validated events; the future resolves once they are durable."""
        return self._submit(_Append(events, None))

    def submit_table(self, table: pa.Table) -> Future[Acknowledgement]:
        """Queue a table in LOG_SCHEMA (seq, received_at and null ts are assigned)."""
        if not table.schema.equals(LOG_SCHEMA, check_metadata=False):
            raise LogError("table does not have the log's schema")
        return self._submit(_Append(None, table))

    def append(self, events: list[Event]) -> Acknowledgement:
        return self.submit(events).result()

    async def append_async(self, events: list[Event]) -> Acknowledgement:
        return await asyncio.wrap_future(self.submit(events))

    def _submit(self, item: _Append) -> Future[Acknowledgement]:
        if not self._open or self.readonly:
            raise LogError("the log is not open for appends")
        if self._failed is not None:
            raise LogError(f"the log failed earlier and accepts no appends: {self._failed}")
        if item.rows == 0:
            item.future.set_result((self._last_seq + 1, self._last_seq))
            return item.future
        self._queue.put(item)
        return item.future

    # -- reads ------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def wait(self, after_seq: int, timeout: float) -> bool:
        """Block until an event with seq > after_seq is in the log, or timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._last_seq > after_seq, timeout)

    def read(
        self, from_seq: int = 1, to_seq: int | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of every event with from_seq ≤ seq ≤ to_seq, in seq order,
        across segments and the not-yet-rolled tail.

        Every consumer reads the log through here (fold, replay, the raw events
        route, export), so this is where bad data stops: a row whose `ts` no reader
        can hold (outside years 1-9999, written before decoding checked it) is left
        out, with one warning naming its seq; the rest is served.
        """
        with self._cond:
            segments = list(self._segments)
            # Only the tables from the one holding from_seq on: a tail of single-event
            # commits holds tens of thousands, and the fold reads its end again and again.
            memory: _Tables = []
            for tables in [*(s.tables for s in self._sealed), self._tail]:
                i = max(0, bisect.bisect_right(tables, from_seq, key=_FIRST) - 1)
                memory.extend(tables[i:])
            last = self._last_seq if to_seq is None else min(to_seq, self._last_seq)
        for seg in segments:
            if seg.last < from_seq:
                continue
            if seg.first > last:
                return
            for batch in read_segment(seg, from_seq, batch_rows):
                yield from self._good(_clip(batch, last))
                if batch.num_rows and batch.column(0)[0].as_py() + batch.num_rows > last:
                    return  # the rest of the segment lies past `last`: do not read it
        # The live tail was checked as it was written (_build); a read-only snapshot's
        # came from WAL files, which an older runlake may have written.
        check = self._good if self.readonly else iter
        for first, table in memory:
            if first + table.num_rows <= from_seq:
                continue
            if first > last:
                return
            sliced = table.slice(max(0, from_seq - first))
            for batch in sliced.to_batches(max_chunksize=batch_rows):
                yield from check(_clip(batch, last))

    def _good(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`batches` without the rows no reader can hold (see `read`)."""
        for batch in batches:
            bad = ts_out_of_range(batch)
            if bad is None:
                yield batch
                continue
            dropped = batch.filter(bad)
            times = dropped.column("ts").view(pa.int64()).to_pylist()
            for seq, us in zip(dropped.column("seq").to_pylist(), times, strict=True):
                if seq not in self._reported:
                    self._reported.add(seq)
                    log.warning("seq %d is bad data: its ts (%d µs from 1970) is outside "
                                "years 1-9999; every read of the log leaves it out", seq, us)
            kept = batch.filter(pc.invert(bad))
            if kept.num_rows:
                yield kept

    def segments(self) -> list[Segment]:
        with self._cond:
            return list(self._segments)

    # -- writer thread ----------------------------------------------------

    def _write_loop(self) -> None:
        try:
            self._write_until_stopped()
        except Exception as e:  # a bug or an I/O error outside a commit: fail, don't hang
            log.exception("the log writer stopped")
            self._failed = e
        finally:
            self._roll_queue.put(_STOP)
            self._fail_queued()

    def _fail_queued(self) -> None:
        """Fail appends still queued once the writer has stopped (closed or failed)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Append):
                item.future.set_exception(LogError("the log is closed"))

    def _write_until_stopped(self) -> None:
        stopping = False
        while not stopping:
            timeout = self._roll_timeout()
            try:
                first_item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._maybe_roll()
                continue
            items: list[_Append] = []
            rows = 0
            item = first_item
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Append)
                items.append(item)
                rows += item.rows
                if rows >= self.max_group_rows:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            # A caller that gave up cancelled its future: drop it before numbering.
            items = [it for it in items if it.future.set_running_or_notify_cancel()]
            if items:
                self._commit(items)
                self._maybe_roll()
        self._seal()

    def _commit(self, items: list[_Append]) -> None:
        if self._failed is not None:
            for it in items:
                it.future.set_exception(LogError(f"the log failed earlier: {self._failed}"))
            return
        received_us = time.time_ns() // 1000
        first = self._last_seq + 1
        try:
            table, acks = _build(items, first, received_us)
        except Exception:  # e.g. events built in Python, never decoded: fail only those
            log.exception("events could not be stored; retrying the group one append at a time")
            table, acks = _build_each(items, first, received_us)
            if table is None:
                return
        seq = acks[-1][2] + 1
        try:
            assert self._wal is not None
            self._wal.write(encode_frame(table))
        except Exception as e:  # disk full, I/O error: nothing here was acknowledged
            log.exception("write-ahead append failed")
            self._failed = e
            for fut, _, _ in acks:
                fut.set_exception(LogError(f"append failed: {e}"))
            return
        with self._cond:
            if not self._tail:
                self._tail_since = time.monotonic()
            self._tail.append((first, table))
            self._tail_bytes += table.nbytes
            self._last_seq = seq - 1
            self._cond.notify_all()
        self.appended_events += seq - first
        self.group_commits += 1
        for fut, a, b in acks:
            fut.set_result((a, b))
        for listener in list(self.listeners):
            try:
                listener(seq - 1)
            except Exception:  # a listener's bug must not stop the log
                log.exception("a log listener failed")

    def _roll_timeout(self) -> float | None:
        if not self._tail:
            return None
        return max(0.0, self._tail_since + self.roll_seconds - time.monotonic())

    def _maybe_roll(self) -> None:
        if not self._tail:
            return
        rows = self._last_seq - self._tail[0][0] + 1
        age = time.monotonic() - self._tail_since
        too_big = rows >= self.roll_rows or self._tail_bytes >= self.roll_bytes
        if too_big or age >= self.roll_seconds:
            self._seal()
            self._start_wal()

    def _seal(self) -> None:
        """Hand the tail and its WAL file to the roller."""
        if not self._tail:
            return
        assert self._wal is not None
        self._wal.close()
        with self._cond:
            sealed = _Sealed(self._tail, self._wal.path)
            self._sealed.append(sealed)
            self._tail, self._tail_bytes = [], 0
        self._wal = None
        self._roll_queue.put(sealed)

    def _start_wal(self) -> None:
        self._wal = WalWriter(self.wal_dir / wal_name(self._last_seq + 1))
        fsync_dir(self.wal_dir)

    # -- roller thread ----------------------------------------------------

    def _roll_loop(self) -> None:
        while True:
            sealed = self._roll_queue.get()
            if sealed is _STOP:
                return
            assert isinstance(sealed, _Sealed)
            try:
                self._roll(sealed)
            except Exception:  # the WAL file stays; recovery rolls it on the next open
                log.exception("rolling the tail into a segment failed")

    def _roll(self, sealed: _Sealed) -> None:
        table = pa.concat_tables([t for _, t in sealed.tables]).combine_chunks()
        segment = write_segment(self.directory, table)
        with self._cond:
            self._segments.append(segment)
            self._sealed.remove(sealed)
        if sealed.wal is not None:
            sealed.wal.unlink(missing_ok=True)
            fsync_dir(self.wal_dir)
        log.info("rolled seq %d..%d into %s", segment.first, segment.last, segment.path.name)

    # -- opening ----------------------------------------------------------

    def _take_lock(self) -> None:
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise LogLocked(
                f"the log in {self.directory} is in use by another process "
                "(a running server?): send events to it over HTTP instead"
            ) from e

    def _scan(self) -> tuple[list[Segment], list[tuple[Path, list[pa.Table], int]]]:
        """Segments, and for each WAL file its whole frames and their byte length."""
        segments = list_segments(self.directory)
        for prev, seg in zip(segments, segments[1:], strict=False):
            if seg.first != prev.last + 1:
                names = f"{prev.path.name}, {seg.path.name}"
                raise LogError(f"log segments are not contiguous: {names}")
        wals = []
        for path in sorted(self.wal_dir.glob("wal-*.arrows")):
            tables, good = read_frames(path)
            wals.append((path, tables, good))
        return segments, wals

    def _recover(self) -> None:
        """Cut torn WAL tails, drop WAL files a segment already covers, and roll
        what the WAL alone holds into a segment, so appends start on a clean slate."""
        remove_temp_files(self.directory)
        segments, wals = self._scan()
        self._segments = segments
        self._last_seq = segments[-1].last if segments else 0
        tables: list[pa.Table] = []
        for path, frames, good in wals:
            if good < path.stat().st_size:
                log.warning("cutting torn tail of %s at byte %d", path.name, good)
                truncate(path, good)
            tables.extend(_after(frames, self._last_seq + sum(t.num_rows for t in tables)))
        if tables:
            table = pa.concat_tables(tables).combine_chunks()
            _check_contiguous(table, self._last_seq + 1)
            segment = write_segment(self.directory, table)
            self._segments.append(segment)
            self._last_seq = segment.last
            log.info("recovered seq %d..%d from the write-ahead log", segment.first, segment.last)
        for path, _, _ in wals:
            path.unlink()
        fsync_dir(self.wal_dir)

    def _load_snapshot(self) -> None:
        """Read-only view: segments plus whatever whole frames the WAL holds now."""
        for _ in range(20):
            try:
                segments, wals = self._scan()
            except FileNotFoundError:  # a roll deleted a WAL file under us: look again
                continue
            # A roll renames its segment in before it deletes the WAL files it covers:
            # one that finished while they were read shows here, and its events may be
            # in neither listing (with no later frame to show the gap below).
            if [s.path for s in list_segments(self.directory)] != [s.path for s in segments]:
                continue
            last = segments[-1].last if segments else 0
            tail = _after([t for _, frames, _ in wals for t in frames], last)
            firsts = [t.column("seq")[0].as_py() for t in tail]
            ends = [last] + [f + t.num_rows - 1 for f, t in zip(firsts, tail, strict=True)]
            # A gap means a roll finished between listing segments and WAL files.
            if all(f == end + 1 for f, end in zip(firsts, ends, strict=False)):
                self._segments, self._last_seq = segments, ends[-1]
                self._tail = list(zip(firsts, tail, strict=True))
                return
        raise LogError(f"the log in {self.directory} keeps changing; try again")


_Acks = list[tuple[Future[Acknowledgement], int, int]]


def _build(items: list[_Append], first: int, received_us: int) -> tuple[pa.Table, _Acks]:
    """One table of the group's events numbered from `first`, and each append's seq range."""
    seq = first
    tables, acks = [], []
    pending: list[Event] = []
    for it in items:  # consecutive event lists become one table: fewer, larger arrays
        if it.events is not None:
            pending.extend(it.events)
        else:
            if pending:
                tables.append(events_to_table(pending, seq - len(pending), received_us))
                pending = []
            tables.append(renumber(it.table, seq, received_us))
        acks.append((it.future, seq, seq + it.rows - 1))
        seq += it.rows
    if pending:
        tables.append(events_to_table(pending, seq - len(pending), received_us))
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    # A null in a non-nullable column would make the tail impossible to roll, forever.
    for name in ("component", "type", "ts"):
        if table.column(name).null_count:
            raise LogError(f"an event has no {name}")
    if ts_out_of_range(table) is not None:  # only events never decoded can get here
        raise LogError("an event's ts is outside years 1-9999")
    return table, acks


def _build_each(
    items: list[_Append], first: int, received_us: int
) -> tuple[pa.Table | None, _Acks]:
    """Like `_build`, but an append that cannot be stored fails alone."""
    tables, acks = [], []
    for it in items:
        try:
            table, ack = _build([it], first, received_us)
        except Exception as e:
            it.future.set_exception(LogError(f"cannot store these events: {e}"))
            continue
        tables.append(table)
        acks += ack
        first += it.rows
    return (pa.concat_tables(tables) if tables else None), acks


def _after(frames: list[pa.Table], last_seq: int) -> list[pa.Table]:
    """The parts of `frames` with seq > last_seq."""
    out = []
    for t in frames:
        first = t.column("seq")[0].as_py()
        if first + t.num_rows - 1 <= last_seq:
            continue
        out.append(t.slice(max(0, last_seq + 1 - first)))
    return out


def _check_contiguous(table: pa.Table, expected_first: int) -> None:
    seqs = table.column("seq")
    first, last = seqs[0].as_py(), seqs[-1].as_py()
    if first != expected_first or last - first + 1 != table.num_rows:
        raise LogError(f"write-ahead log does not continue the segments at seq {expected_first}")


def _clip(batch: pa.RecordBatch, last: int) -> Iterator[pa.RecordBatch]:
    if batch.num_rows == 0:
        return
    first = batch.column(0)[0].as_py()
    if first > last:
        return
    if first + batch.num_rows - 1 > last:
        batch = batch.slice(0, last - first + 1)
    yield batch
