"""`client.follow` against a real server (docs/client.md, docs/stream.md): catch-up with
filters, live events and fold commits, errors it raises, `close()` from another thread,
and resuming after a graceful stop and a `kill -9` of the server with nothing missed
and nothing twice."""

from __future__ import annotations

import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from client_helpers import free_port
from helpers.server import ServerProcess, serve_in_thread, start_server_process
from runlake_client import Client, RunlakeError
from runlake_client.models import CaughtUp, Folded, Heartbeat, StreamEvent
from runlake_client.stream import Follow

from runlake.api.broadcast import BROADCASTER

GUARD_S = 120.0  # a guard against a hang, never a measurement


def sample_events() -> list[dict[str, Any]]:
    """Events over three components, five runs, two batches and four types."""
    events: list[dict[str, Any]] = []
    for i in range(60):
        c, r, b = ("alpha", "beta", "gamma")[i % 3], f"r{i % 5}", f"b{(i // 4) % 2}"
        kind = i % 4
        if kind == 0:
            e = {"type": "run", "component": c, "run_id": r, "batch_id": b, "model": "m"}
        elif kind == 1:
            e = {"type": "status", "component": c, "run_id": r, "status": "running"}
        elif kind == 2:
            e = {"type": "batch", "component": c, "batch_id": b}
        else:
            e = {"type": "metric", "component": c, "run_id": r, "name": "x", "value": float(i)}
        events.append({**e, "id": f"e{i}"})
    return events


# (the client's keywords, the same filter in plain Python)
FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({}, lambda e: True),
    ({"component": "alpha"}, lambda e: e["component"] == "alpha"),
    ({"component": ["alpha", "gamma"]}, lambda e: e["component"] in ("alpha", "gamma")),
    ({"run_id": "r2"}, lambda e: e.get("run_id") == "r2"),
    ({"type": ["status", "batch"]}, lambda e: e["type"] in ("status", "batch")),
    ({"batch_id": "b1"}, lambda e: e.get("batch_id") == "b1"),
    ({"component": "beta", "type": "run", "batch_id": "b0"},
     lambda e: e["component"] == "beta" and e["type"] == "run" and e.get("batch_id") == "b0"),
]


def post(url: str, events: list[dict[str, Any]]) -> list[int]:
    """POST over plain HTTP; the seqs the server acknowledged, in order."""
    req = urllib.request.Request(url + "/api/events", data=msgspec.json.encode(events),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=GUARD_S) as resp:
        body = msgspec.json.decode(resp.read())
    return list(range(body["first_seq"], body["last_seq"] + 1))


def read_until(follow: Follow, done: Callable[[list[Any]], bool]) -> list[Any]:
    """Messages until `done(messages)`; the server's short heartbeat keeps this loop
    turning, so a missing message fails at the guard instead of hanging."""
    got: list[Any] = []
    deadline = time.monotonic() + GUARD_S
    while not done(got):
        assert time.monotonic() < deadline, f"gave up after {len(got)} messages: {got[-5:]}"
        got.append(next(follow))
    return got


def first(f: Follow) -> Any:
    """`next(f)` in a thread, so a client that retries forever fails at the guard."""
    out: list[Any] = []

    def take() -> None:
        try:
            out.append(next(f))
        except BaseException as e:
            out.append(e)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(GUARD_S)
    f.close()
    assert out, "no message and no error"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def events_of(messages: list[Any]) -> list[StreamEvent]:
    return [m for m in messages if isinstance(m, StreamEvent)]


def test_catch_up_with_filters_matches_an_independent_filter(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server:
        url = server.client.url
        events = sample_events()
        seqs = post(url, events)
        client = Client(url, spool_dir=tmp_path / "spool")
        try:
            for filters, keep in FILTERS:
                with client.follow(after=0, until="caught_up", **filters) as f:
                    got = list(f)
                assert isinstance(got[-1], CaughtUp) and got[-1].seq == seqs[-1], filters
                want = [(s, e) for s, e in zip(seqs, events, strict=True) if keep(e)]
                shown = events_of(got)
                assert [m.seq for m in shown] == [s for s, _ in want], filters
                for m, (s, e) in zip(shown, want, strict=True):
                    assert (m.id, m.type, m.component, m.run_id) == (
                        e["id"], e["type"], e["component"], e.get("run_id"))
                    assert {k: m.event[k] for k in e} == e  # the event as it was sent
                    assert m.event["seq"] == s
            # `after` is exclusive: from the middle of the log
            middle = seqs[29]
            with client.follow(after=middle, until="caught_up") as f:
                got = list(f)
            assert [m.seq for m in events_of(got)] == seqs[30:]
        finally:
            client.close()


def test_live_events_then_folded_then_close(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server:
        url = server.client.url
        post(url, [{"type": "status", "component": "other", "run_id": "old",
                    "status": "running"}])
        client = Client(url, spool_dir=tmp_path / "spool")
        f = client.follow(component="live")  # default: only new events
        try:
            first = next(f)
            assert isinstance(first, CaughtUp)  # nothing of the log before it
            events = [{"type": "status", "component": "live", "run_id": f"r{i}",
                       "status": "completed", "id": f"live-{i}"} for i in range(5)]
            noise = [{"type": "status", "component": "other", "run_id": "x",
                      "status": "running"}]
            seqs = post(url, events[:2] + noise + events[2:])
            want = seqs[:2] + seqs[3:]

            def folded_all(got: list[Any]) -> bool:
                return any(isinstance(m, Folded) and m.seq >= seqs[-1] for m in got)

            got = read_until(f, folded_all)
            shown = events_of(got)
            assert [m.seq for m in shown] == want
            assert [m.id for m in shown] == [e["id"] for e in events]
            folded_runs = {(r.component, r.run_id, r.status) for m in got
                           if isinstance(m, Folded) for r in m.runs}
            assert folded_runs == {("live", f"r{i}", "completed") for i in range(5)}
            # a Folded never comes before the events it covers
            for i, m in enumerate(got):
                if isinstance(m, Folded):
                    assert all(e.seq <= m.seq for e in events_of(got[:i]))
                    assert not any(e.seq <= m.seq for e in events_of(got[i + 1:]))
            assert f.position is not None and f.position >= want[-1]
        finally:
            f.close()
            client.close()
        with pytest.raises(StopIteration):
            next(f)


def test_answers_a_retry_cannot_fix_raise_runlake_error(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server:
        url = server.client.url
        seqs = post(url, sample_events()[:3])
        client = Client(url, spool_dir=tmp_path / "spool")
        try:
            with pytest.raises(RunlakeError) as bad_type:
                first(client.follow(after=0, type="nope"))
            assert bad_type.value.status == 400
            assert "type" in str(bad_type.value) and "metric" in str(bad_type.value)
            with pytest.raises(RunlakeError) as past:
                first(client.follow(after=seqs[-1] + 1))
            assert past.value.status == 400 and "after" in str(past.value)
            with pytest.raises(ValueError, match="after"):
                client.follow(after=-1)
        finally:
            client.close()


def test_close_from_another_thread_ends_a_blocked_follow(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server:
        client = Client(server.client.url, spool_dir=tmp_path / "spool")
        f = client.follow(after="end")
        caught_up = threading.Event()
        outcome: list[Any] = []

        def consume() -> None:
            try:
                for m in f:
                    if isinstance(m, CaughtUp):
                        caught_up.set()  # next() now blocks: no event, no heartbeat for 15 s
                outcome.append("ended")
            except BaseException as e:
                outcome.append(e)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            assert caught_up.wait(GUARD_S)
            f.close()
            thread.join(GUARD_S)
            assert not thread.is_alive()
            assert outcome == ["ended"]
            assert f.reconnects == 0
        finally:
            f.close()
            client.close()


def test_resume_across_a_stop_and_a_kill_9_misses_nothing_and_repeats_nothing(
        tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    flags = {"port": port, "stream_heartbeat_s": 0.2, "stream_retry_ms": 100}
    server: ServerProcess = start_server_process(data, **flags)
    url = server.url
    client = Client(url, spool_dir=tmp_path / "spool", backoff_s=0.05, max_backoff_s=0.5)
    f = client.follow(after=0, component="keep")
    # A consumer thread keeps reading, so the client also meets the server while it is
    # down (connection refused) and must back off and come back.
    messages: queue.Queue[Any] = queue.Queue()

    def consume() -> None:
        try:
            for m in f:
                messages.put(m)
        except BaseException as e:
            messages.put(e)

    sent: list[str] = []
    seqs: list[int] = []
    got: list[Any] = []

    def send(round_: str, n: int) -> None:
        events: list[dict[str, Any]] = []
        for i in range(n):
            events.append({"type": "metric", "component": "keep", "run_id": round_,
                           "name": "x", "value": float(i), "id": f"{round_}-{i}"})
            events.append({"type": "metric", "component": "skip", "run_id": round_,
                           "name": "x", "value": float(i)})
        acked = post(url, events)
        sent.extend(e["id"] for e in events[::2])
        seqs.extend(acked[::2])

    def take_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + GUARD_S
        while not done():
            m = messages.get(timeout=max(0.0, deadline - time.monotonic()))
            assert not isinstance(m, BaseException), m
            got.append(m)

    def seen_all() -> bool:
        return any(isinstance(m, StreamEvent) and m.id == sent[-1] for m in got)

    def refused_while_down(before: int) -> None:
        """Poll until the client has failed to connect at least twice."""
        deadline = time.monotonic() + GUARD_S
        while f.reconnects < before + 2:
            assert time.monotonic() < deadline, "the client never tried to reconnect"
            time.sleep(0.01)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        send("a", 50)
        take_until(seen_all)
        before = f.reconnects
        server.stop()  # graceful: the stream gets `closed` with its resume position
        refused_while_down(before)
        server = start_server_process(data, **flags)
        send("b", 50)
        take_until(seen_all)
        before = f.reconnects
        server.kill()  # kill -9: the connection just breaks
        refused_while_down(before)
        server = start_server_process(data, **flags)
        send("c", 50)
        take_until(seen_all)
        # two heartbeats more: anything repeated would come before them
        beats = sum(isinstance(m, Heartbeat) for m in got)
        take_until(lambda: sum(isinstance(m, Heartbeat) for m in got) >= beats + 2)
    finally:
        f.close()
        thread.join(GUARD_S)
        client.close()
        server.stop()
    assert not thread.is_alive()
    shown = events_of(got)
    assert [m.id for m in shown] == sent  # nothing missed, nothing twice, in order
    assert [m.seq for m in shown] == seqs


def test_too_slow_follower_resumes_where_the_server_dropped_it(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path, stream_queue=4) as server:
        url = server.client.url
        hub = server.client.app[BROADCASTER]  # type: ignore[index]
        client = Client(url, spool_dir=tmp_path / "spool")
        f = client.follow(after="end")
        try:
            assert isinstance(next(f), CaughtUp)
            # Read nothing: the server's writes stall once the socket buffers fill, its
            # queue for this follower overflows, and it sends too_slow and hangs up.
            big = "x" * 16_000
            ids: list[str] = []
            for i in range(2000):
                if hub.too_slow:
                    break
                batch = [{"type": "log", "component": "a", "run_id": "r", "level": "info",
                          "message": big, "id": f"log-{i}-{j}"} for j in range(40)]
                post(url, batch)
                ids += [e["id"] for e in batch]
                assert i < 1999, "never dropped"
            got = read_until(f, lambda g: any(isinstance(m, StreamEvent) and m.id == ids[-1]
                                              for m in g))
            assert [m.id for m in events_of(got)] == ids  # nothing missed, nothing twice
            assert f.reconnects >= 1
        finally:
            f.close()
            client.close()
