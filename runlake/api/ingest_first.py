"""Ingest first (docs/stream.md, "Ingest first"): while ingest is busy (requests in
flight, or one ended under `IDLE_AFTER_S` ago), the live streams' fan-out (the pump's
reads and encoding, catch-up reads, the writes to followers) may use at most
`stream_share` of the server's time.

Requests to the routes of the `ingest` role are counted in and out (`ingesting`, in
routes.py). The fan-out asks `may_run` before each piece of work and reports the time
the work took (`spend`, `metered`, `timed`, `call`); past its share in the current
window it parks an asyncio event (`park`) and waits, with no thread sleeping, until
ingest goes idle or enough windows have passed to pay the excess back; parked work is
released one piece per turn of the loop. While ingest is idle nothing is counted: the
fan-out runs unthrottled, and gets a fresh window when ingest starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

# Short, so a follower held back waits a fraction of a second between turns, and long
# enough that a window's budget holds a few followers' writes.
WINDOW_S = 0.05
# Ingest counts as idle only once no request has been in flight for this long: a
# flood's requests leave gaps between them (the response's trip, the client's next
# body, read before the handler counts it) that are not idle time to hand out.
IDLE_AFTER_S = 0.003


class IngestFirst:
    """Ingest requests in flight, and the fan-out's time budget while there are any."""

    def __init__(self, share: float, window_s: float = WINDOW_S,
                 idle_after_s: float = IDLE_AFTER_S) -> None:
        self.share = share
        self.window_s = window_s
        self.idle_after_s = idle_after_s
        self.in_flight = 0  # ingest requests being decoded or appended
        self._busy_until = 0.0  # perf_counter time: the last request ended plus idle_after_s
        self.held = 0  # times a piece of fan-out work was held back (parked)
        self._loop = asyncio.get_running_loop()
        self._window_start = time.perf_counter()
        self._used = 0.0  # fan-out seconds counted in this window (excess carries over)
        self._parked: dict[asyncio.Event, None] = {}  # in order: woken first, first served
        self._timer: asyncio.TimerHandle | None = None
        self._releasing = False  # a release of parked work is scheduled

    # -- ingest ---------------------------------------------------------------

    @contextmanager
    def ingesting(self) -> Iterator[None]:
        """Count one ingest request in flight for the block's duration."""
        if not self.busy:  # ingest starts: the fan-out gets a fresh window
            self._window_start, self._used = time.perf_counter(), 0.0
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._busy_until = time.perf_counter() + self.idle_after_s
                self._release_soon()

    @property
    def busy(self) -> bool:
        """Whether ingest comes first now: a request in flight, or one just ended."""
        return self.in_flight > 0 or time.perf_counter() < self._busy_until

    # -- the fan-out ----------------------------------------------------------

    def may_run(self) -> bool:
        """Whether fan-out work may run now: ingest is idle, or the window's budget
        is not used up."""
        if not self.busy:
            return True
        self._roll(time.perf_counter())
        return self._used < self.share * self.window_s

    def park(self, wake: asyncio.Event) -> None:
        """Set `wake` once the fan-out may run again (ingest idle or the budget paid
        back). Call right after `may_run` said no, with no await between."""
        self.held += 1
        self._parked[wake] = None
        if self.may_run():
            self._release_soon()
        else:
            self._wake_later()

    async def turn(self, wake: asyncio.Event, ready: Callable[[], bool] = lambda: False
                   ) -> None:
        """Wait until the fan-out may run, or `ready()` (checked whenever `wake` is set
        by someone else, e.g. a stream told to close)."""
        while not self.may_run() and not ready():
            wake.clear()
            self.park(wake)
            await wake.wait()

    def spend(self, seconds: float) -> None:
        """Count fan-out time (only while ingest is in flight does it limit anything)."""
        if self.busy:
            self._roll(time.perf_counter())
            self._used += seconds

    @contextmanager
    def metered(self) -> Iterator[None]:
        """Count the block's time (work on the loop that does not await)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.spend(time.perf_counter() - start)

    async def timed(self, work: Awaitable[T]) -> T:
        """Await `work` (a write to a client), counting its time up to its first
        suspension: a write suspends only to wait for a slow client's socket to drain,
        and that wait is the client's time, not the server's. The mark is a callback
        that runs only once this task has yielded to the loop."""
        marks: list[float] = []
        start = time.perf_counter()
        handle = self._loop.call_soon(lambda: marks.append(time.perf_counter()))
        try:
            return await work
        finally:
            handle.cancel()
            self.spend((marks[0] if marks else time.perf_counter()) - start)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the default executor, counting the CPU time of the thread
        that runs it (its wall time would count waits for the GIL that ingest holds)."""
        def measured() -> tuple[T, float]:
            start = time.thread_time()
            result = fn(*args)
            return result, time.thread_time() - start

        result, cpu = await self._loop.run_in_executor(None, measured)
        self.spend(cpu)
        return result

    # -- internals --------------------------------------------------------------

    def _roll(self, now: float) -> None:
        """Move the window on, each window passed paying its budget off the excess."""
        passed = int((now - self._window_start) / self.window_s)
        if passed > 0:
            self._window_start += passed * self.window_s
            self._used = max(0.0, self._used - passed * self.share * self.window_s)

    def _wake_later(self) -> None:
        """Release parked work when it may run again: once ingest is idle (its last
        request ended `idle_after_s` ago), or once the windows passed pay the excess
        back (share 0: never; only ingest going idle releases it)."""
        now = time.perf_counter()
        if self.in_flight == 0:
            at = self._busy_until
        elif (budget := self.share * self.window_s) > 0:
            at = self._window_start + max(1, int(self._used / budget)) * self.window_s
        else:
            return
        when = self._loop.time() + max(0.0, at - now)
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._release_soon()

    def _release_soon(self) -> None:
        if not self._releasing and self._parked:
            self._releasing = True
            self._loop.call_soon(self._release_next)

    def _release_next(self) -> None:
        """Wake one piece of parked work, then the next on the loop's next turn: the
        loop polls its sockets in between, so an ingest request arriving meanwhile is
        counted before the rest runs (woken all at once, a hundred followers' writes
        would all go ahead of it)."""
        self._releasing = False
        while self._parked:
            if not self.may_run():
                self._wake_later()
                return
            wake = next(iter(self._parked))
            del self._parked[wake]
            if not wake.is_set():  # else woken already by someone else
                wake.set()
                self._release_soon()
                return


INGEST_FIRST = web.AppKey("ingest_first", IngestFirst)
