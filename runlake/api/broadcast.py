"""The hub behind live streams (docs/stream.md): one reader of the log's new events,
many followers, none of them able to slow ingest.

The log's writer thread and the fold thread only hand a number (and the fold the
runs its batch changed) to the event loop (`call_soon_threadsafe`); they never wait
for a follower. On the loop, one pump task reads each stretch of newly durable
events once, encodes each event to JSON once, and offers the encoded stretch to
every follower's bounded queue: the stretch itself, or what the follower's filter
shows of it, selected once per distinct filter (fan-out costs per follower per
stretch, not per event). Each stream's own task (api/stream.py) writes its
queue to its client; a follower whose queue is over `stream_queue` messages is
marked overflowed and stops receiving (its task then sends `too_slow`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from aiohttp import web

from runlake.api.ingest_first import INGEST_FIRST, IngestFirst
from runlake.api.state import EVENT_LOG, FOLD, SETTINGS
from runlake.events import EventLog
from runlake.events.columns import LOG_SCHEMA, wire_rows
from runlake.ingest.fold import ChangedRun, Fold

log = logging.getLogger("runlake.stream")

PUMP_ROWS = 16_384  # events read and encoded in one executor step
# ... while ingest is busy (api/ingest_first.py): one step holds the GIL for its
# encoding, and ingest's requests wait that long.
BUSY_ROWS = 1_024
CATCH_UP_SLOTS = 2  # catch-up steps in flight at once, over every stream
_json = msgspec.json.Encoder()
_UNSEEN: Any = object()  # a filter class not asked about yet


class Chunk:
    """Consecutive durable events, encoded once for every follower: a table of seq,
    component, run_id, type, batch_id, sse (each event's SSE message, binary) and ws
    (its WebSocket message). Followers filter it with Arrow
    compute, once per filter class, and send its SSE messages as one piece: no Python
    work per event and follower."""

    __slots__ = ("table", "_selected", "_sse", "_ws")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._sse: bytes | None = None
        self._ws: list[str] | None = None
        # What each filter class shows of this chunk, filtered once for all the
        # followers that share it (the same key's components, the same query).
        self._selected: dict[StreamFilter, Chunk | None] = {}

    def __len__(self) -> int:
        return self.table.num_rows

    def sse(self) -> bytes:
        """Every event's SSE message, in order, in one piece (built on first use)."""
        if self._sse is None:
            column = self.table.column("sse").combine_chunks()
            if len(column) == 0:
                self._sse = b""
            else:  # a binary array's data buffer holds its values back to back
                _, offsets, data = column.buffers()
                at = memoryview(offsets).cast("i")  # int32 offsets into data
                first, last = at[column.offset], at[column.offset + len(column)]
                self._sse = data.slice(first, last - first).to_pybytes()
        return self._sse

    def ws(self) -> list[str]:
        """Every event's WebSocket message, in order (built on first use, then shared)."""
        if self._ws is None:
            self._ws = self.table.column("ws").to_pylist()
        return self._ws

    def select(self, stream: StreamFilter, after: int = 0) -> Chunk:
        """The events past seq `after` that `stream` shows (self when that is all).
        Without a cut at `after` the answer is kept: every follower of the same
        filter gets the same Chunk, so its SSE bytes and WS messages are built once."""
        if len(self) and after >= self.table.column("seq")[0].as_py():
            past = pc.greater(self.table.column("seq"), after)
            mask = stream.mask(self.table)
            return Chunk(self.table.filter(past if mask is None else pc.and_(mask, past)))
        if (shown := self._selected.get(stream, _UNSEEN)) is _UNSEEN:
            mask = stream.mask(self.table)
            # None for "all of it": the chunk holding itself would be a reference cycle,
            # freed only by the cycle collector.
            shown = self._selected[stream] = None if mask is None else Chunk(
                self.table.filter(mask))
        return self if shown is None else shown


def encode_range(event_log: EventLog, first: int, last: int,
                 stream: StreamFilter | None = None) -> Chunk:
    """The log's events first..last as one Chunk (blocking: run it off the loop); with
    `stream`, only those it shows: a catch-up encodes what its client will get, not
    the whole log (encoding holds the GIL that ingest needs)."""
    # One table first: a tail of single-event commits reads as thousands of batches,
    # and each encode step has a fixed cost.
    rows = pa.Table.from_batches(list(event_log.read(first, last)), schema=LOG_SCHEMA)
    if stream is not None and (mask := stream.mask(rows)) is not None:
        rows = rows.filter(mask)
    return Chunk(encode_batch(rows.combine_chunks()))


def encode_batch(batch: pa.Table | pa.RecordBatch) -> pa.Table:
    """Log rows as a Chunk's table: each event in wire form plus `seq`, `received_at`
    and its `id` (`@<seq>` when the client gave none), as `row_to_event` gives it,
    built column by column per event type (row by row it cost more than the append)."""
    n = batch.num_rows
    seqs = batch.column("seq").to_pylist()
    ids = [f"@{seq}" if i is None else i
           for i, seq in zip(batch.column("id").to_pylist(), seqs, strict=True)]
    events = wire_rows(batch, first=(("seq", seqs),), last=(
        ("id", ids), ("ts", _rfc3339(batch.column("ts"))),
        ("received_at", _rfc3339(batch.column("received_at")))))
    # One call for all: JSON text holds no raw newline, so the lines are the events.
    encoded = _json.encode_lines(events).split(b"\n")[:n]
    return pa.table({
        "seq": batch.column("seq"), "component": batch.column("component"),
        "run_id": batch.column("run_id"), "type": batch.column("type"),
        "batch_id": batch.column("batch_id"),
        "sse": pa.array([b"id: %d\ndata: %s\n\n" % pair
                         for pair in zip(seqs, encoded, strict=True)], pa.binary()),
        "ws": pa.array([b'{"type":"event","event":%s}' % d for d in encoded],
                       pa.binary()).cast(pa.string()),
    })


def _rfc3339(column: pa.Array) -> list[str]:
    """UTC times as RFC 3339 text with microseconds: cast as naive (the values are
    UTC), which is several times faster than strftime's time-zone path."""
    text = pc.replace_substring(column.cast(pa.timestamp("us")).cast(pa.string()), " ", "T")
    return pc.binary_join_element_wise(text, "Z", "").to_pylist()


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What one stream shows; None: no restriction on that field."""

    components: frozenset[str] | None = None
    run_id: str | None = None
    types: frozenset[str] | None = None
    batch_id: str | None = None

    def mask(self, table: pa.Table) -> Any:
        """Which rows of a Chunk's table the stream shows; None: every one."""
        conditions = []
        for name, values in (("component", self.components), ("type", self.types)):
            if values is not None:
                conditions.append(pc.is_in(table.column(name),
                                           value_set=pa.array(sorted(values), pa.string())))
        for name, value in (("run_id", self.run_id), ("batch_id", self.batch_id)):
            if value is not None:
                conditions.append(pc.fill_null(pc.equal(table.column(name), value), False))
        mask = None
        for condition in conditions:
            mask = condition if mask is None else pc.and_(mask, condition)
        return mask

    def run_matches(self, run: ChangedRun) -> bool:
        component, run_id, _, batch_id = run
        return ((self.components is None or component in self.components)
                and (self.run_id is None or run_id == self.run_id)
                and (self.batch_id is None or batch_id == self.batch_id))


@dataclass(slots=True)
class Folded:
    """A fold commit: the new high-water mark and the runs it changed (filtered)."""

    seq: int
    runs: list[ChangedRun]


class Follower:
    """One stream's queue. `seen`: every event up to it was offered (the matching
    ones queued); `written`: the resume position, every matching event up to it
    has been handed to the client's connection. `queued` counts messages."""

    def __init__(self, stream_filter: StreamFilter, limit: int, position: int) -> None:
        self.filter = stream_filter
        self.limit = limit
        self.queue: deque[Chunk | Folded] = deque()
        self.queued = 0
        self.seen = self.written = position
        self.overflowed = False
        self.closing: str | None = None  # why the stream must end (shutdown, key_revoked)
        self.wake = asyncio.Event()
        # Parked on the fan-out's share: new events need not wake it (the share will,
        # a queue overflow or a close will).
        self.held = False

    def offer(self, chunk: Chunk, end: int) -> None:
        """Queue what the stream shows of `chunk`, every event up to seq `end`."""
        if self.overflowed or self.closing or end <= self.seen:
            return
        shown = chunk.select(self.filter, self.seen)
        self.seen = end
        if len(shown):
            self.queue.append(shown)
            self.queued += len(shown)
            self._check()

    def offer_folded(self, seq: int, runs: list[ChangedRun]) -> None:
        if self.overflowed or self.closing:
            return
        self.queue.append(Folded(seq, [r for r in runs if self.filter.run_matches(r)]))
        self.queued += 1
        self._check()

    def take(self) -> list[Chunk | Folded]:
        taken = list(self.queue)
        self.queue.clear()
        self.queued = 0
        return taken

    def close(self, reason: str) -> None:
        self.closing = self.closing or reason
        self.wake.set()

    def _check(self) -> None:
        if self.queued > self.limit:  # the client is too far behind: stop feeding it
            self.overflowed = True
            self.take()
            self.wake.set()
        elif not self.held:
            self.wake.set()


class Broadcaster:
    """The pump and the followers of one server (module docstring)."""

    def __init__(self, event_log: EventLog, fold: Fold, max_streams: int,
                 share: IngestFirst) -> None:
        self.log, self.fold = event_log, fold
        self.max_streams = max_streams
        self.share = share  # the fan-out's time while ingest is busy
        self.published = event_log.last_seq  # every event up to it was offered
        self.streams: set[Follower] = set()  # every open stream, catching up or live
        self.followers: set[Follower] = set()  # the live ones, offered new events
        self.too_slow = 0  # streams dropped for falling behind
        self.refused = 0  # streams refused at max_streams
        # Catch-up steps running at once: many clients replaying the log must not take
        # every executor thread (request decoding, reads) nor the GIL from ingest.
        self.catch_up_slots = asyncio.Semaphore(CATCH_UP_SLOTS)
        self._loop = asyncio.get_running_loop()
        self._pending = asyncio.Event()
        self._turn = asyncio.Event()  # the pump's, parked while ingest comes first
        self._signalled = False
        self._folds: deque[Folded] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="runlake-stream-pump")

    async def stop(self) -> None:
        for follower in self.streams:
            follower.close("shutdown")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # -- called on the log's writer thread and the fold thread: hand over, never wait --

    def on_commit(self, last_seq: int) -> None:
        if self._signalled:  # a wake-up is on its way; the pump reads last_seq then
            return
        self._signalled = True
        try:
            self._loop.call_soon_threadsafe(self._pending.set)
        except RuntimeError:  # the loop has closed: nobody is streaming
            pass

    def on_fold(self, folded_seq: int, runs: list[ChangedRun]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._folded, folded_seq, runs)
        except RuntimeError:
            pass

    # -- on the loop ------------------------------------------------------------

    def follow(self, follower: Follower) -> None:
        """Make a stream live from its position, which must be `published` or past it
        (a client resuming from an acknowledged seq the pump has not reached yet)."""
        assert follower.written >= self.published, "follow only once caught up"
        follower.seen = follower.written
        self.followers.add(follower)
        self._listen_to_fold()

    def forget(self, follower: Follower) -> None:
        self.followers.discard(follower)
        self._listen_to_fold()
        self.streams.discard(follower)

    def _listen_to_fold(self) -> None:
        """Be the fold's listener only while a stream is live: the fold asks DuckDB
        which runs a batch changed only for its listeners."""
        listening = self.on_fold in self.fold.listeners
        if self.followers and not listening:
            self.fold.listeners.append(self.on_fold)
        elif not self.followers and listening:
            self.fold.listeners.remove(self.on_fold)

    def _folded(self, seq: int, runs: list[ChangedRun]) -> None:
        self._folds.append(Folded(seq, runs))
        self._release_folds()

    def _release_folds(self) -> None:
        """Offer fold messages once the events they cover were offered: a client
        sees `folded` after the events it names."""
        while self._folds and self._folds[0].seq <= self.published:
            folded = self._folds.popleft()
            for follower in self.followers:
                follower.offer_folded(folded.seq, folded.runs)

    async def _pump(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            self._signalled = False
            while self.published < (last := self.log.last_seq):
                if not self.followers:  # nobody live to offer them to: skip the read
                    self.published = last
                    break
                if not self.share.may_run():
                    # Ingest first: past the fan-out's share the pump waits, and the
                    # followers with it (they then get bigger stretches, or too_slow).
                    await self.share.turn(self._turn)
                    continue
                end = min(last, self.published + (
                    BUSY_ROWS if self.share.busy else PUMP_ROWS))
                try:
                    chunk = await self.share.call(encode_range, self.log, self.published + 1,
                                                  end)
                except Exception:  # keep serving; the followers resume from the log
                    log.exception("reading seq %d..%d for streams failed", self.published + 1,
                                  end)
                    for follower in list(self.followers):
                        follower.close("error")
                    self.followers.clear()
                    self._listen_to_fold()
                    self.published = end
                    continue
                with self.share.metered():
                    for follower in self.followers:
                        follower.offer(chunk, end)
                self.published = end
            self._release_folds()


BROADCASTER = web.AppKey("broadcaster", Broadcaster)


async def stream_context(app: web.Application) -> AsyncIterator[None]:
    """The hub, from once the data folder is open until it closes (app.py)."""
    settings = app[SETTINGS]
    share = app[INGEST_FIRST] = IngestFirst(settings.stream_share)
    hub = Broadcaster(app[EVENT_LOG], app[FOLD], settings.max_streams, share)
    app[BROADCASTER] = hub
    app[EVENT_LOG].listeners.append(hub.on_commit)
    hub.start()
    try:
        yield
    finally:
        hub.followers.clear()
        hub._listen_to_fold()
        app[EVENT_LOG].listeners.remove(hub.on_commit)
        await hub.stop()


async def close_streams(app: web.Application) -> None:
    """on_shutdown: before aiohttp waits for handlers, tell each stream to end, so
    every client gets its resume position and shutdown is never held up."""
    if (hub := app.get(BROADCASTER)) is not None:
        for follower in hub.streams:
            follower.close("shutdown")
