"""Ingest first (docs/stream.md): while an ingest request is in flight, live streams'
fan-out takes at most `stream_share` of the server's time. With the share at 0, a
follower (live or catching up) gets nothing while a real POST is held in flight, then
everything exactly once when ingest goes idle.

The POST is held with the log's own listener hook: a listener that blocks the log's
writer thread on a commit, so that the next POST waits for its fsync, in flight.
Two gates: `first` (before the broadcaster's listener) holds the writer on A's commit
until B is queued behind it; `second` (after it) holds the writer once the streams
have heard of A, so A is durable and acknowledged while B is still in flight."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from helpers.server import Client, make_server
from helpers.stream_client import Message
from test_stream import GUARD_S, KINDS, event_seqs, metric, post, read_until, run, stream

from runlake.api.ingest_first import INGEST_FIRST, IngestFirst


class Gate:
    """A log listener holding the log's writer thread in its first call until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, last_seq: int) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.opened.wait(GUARD_S)  # a guard: a failing test must not hang the writer

    async def wait_entered(self) -> None:
        async with asyncio.timeout(GUARD_S):
            await asyncio.to_thread(self.entered.wait, GUARD_S)


async def until(check: Callable[[], bool]) -> None:
    """Poll a condition of the server's state (the server runs on this loop)."""
    async with asyncio.timeout(GUARD_S):  # a hang guard, not a measurement
        while not check():
            await asyncio.sleep(0.005)


async def hold_b_after_a(client: Client) -> tuple[list[int], asyncio.Task[list[int]], Gate]:
    """Post A (acknowledged, durable, told to the streams) and B, held in flight behind
    the log's writer: B's seqs come from the returned task once the gate opens."""
    log = client.event_log
    share = client.app[INGEST_FIRST]  # type: ignore[index]
    first, second = Gate(), Gate()
    log.listeners.insert(0, first)  # before the broadcaster's: it does not hear of A yet
    log.listeners.append(second)
    try:
        a = await post(client, [metric("a", "r", i) for i in range(3)])
        await first.wait_entered()
        b = asyncio.create_task(post(client, [metric("b", "r", i) for i in range(4)]))
        await until(lambda: share.in_flight == 1)
        first.opened.set()  # the broadcaster hears of A; the writer then holds in `second`
        await second.wait_entered()
    except BaseException:  # never leave the writer held: the server could not stop
        first.opened.set()
        second.opened.set()
        raise
    return a, b, second


@pytest.mark.parametrize("kind", KINDS)
def test_live_follower_waits_while_ingest_is_in_flight(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path, stream_share=0.0) as client:
            share: IngestFirst = client.app[INGEST_FIRST]  # type: ignore[index]
            async with stream(client, kind, "?after=end") as messages:
                await read_until(messages, lambda m: m.kind == "caught_up")
                held = share.held
                a, b_task, gate = await hold_b_after_a(client)
                try:
                    first_event = asyncio.create_task(
                        read_until(messages, lambda m: m.kind == "event"))
                    # Either the fan-out is held back, or (without ingest first) A
                    # reaches the follower while B is still in flight.
                    await until(lambda: first_event.done() or share.held > held)
                    assert not first_event.done(), "delivered while ingest was in flight"
                    assert share.in_flight == 1
                finally:
                    gate.opened.set()
                b = await b_task  # acknowledged: ingest is idle
                got = await first_event
                got = await read_until(messages, lambda m: m.kind == "event"
                                       and m.seq == b[-1], got)
                c = await post(client, [metric("c", "r", 0)])
                got = await read_until(messages, lambda m: m.kind == "event"
                                       and m.seq == c[-1], got)
            assert event_seqs(got) == a + b + c  # each exactly once, in order
    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_catch_up_waits_while_ingest_is_in_flight(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path, stream_share=0.0) as client:
            share: IngestFirst = client.app[INGEST_FIRST]  # type: ignore[index]
            a, b_task, gate = await hold_b_after_a(client)
            got: list[Message] = []
            try:
                held = share.held
                async with stream(client, kind, "?after=0&until=caught_up") as messages:
                    reading = asyncio.create_task(_drain(messages, got))
                    await until(lambda: reading.done() or bool(got) or share.held > held)
                    assert got == [], "caught up while ingest was in flight"
                    gate.opened.set()
                    b = await b_task
                    await reading
            finally:
                gate.opened.set()
            # The catch-up reads to the log's end when it starts reading: A, then B.
            assert event_seqs(got) == a + b
            assert got[-1].kind == "caught_up" and got[-1].data["seq"] == b[-1]
    run(main())


async def _drain(messages: AsyncIterator[Message], into: list[Message]) -> None:
    await read_until(messages, lambda m: False, into)


def test_share_budget_holds_back_then_lets_through() -> None:
    """The budget's arithmetic, on a loop of its own: idle, anything runs; busy, up to
    share x window per window, an excess paid back over the windows after it."""
    async def main() -> None:
        share = IngestFirst(0.5, window_s=3600.0, idle_after_s=0.0)  # a window no test outlives
        assert share.may_run()
        share.spend(10.0)  # idle: not counted
        with share.ingesting():
            assert share.may_run()
            share.spend(1000.0)  # under 0.5 x 3600
            assert share.may_run()
            share.spend(900.0)
            assert not share.may_run()
            # A window later its budget (1800) pays the excess back: 1900 - 1800 used.
            # (Half a window more: window_start + window_s - window_start need not
            # come back as exactly one window in floating point.)
            share._roll(share._window_start + 1.5 * share.window_s)
            assert share.may_run()
            share.spend(1800.0)
            assert not share.may_run()
            wake = asyncio.Event()
            share.park(wake)
        async with asyncio.timeout(GUARD_S):
            await wake.wait()  # ingest went idle: the parked work may run
        assert share.may_run()
        with share.ingesting():  # a fresh window when ingest starts again
            assert share.may_run()
    run(main())


def test_parked_work_is_released_one_per_loop_turn() -> None:
    """Released one at a time, the loop's own order deciding (no timing): an ingest
    request counted in between keeps the rest parked."""
    async def main() -> None:
        share = IngestFirst(0.0, idle_after_s=0.0)
        wakes = [asyncio.Event() for _ in range(3)]
        with share.ingesting():
            for wake in wakes:
                assert not share.may_run()
                share.park(wake)
        # Idle: the release was scheduled before this task yields, so it runs first.
        await asyncio.sleep(0)
        assert [w.is_set() for w in wakes] == [True, False, False]
        with share.ingesting():  # ingest arrives before the next turn
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert [w.is_set() for w in wakes] == [True, False, False]
        async with asyncio.timeout(GUARD_S):
            await wakes[2].wait()
        assert all(w.is_set() for w in wakes)
    run(main())
