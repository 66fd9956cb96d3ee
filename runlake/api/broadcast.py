"""The hub behind live streams (docs/stream.md): one reader of the log's new events,
many followers, none of them able to slow ingest.

The log's writer thread and the fold thread only hand a number (and the fold the
runs its batch changed) to the event loop (`call_soon_threadsafe`); they never wait
for a follower. On the loop, one pump task reads each stretch of newly durable
events once, encodes each event to JSON once, and offers the encoded events to
every follower's bounded queue. Each stream's own task (api/stream.py) writes its
queue to its client; a follower whose queue is over `stream_queue` messages is
marked overflowed and stops receiving (its task then sends `too_slow`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from aiohttp import web

from runlake.api.state import EVENT_LOG, FOLD, SETTINGS
from runlake.events import EventLog
from runlake.events.columns import row_to_event
from runlake.ingest.fold import ChangedRun

log = logging.getLogger("runlake.stream")

PUMP_ROWS = 16_384  # events read and encoded in one executor step
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class Item:
    """One durable event, encoded once for every follower."""

    seq: int
    component: str
    run_id: str | None
    type: str
    batch_id: str | None
    data: bytes  # the event as JSON, as the log holds it (with seq and received_at)


def encode_range(event_log: EventLog, first: int, last: int) -> list[Item]:
    """The log's events first..last as Items (blocking: run it off the loop)."""
    items: list[Item] = []
    for batch in event_log.read(first, last):
        for row in batch.to_pylist():
            items.append(Item(row["seq"], row["component"], row["run_id"], row["type"],
                              row["batch_id"], _json.encode(row_to_event(row))))
    return items


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What one stream shows; None: no restriction on that field."""

    components: frozenset[str] | None = None
    run_id: str | None = None
    types: frozenset[str] | None = None
    batch_id: str | None = None

    def matches(self, item: Item) -> bool:
        return ((self.components is None or item.component in self.components)
                and (self.run_id is None or item.run_id == self.run_id)
                and (self.types is None or item.type in self.types)
                and (self.batch_id is None or item.batch_id == self.batch_id))

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
    has been handed to the client's connection."""

    def __init__(self, stream_filter: StreamFilter, limit: int, position: int) -> None:
        self.filter = stream_filter
        self.limit = limit
        self.queue: deque[Item | Folded] = deque()
        self.seen = self.written = position
        self.overflowed = False
        self.closing: str | None = None  # why the stream must end (shutdown, key_revoked)
        self.wake = asyncio.Event()

    def offer(self, items: list[Item], end: int) -> None:
        if self.overflowed or self.closing:
            return
        if end <= self.seen:
            return
        matches, seen = self.filter.matches, self.seen
        self.queue.extend(it for it in items if it.seq > seen and matches(it))
        self.seen = end
        self._check()

    def offer_folded(self, seq: int, runs: list[ChangedRun]) -> None:
        if self.overflowed or self.closing:
            return
        self.queue.append(Folded(seq, [r for r in runs if self.filter.run_matches(r)]))
        self._check()

    def close(self, reason: str) -> None:
        self.closing = self.closing or reason
        self.wake.set()

    def _check(self) -> None:
        if len(self.queue) > self.limit:  # the client is too far behind: stop feeding it
            self.overflowed = True
            self.queue.clear()
        self.wake.set()


class Broadcaster:
    """The pump and the followers of one server (module docstring)."""

    def __init__(self, event_log: EventLog, max_streams: int) -> None:
        self.log = event_log
        self.max_streams = max_streams
        self.published = event_log.last_seq  # every event up to it was offered
        self.streams: set[Follower] = set()  # every open stream, catching up or live
        self.followers: set[Follower] = set()  # the live ones, offered new events
        self.too_slow = 0  # streams dropped for falling behind
        self.refused = 0  # streams refused at max_streams
        self._loop = asyncio.get_running_loop()
        self._pending = asyncio.Event()
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

    def forget(self, follower: Follower) -> None:
        self.followers.discard(follower)
        self.streams.discard(follower)

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
                end = min(last, self.published + PUMP_ROWS)
                try:
                    items = await self._loop.run_in_executor(
                        None, encode_range, self.log, self.published + 1, end)
                except Exception:  # keep serving; the followers resume from the log
                    log.exception("reading seq %d..%d for streams failed", self.published + 1,
                                  end)
                    for follower in list(self.followers):
                        follower.close("error")
                    self.followers.clear()
                    self.published = end
                    continue
                for follower in self.followers:
                    follower.offer(items, end)
                self.published = end
            self._release_folds()


BROADCASTER = web.AppKey("broadcaster", Broadcaster)


async def stream_context(app: web.Application) -> AsyncIterator[None]:
    """The hub, from once the data folder is open until it closes (app.py)."""
    hub = Broadcaster(app[EVENT_LOG], app[SETTINGS].max_streams)
    fold = app[FOLD]
    app[BROADCASTER] = hub
    app[EVENT_LOG].listeners.append(hub.on_commit)
    fold.listeners.append(hub.on_fold)
    hub.start()
    try:
        yield
    finally:
        fold.listeners.remove(hub.on_fold)
        app[EVENT_LOG].listeners.remove(hub.on_commit)
        await hub.stop()


async def close_streams(app: web.Application) -> None:
    """on_shutdown: before aiohttp waits for handlers, tell each stream to end, so
    every client gets its resume position and shutdown is never held up."""
    if (hub := app.get(BROADCASTER)) is not None:
        for follower in hub.streams:
            follower.close("shutdown")
