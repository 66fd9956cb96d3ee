"""The watched folder (DESIGN §5): event files dropped into `<data>/inbox/`.

`Inbox.run` first ingests the files already there, then follows the folder with
`watchfiles.awatch`. A change is only a wake-up call: each time, the folder is
listed again and every file that is ready is ingested, oldest first (by mtime,
then name), one at a time. Listing rather than trusting the change set means a
lost or coalesced notification (a burst of a thousand files) loses nothing, and
a listing every `RESCAN_SECONDS` even without changes covers the moment between
the start-up scan and the watch starting.

A file is ready once its size and mtime stayed the same across two looks
`STABLE_SECONDS` apart. It is read and validated whole; all its events go to the
log in one `submit` (one append, in one group commit: all or nothing), and only
once that is durable is the file moved to `.done/` (or deleted). A bad file goes
to `.rejected/` beside `<name>.error.json`. Files are read one at a time, in
order; while the appends of up to `MAX_IN_FLIGHT_FILES` earlier files become
durable the next one is read, so small files share fsyncs. Every blocking step
(reading, gunzip, decoding, hashing, moving) runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import pyarrow as pa
from watchfiles import BaseFilter, Change, awatch

from runlake.errors import InvalidEvents, LogError
from runlake.events.log import Acknowledgement, EventLog
from runlake.events.schema import Event
from runlake.ingest.files import (
    SUFFIXES,
    FileChanged,
    decode_file,
    file_format,
    parquet_table,
    read_bytes,
)
from runlake.ingest.inbox_ids import assign_ids, assign_table_ids, content_key
from runlake.settings import Settings

__all__ = ["FileResult", "Inbox", "InboxFilter"]

log = logging.getLogger("runlake.inbox")
_watchfiles_log = logging.getLogger("watchfiles.main")
T = TypeVar("T")

DONE, REJECTED = ".done", ".rejected"
STABLE_SECONDS = 0.15  # a file is read once its size and mtime held this long
EMPTY_SECONDS = 1.0  # an empty file gets longer: its writer may not have begun
RESCAN_SECONDS = 5.0  # list the folder this often even when nothing is notified
RETRY_SECONDS = 1.0  # wait after the log refused an append before trying again
MAX_IN_FLIGHT_FILES = 8  # files appended but not yet durable (read ahead of the log)
MAX_IN_FLIGHT_EVENTS = 300_000  # ... and their events, which are held in memory
MAX_ERRORS = 1000  # bad lines listed in an error file
MAX_BYTES = 256 * 1024 * 1024  # largest file (after gunzip) read into memory
LOG_REFUSED = "the log refused the append"


def ignored(name: str) -> bool:
    """Names the inbox leaves alone: dotfiles and dot-dirs, and `*.tmp`/`*.part`,
    which writers use until they rename the finished file."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith((".tmp", ".part"))


class InboxFilter(BaseFilter):
    """awatch filter: no dotfiles or dot-dirs (`.done`, `.rejected`), no `*.tmp` or
    `*.part`, and no deletions (moving a file out of the inbox wakes nobody)."""

    ignore_entity_patterns = (r"^\.", r"(?i)\.tmp$", r"(?i)\.part$")

    def __call__(self, change: Change, path: str) -> bool:
        return change != Change.deleted and super().__call__(change, path)


Outcome = Literal["ingested", "rejected", "skipped", "retry"]


@dataclass(frozen=True)
class FileResult:
    """What became of one file. `retry`: left in place to try again later (still
    being written, or the log refused the append); `skipped`: not a file to ingest
    (a directory, or it vanished)."""

    name: str
    outcome: Outcome
    events: int = 0
    seqs: tuple[int, int] | None = None
    seconds: float = 0.0
    reason: str | None = None
    moved_to: Path | None = None


# (inode, size, mtime_ns): a file whose signature is unchanged was not written to.
Signature = tuple[int, int, int]


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Loaded:
    path: Path
    events: list[Event] | None
    table: pa.Table | None
    count: int
    signature: Signature
    started: float


@dataclass
class _Candidate:
    path: Path
    signature: Signature
    mtime_ns: int


class Inbox:
    """Ingests the event files dropped into one folder into `event_log`.

    `source` is the Settings (inbox `<data>/inbox`, `inbox_delete`, `max_events`)
    or the inbox folder itself. Counters for /metrics: `files_ingested`,
    `files_rejected`, `events_ingested`, and the gauge `files_waiting`.
    """

    def __init__(
        self,
        source: Settings | Path,
        event_log: EventLog,
        *,
        delete: bool | None = None,
        max_events: int | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if isinstance(source, Settings):
            self.directory = source.inbox_dir
            delete = source.inbox_delete if delete is None else delete
            max_events = source.max_events if max_events is None else max_events
        else:
            self.directory = Path(source)
        self.done_dir = self.directory / DONE
        self.rejected_dir = self.directory / REJECTED
        self.event_log = event_log
        self.delete = bool(delete)
        self.max_events = max_events if max_events is not None else 100_000
        self.max_bytes = max_bytes
        self.files_ingested = 0
        self.files_rejected = 0
        self.events_ingested = 0
        self.files_waiting = 0
        self._stuck: dict[str, Signature] = {}  # ingested or rejected but not movable
        self._skipped: set[str] = set()  # directories, said once
        self.watching = asyncio.Event()  # set once the folder exists and is watched
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    # -- running ----------------------------------------------------------

    async def run(self, stop_event: asyncio.Event) -> None:
        """Ingest what is in the folder, then what arrives, until `stop_event` is set.

        Files whose events were already appended when `stop_event` is set are
        finished (moved once durable) first; the rest wait in the folder.
        """
        await self._blocking(self._make_dirs)
        if _watchfiles_log.level == logging.NOTSET:  # its "N changes detected" per wake-up
            _watchfiles_log.setLevel(logging.WARNING)
        wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch(stop_event, wake), name="runlake-inbox-watch")
        await asyncio.sleep(0)  # let awatch start watching before the start-up scan
        log.info("watching %s", self.directory)
        self.watching.set()
        try:
            while not stop_event.is_set():
                try:
                    await self._drain(stop_event)
                except Exception:  # e.g. the folder cannot be listed: log, wait, look again
                    log.exception("ingesting from %s failed", self.directory)
                    await _wait(stop_event, RETRY_SECONDS)
                    wake.set()
                await wake.wait()
                wake.clear()
        finally:
            if not watcher.done():
                stop_event.set()  # run() itself was cancelled: awatch stops on the event
            await asyncio.gather(watcher, return_exceptions=True)
            self.watching.clear()
            log.info("stopped watching %s", self.directory)

    def start(self) -> asyncio.Task[None]:
        """Run in a task of the running loop; `await stop()` ends it."""
        if self._task is None or self._task.done():
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self.run(self._stop), name="runlake-inbox")
        return self._task

    async def stop(self) -> None:
        """Finish the files already appended, and stop. Safe to call twice, or without
        start()."""
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        await self._task

    async def _watch(self, stop_event: asyncio.Event, wake: asyncio.Event) -> None:
        """Set `wake` on every change in the folder, and every RESCAN_SECONDS anyway."""
        try:
            async for _ in awatch(
                self.directory,
                watch_filter=InboxFilter(),
                stop_event=stop_event,
                recursive=False,
                debounce=500,
                rust_timeout=int(RESCAN_SECONDS * 1000),
                yield_on_timeout=True,
            ):
                wake.set()
        except Exception:  # e.g. the folder was removed: fall back to listing it
            log.exception("watching %s failed; listing it every %.0f s instead",
                          self.directory, RESCAN_SECONDS)
            while not stop_event.is_set():
                wake.set()
                await _wait(stop_event, RESCAN_SECONDS)
        finally:
            wake.set()

    async def _drain(self, stop_event: asyncio.Event) -> None:
        """Ingest every ready file in the folder; wait for those still being written."""
        seen: dict[Path, tuple[Signature, float]] = {}  # signature, when first seen so
        while not stop_event.is_set():
            candidates = await self._blocking(self._list)
            self.files_waiting = len(candidates)
            if not candidates:
                return
            now = time.monotonic()
            ready = []
            for c in candidates:
                before = seen.get(c.path)
                if before is None or before[0] != c.signature:
                    seen[c.path] = (c.signature, now)
                    continue
                wait = EMPTY_SECONDS if c.signature[1] == 0 else STABLE_SECONDS
                if now - before[1] >= wait:
                    ready.append(c)
            if not ready:
                await _wait(stop_event, STABLE_SECONDS + 0.01)
                continue
            for c in ready:
                seen.pop(c.path, None)
            if not await self._ingest_ready(ready, stop_event):
                await _wait(stop_event, RETRY_SECONDS)
                return  # the log refused an append: the next wake-up tries again

    async def _ingest_ready(self, ready: list[_Candidate], stop_event: asyncio.Event) -> bool:
        """Ingest `ready` in order. One file is read and validated at a time, while the
        appends of a few earlier ones become durable (their group commits can merge).
        False if the log refused an append."""
        in_flight: deque[tuple[asyncio.Task[FileResult], int]] = deque()
        events = 0
        refused = False
        for c in ready:
            if stop_event.is_set() or refused:
                break
            loaded = await self._read(c.path, c.signature)
            if isinstance(loaded, FileResult):
                continue
            task = asyncio.ensure_future(self._complete(loaded, self._submit(loaded)))
            in_flight.append((task, loaded.count))
            events += loaded.count
            while in_flight and (len(in_flight) >= MAX_IN_FLIGHT_FILES
                                 or events >= MAX_IN_FLIGHT_EVENTS):
                task, count = in_flight.popleft()
                events -= count
                refused |= (await task).reason == LOG_REFUSED
        for task, _ in in_flight:
            refused |= (await task).reason == LOG_REFUSED
        return not refused

    # -- one file -----------------------------------------------------------

    async def ingest_file(self, path: Path) -> FileResult:
        """Ingest one file of the inbox now (no stability wait): validate it, append
        its events durably, then move it to `.done/`; or reject it to `.rejected/`."""
        await self._blocking(self._make_dirs)
        loaded = await self._read(Path(path), None)
        if isinstance(loaded, FileResult):
            return loaded
        return await self._complete(loaded, self._submit(loaded))

    async def _read(self, path: Path, expected: Signature | None) -> _Loaded | FileResult:
        """The file's validated events, or what became of it if it has none to append."""
        started = time.monotonic()
        try:
            return await self._blocking(self._load, path, expected, started)
        except (FileChanged, FileNotFoundError) as e:
            outcome: Outcome = "retry" if isinstance(e, FileChanged) else "skipped"
            return FileResult(path.name, outcome, reason=str(e))
        except IsADirectoryError:
            return FileResult(path.name, "skipped", reason="a directory")
        except InvalidEvents as e:
            return await self._rejected(path, e, started)
        except Exception as e:  # an unexpected failure is this file's problem, not the watcher's
            log.exception("reading %s failed", path.name)
            problem = InvalidEvents(f"cannot be ingested: {type(e).__name__}: {e}")
            return await self._rejected(path, problem, started)

    def _submit(self, loaded: _Loaded) -> asyncio.Future[Acknowledgement]:
        """Queue all the file's events on the log as one append (all or nothing)."""
        try:
            if loaded.table is not None:
                return asyncio.wrap_future(self.event_log.submit_table(loaded.table))
            assert loaded.events is not None
            return asyncio.wrap_future(self.event_log.submit(loaded.events))
        except LogError as e:
            refused: asyncio.Future[Acknowledgement] = asyncio.get_running_loop().create_future()
            refused.set_exception(e)
            return refused

    async def _complete(self, loaded: _Loaded, durable: asyncio.Future[Acknowledgement]
                        ) -> FileResult:
        """Once the file's events are durable, and only then, move it out of the inbox."""
        path, name = loaded.path, loaded.path.name
        try:
            first, last = await durable
        except LogError as e:
            log.error("cannot append %s, leaving it in the inbox: %s", name, e.message)
            return FileResult(name, "retry", reason=LOG_REFUSED)
        try:
            moved_to = await self._blocking(self._finish, path, loaded.signature)
        except (OSError, FileChanged) as e:
            log.error("ingested %s (seq %d..%d) but cannot move it out of the inbox: %s",
                      name, first, last, e)
            self._stuck[name] = loaded.signature
            moved_to = path
        seconds = time.monotonic() - loaded.started
        self.files_ingested += 1
        self.events_ingested += loaded.count
        log.info("ingested %s: %d events in %.3f s, seq %d..%d",
                 name, loaded.count, seconds, first, last)
        return FileResult(name, "ingested", loaded.count, (first, last), seconds,
                          moved_to=moved_to)

    async def _rejected(self, path: Path, e: InvalidEvents, started: float) -> FileResult:
        try:
            moved_to: Path | None = await self._blocking(self._reject, path, e)
        except FileNotFoundError:
            return FileResult(path.name, "skipped", reason="vanished")
        except OSError as oe:
            log.error("cannot move rejected %s to %s: %s", path.name, self.rejected_dir, oe)
            with contextlib.suppress(OSError):
                self._stuck[path.name] = _signature(os.lstat(path))
            moved_to = None
        self.files_rejected += 1
        log.warning("rejected %s: %s", path.name, _reason(path, e))
        return FileResult(path.name, "rejected", seconds=time.monotonic() - started,
                          reason=_reason(path, e), moved_to=moved_to)

    # -- blocking work (runs in a thread) ------------------------------------

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _make_dirs(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for d in (self.done_dir, self.rejected_dir):
            try:
                d.mkdir(exist_ok=True)
            except OSError as e:  # moving files there will fail, and say so, file by file
                log.error("cannot create %s: %s", d, e)
        if self.rejected_dir.is_dir():
            for leftover in self.rejected_dir.glob(".*.tmp"):  # a crash while writing one
                leftover.unlink(missing_ok=True)

    def _list(self) -> list[_Candidate]:
        """Files to ingest, oldest first: everything but ignored names and directories."""
        self.directory.mkdir(parents=True, exist_ok=True)  # in case it was removed
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if ignored(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if entry.name not in self._skipped:
                        self._skipped.add(entry.name)
                        log.info("skipping directory %s in the inbox", entry.name)
                    continue
                signature = _signature(st)
                if self._stuck.get(entry.name) == signature:
                    continue
                found.append(_Candidate(Path(entry.path), signature, st.st_mtime_ns))
        found.sort(key=lambda c: (c.mtime_ns, c.path.name))
        return found

    def _load(self, path: Path, expected: Signature | None, started: float) -> _Loaded:
        st = os.lstat(path)
        if expected is not None and _signature(st) != expected:
            raise FileChanged(f"{path.name}: changed since it was last looked at")
        if stat.S_ISLNK(st.st_mode):
            raise InvalidEvents("is a symbolic link; the inbox does not follow links")
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidEvents("is not a regular file (a FIFO, socket or device?)")
        fmt = file_format(path)
        if fmt is None:
            raise InvalidEvents(
                f"unknown file type; expected a name ending in {', '.join(SUFFIXES)}, "
                "optionally followed by .gz"
            )
        content = read_bytes(path, self.max_bytes, follow_symlinks=False)
        after = _signature(os.lstat(path))
        if after != _signature(st):
            raise FileChanged(f"{path.name}: changed while being read")
        key = content_key(content)
        if fmt == "parquet":
            table = assign_table_ids(parquet_table(content, path.name, self.max_events), key)
            return _Loaded(path, None, table, table.num_rows, after, started)
        events = decode_file(content, fmt, path.name, self.max_events)
        assign_ids(events, key)
        return _Loaded(path, events, None, len(events), after, started)

    def _finish(self, path: Path, signature: Signature) -> Path | None:
        """Delete the ingested file, or move it to `.done/`; None when deleted."""
        if _signature(os.lstat(path)) != signature:  # rewritten in place after our read
            raise FileChanged(f"{path.name} changed after it was read; it will be read again")
        if self.delete:
            path.unlink()
            return None
        self.done_dir.mkdir(exist_ok=True)
        target = _free_name(self.done_dir, path.name)
        os.rename(path, target)
        return target

    def _reject(self, path: Path, e: InvalidEvents) -> Path:
        """Move `path` to `.rejected/`, after writing `<name>.error.json` beside it."""
        os.lstat(path)  # FileNotFoundError if it is gone: nothing to reject
        self.rejected_dir.mkdir(exist_ok=True)
        target = _free_name(self.rejected_dir, path.name)
        # The problems as data, each naming its line (null: the whole file's).
        errors = [{"line": None, **d} for d in e.details[:MAX_ERRORS]] or [
            {"line": None, "field": None, "message": _reason(path, e)}]
        report = {"file": path.name, "error": _reason(path, e), "errors": errors,
                  "error_count": e.total}
        report_path = target.with_name(target.name + ".error.json")
        tmp = target.with_name(f".{report_path.name}.tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        os.replace(tmp, report_path)
        os.rename(path, target)
        return target


def _reason(path: Path, e: InvalidEvents) -> str:
    """Why the file was rejected, without its name (the error file names it)."""
    return e.message.removeprefix(f"{path.name}: ")


def _free_name(directory: Path, name: str) -> Path:
    """`directory/name`, or `name` with `.1`, `.2`, … before its suffix if taken."""
    target = directory / name
    if not os.path.lexists(target):
        return target
    stem, suffix = _split_suffix(name)
    for n in itertools.count(1):
        target = directory / f"{stem}.{n}{suffix}"
        if not os.path.lexists(target):
            return target
    raise AssertionError("unreachable")


def _split_suffix(name: str) -> tuple[str, str]:
    """("events", ".ndjson.gz") for "events.ndjson.gz": the suffix the inbox reads by."""
    lower = name.lower()
    gz = ".gz" if lower.endswith(".gz") else ""
    body = lower[: len(lower) - len(gz)]
    for suffix in SUFFIXES:
        if body.endswith(suffix) and len(body) > len(suffix):
            cut = len(name) - len(suffix) - len(gz)
            return name[:cut], name[cut:]
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot > 0 else (name, "")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
