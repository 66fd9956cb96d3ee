"""Live streams (docs/stream.md) against a real server on a free port, with aiohttp's
SSE and WebSocket clients: catch-up over segments and the tail then live, resume with
Last-Event-ID while ingest goes on, filters against an independent filter, component
limits, folded then a min_seq read, too_slow, the stream limit, shutdown, revoked keys,
bad input."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers.server import Client, make_server
from helpers.stream_client import Message, sse_messages, ws_messages

from runlake.api.broadcast import BROADCASTER
from runlake.api.keys import add_key, revoke_key

GUARD_S = 60.0  # a hang guard, never a measurement
KINDS = ("sse", "ws")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def metric(component: str, run_id: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "metric", "component": component, "run_id": run_id, "name": "x",
            "value": float(i), **extra}


async def post(client: Client, events: list[dict[str, Any]],
               key: str | None = None) -> list[int]:
    """Post `events`; the seqs the server gave them (from its acknowledgement)."""
    headers = {"X-API-Key": key} if key else None
    reply = await client.request("POST", "/api/events", json=events, headers=headers)
    assert reply.status == 202, reply.body
    body = reply.json()
    return list(range(body["first_seq"], body["last_seq"] + 1))


@contextlib.asynccontextmanager
async def stream(client: Client, kind: str, query: str = "", headers: dict[str, str] | None = None,
                 session: aiohttp.ClientSession | None = None) -> AsyncIterator[
                     AsyncIterator[Message]]:
    """The stream's messages, over SSE or WebSocket."""
    session = session or client.session
    if kind == "sse":
        async with session.get(f"{client.url}/api/stream{query}", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["X-Accel-Buffering"] == "no"
            assert "Content-Encoding" not in resp.headers
            yield sse_messages(resp)
    else:
        async with session.ws_connect(f"{client.url}/api/stream/ws{query}",
                                      headers=headers) as ws:
            yield ws_messages(ws)


async def read_until(messages: AsyncIterator[Message], done: Callable[[Message], bool],
                     into: list[Message] | None = None) -> list[Message]:
    out = [] if into is None else into
    async with asyncio.timeout(GUARD_S):
        async for m in messages:
            out.append(m)
            if done(m):
                return out
    return out


def event_seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages if m.kind == "event"]


@pytest.mark.parametrize("kind", KINDS)
def test_catch_up_over_segments_and_tail_then_live(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path, roll_rows=30) as client:
            acked: list[int] = []
            for b in range(5):
                acked += await post(client, [metric("a", f"r{i % 4}", i) for i in range(b, b + 20)])
            log = client.event_log
            async with asyncio.timeout(GUARD_S):  # the roller writes segments off the writer
                while len(log.segments()) < 2:
                    await asyncio.sleep(0.01)
            assert log.segments()[-1].last < log.last_seq, "some events must be in the tail only"
            async with stream(client, kind, "?after=0") as messages:
                got = await read_until(messages, lambda m: m.kind == "caught_up")
                assert got[-1].data["seq"] == acked[-1]
                assert event_seqs(got) == acked  # each exactly once, in seq order
                live = await post(client, [metric("b", "r9", i) for i in range(7)])
                more = await read_until(messages, lambda m: m.kind == "event"
                                        and m.seq == live[-1])
            assert event_seqs(more) == live
            first = got[0].data
            assert first["seq"] == 1 and first["component"] == "a" and "received_at" in first
            if kind == "sse":
                assert [m.id for m in got if m.kind == "event"] == acked  # id: is the seq
    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_reconnect_with_last_event_id_while_ingest_goes_on(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            acked = await post(client, [metric("a", "r1", i) for i in range(10)])
            stop = asyncio.Event()

            async def ingest() -> None:
                i = 0
                while not stop.is_set():
                    acked.extend(await post(client, [metric("a", f"r{i % 3}", i)]))
                    i += 1

            writer = asyncio.create_task(ingest())
            seen: list[int] = []
            try:
                async with stream(client, kind, "?after=0") as messages:
                    got = await read_until(messages, lambda m: m.kind == "event" and m.seq >= 15)
                seen += event_seqs(got)
                last = seen[-1]
                # Disconnected: ingest goes on; wait until more is acknowledged meanwhile.
                async with asyncio.timeout(GUARD_S):
                    while acked[-1] < last + 10:
                        await asyncio.sleep(0.01)
                query = "" if kind == "sse" else f"?after={last}"
                headers = {"Last-Event-ID": str(last)} if kind == "sse" else None
                async with stream(client, kind, query, headers) as messages:
                    got = await read_until(messages, lambda m: m.kind == "caught_up")
                    stop.set()
                    await writer
                    if event_seqs(got)[-1:] != acked[-1:]:
                        await read_until(messages, lambda m: m.kind == "event"
                                         and m.seq == acked[-1], got)
                    seen += event_seqs(got)
            finally:
                stop.set()
                await writer
            assert seen == acked  # nothing missed, nothing twice, in order
    run(main())


def _events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(60):
        c, r = ("alpha", "beta", "gamma")[i % 3], f"r{i % 5}"
        kind = i % 4
        if kind == 0:
            events.append({"type": "run", "component": c, "run_id": r,
                           "batch_id": f"b{(i // 4) % 2}", "model": "m"})
        elif kind == 1:
            events.append({"type": "status", "component": c, "run_id": r, "status": "running"})
        elif kind == 2:
            events.append({"type": "batch", "component": c, "batch_id": f"b{(i // 4) % 2}"})
        else:
            events.append(metric(c, r, i))
    return events


FILTERS: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("component=alpha", lambda e: e["component"] == "alpha"),
    ("component=alpha&component=gamma", lambda e: e["component"] in ("alpha", "gamma")),
    ("run_id=r2", lambda e: e.get("run_id") == "r2"),
    ("type=status&type=batch", lambda e: e["type"] in ("status", "batch")),
    ("batch_id=b1", lambda e: e.get("batch_id") == "b1"),
    ("component=beta&type=run&batch_id=b0", lambda e: e["component"] == "beta"
     and e["type"] == "run" and e.get("batch_id") == "b0"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_filters_match_an_independent_filter(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            events = _events()
            seqs = await post(client, events)
            for query, keep in FILTERS:
                async with stream(client, kind, f"?after=0&until=caught_up&{query}") as messages:
                    got = await read_until(messages, lambda m: False)
                assert got[-1].kind == "caught_up", query
                want = [s for s, e in zip(seqs, events, strict=True) if keep(e)]
                assert want, query
                assert event_seqs(got) == want, query
    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_component_limited_key_sees_only_its_components(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        keys = tmp_path / "data" / "keys.json"
        _, admin = add_key(keys, "admin", name="admin")
        _, beta = add_key(keys, "read", ["beta"], name="beta-reader")
        async with make_server(tmp_path) as client:
            events = _events()
            seqs = await post(client, events, admin)
            want = [s for s, e in zip(seqs, events, strict=True) if e["component"] == "beta"]
            for query in ("", "&component=alpha&component=beta"):
                async with stream(client, kind, f"?after=0&until=caught_up{query}",
                                  {"X-API-Key": beta}) as messages:
                    got = await read_until(messages, lambda m: False)
                assert event_seqs(got) == want
                assert {m.data["component"] for m in got if m.kind == "event"} == {"beta"}
            # Live too: another component's events never reach it.
            async with stream(client, kind, "?after=end", {"X-API-Key": beta}) as messages:
                await read_until(messages, lambda m: m.kind == "caught_up")
                await post(client, [metric("alpha", "x", 1)], admin)
                last = (await post(client, [metric("beta", "x", 2)], admin))[-1]
                got = await read_until(messages, lambda m: m.kind == "event")
            assert event_seqs(got) == [last]
            reply = await client.request("GET", "/api/stream?component=alpha",
                                         headers={"X-API-Key": beta}, content_type=None)
            assert reply.status == 403 and "alpha" in reply.json()["error"]["message"]
    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_folded_then_a_min_seq_read_sees_the_change(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            async with stream(client, kind, "?component=alpha") as messages:
                await read_until(messages, lambda m: m.kind == "caught_up")
                run_seq = await post(client, [{"type": "run", "component": "alpha",
                                               "run_id": "f1", "model": "m"}])
                await post(client, [metric("beta", "other", 1)])
                done = await post(client, [{"type": "status", "component": "alpha",
                                            "run_id": "f1", "status": "completed"}])
                got = await read_until(messages, lambda m: m.kind == "folded"
                                       and m.data["seq"] >= done[-1])
            folded = [m for m in got if m.kind == "folded"]
            # Each folded comes after the events it covers (events past its seq may come
            # before it too: a stretch is sent whole); runs within the filter only.
            for m in folded:
                covered = [s for s in event_seqs(got) if s <= m.data["seq"]]
                assert set(covered) <= set(event_seqs(got[:got.index(m)])), m.data
                assert all(r["component"] == "alpha" for r in m.data["runs"])
            assert event_seqs(got) == [run_seq[0], done[0]]
            last = folded[-1].data
            assert {"component": "alpha", "run_id": "f1", "status": "completed"} in last["runs"]
            reply = await client.get(f"/api/alpha/db/run/f1?min_seq={last['seq']}")
            assert reply.status == 200 and reply.json()["status"] == "completed"
    run(main())


def test_slow_client_gets_too_slow_with_its_resume_position(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path, stream_queue=4) as client:
            hub = client.app[BROADCASTER]  # type: ignore[index]
            big = "x" * 16_000
            acked: list[int] = []
            async with client.session.get(f"{client.url}/api/stream?after=end") as resp:
                # Read nothing: the server's writes stall once the socket buffers fill,
                # its queue for this client overflows, and it is dropped.
                async with asyncio.timeout(GUARD_S):
                    for i in range(2000):
                        if hub.too_slow:
                            break
                        acked += await post(client, [{"type": "log", "component": "a",
                                                      "run_id": "r", "level": "info",
                                                      "message": big} for _ in range(40)])
                        assert i < 1999, "never dropped"
                got = await read_until(sse_messages(resp), lambda m: False)
            assert [m.kind for m in got[:1]] == ["caught_up"]
            assert got[-1].kind == "too_slow"
            resume = got[-1].data["resume"]
            seqs = event_seqs(got)
            assert seqs == acked[:len(seqs)]  # in order, no gap, then dropped
            assert resume == (seqs[-1] if seqs else got[0].data["seq"])
            assert resume < acked[-1]
            # Resuming from there gives the rest, exactly once.
            async with stream(client, "sse", f"?after={resume}&until=caught_up") as messages:
                rest = await read_until(messages, lambda m: False)
            assert seqs + event_seqs(rest) == acked
    run(main())


def test_stream_limit_answers_503_and_others_keep_streaming(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path, max_streams=2) as client:
            async with stream(client, "sse") as one, stream(client, "ws") as two:
                await read_until(one, lambda m: m.kind == "caught_up")
                await read_until(two, lambda m: m.kind == "caught_up")
                reply = await client.get("/api/stream")
                assert reply.status == 503, reply.body
                assert reply.json()["error"]["code"] == "overloaded"
                assert 1 <= int(reply.headers["Retry-After"]) <= 5
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await client.session.ws_connect(f"{client.url}/api/stream/ws")
                assert refused.value.status == 503
                assert 1 <= int(refused.value.headers["Retry-After"]) <= 5  # type: ignore[index]
                last = (await post(client, [metric("a", "r", 1)]))[-1]
                for messages in (one, two):  # nobody was evicted
                    got = await read_until(messages, lambda m: m.kind == "event")
                    assert got[-1].seq == last
            hub = client.app[BROADCASTER]  # type: ignore[index]
            async with asyncio.timeout(GUARD_S):  # the handlers end once the clients go
                while hub.streams:
                    await asyncio.sleep(0.01)
            async with stream(client, "sse", "?until=caught_up") as messages:
                assert (await read_until(messages, lambda m: False))[-1].kind == "caught_up"
    run(main())


def test_shutdown_closes_streams_with_their_resume_position(tmp_path: Path) -> None:
    async def main() -> None:
        server = make_server(tmp_path, stream_heartbeat_s=3600.0)
        client = await server.__aenter__()
        own = aiohttp.ClientSession()  # the helper's session closes before the server stops
        try:
            acked = await post(client, [metric("a", "r", i) for i in range(5)])
            got: dict[str, list[Message]] = {}

            async def follow(kind: str, ready: asyncio.Event) -> None:
                async with stream(client, kind, "?after=2", session=own) as messages:
                    got[kind] = await read_until(messages, lambda m: m.kind == "caught_up")
                    ready.set()
                    await read_until(messages, lambda m: False, got[kind])

            ready = {k: asyncio.Event() for k in KINDS}
            tasks = [asyncio.create_task(follow(k, ready[k])) for k in KINDS]
            for k in KINDS:
                await ready[k].wait()
            await server.__aexit__(None, None, None)
            async with asyncio.timeout(GUARD_S):
                await asyncio.gather(*tasks)
        finally:
            await own.close()
        for kind in KINDS:
            closing = got[kind][-1]
            assert closing.kind == "closed", (kind, got[kind])
            assert closing.data == {"type": "closed", "reason": "shutdown", "resume": acked[-1]}
            assert event_seqs(got[kind]) == acked[2:]
    run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_revoked_key_closes_its_streams(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        keys = tmp_path / "data" / "keys.json"
        add_key(keys, "admin", name="admin")
        _, reader = add_key(keys, "read", name="watcher")
        async with make_server(tmp_path) as client:
            async with stream(client, kind, "", {"X-API-Key": reader}) as messages:
                await read_until(messages, lambda m: m.kind == "caught_up")
                revoke_key(keys, "watcher")
                got = await read_until(messages, lambda m: m.kind == "closed")
            assert got[-1].data["reason"] == "key_revoked"
            reply = await client.request("GET", "/api/stream", headers={"X-API-Key": reader},
                                         content_type=None)
            assert reply.status == 401
    run(main())


def test_bad_input_is_a_clear_400(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            await post(client, [metric("a", "r", 1)])
            cases = [
                ("/api/stream?after=abc", None, "after"),
                ("/api/stream?after=99", None, "after"),
                ("/api/stream?type=bogus", None, "type"),
                ("/api/stream?component=Bad", None, "component"),
                ("/api/stream?until=forever", None, "until"),
                ("/api/stream?colour=red", None, "colour"),
                ("/api/stream", {"Last-Event-ID": "x1"}, "Last-Event-ID"),
                ("/api/stream", {"Last-Event-ID": "5"}, "Last-Event-ID"),
                ("/api/stream/ws", None, "Upgrade"),
            ]
            for path, headers, name in cases:
                reply = await client.request("GET", path, headers=headers, content_type=None)
                assert reply.status == 400, (path, reply.body)
                error = reply.json()["error"]
                assert name in error["message"] or name in str(error["details"]), (path, error)
            allowed = (await client.get("/api/stream?type=bogus")).json()["error"]["details"]
            assert "metric" in allowed[0]["allowed"]
            assert client.app[BROADCASTER].streams == set()  # type: ignore[index]
    run(main())


ONE_OF_EACH: list[dict[str, Any]] = [
    {"type": "batch", "component": "c", "batch_id": "b1", "description": "d",
     "expected_count": 2, "id": "ev-1"},
    {"type": "run", "component": "c", "run_id": "r1", "model": "m", "hardware": "h",
     "batch_id": "b1", "name": "n", "params": {"lr": 0.1, "layers": [1, 2]}},
    {"type": "status", "component": "c", "run_id": "r1", "status": "failed", "error": "boom\n!"},
    {"type": "step", "component": "c", "run_id": "r1", "step": "train", "status": "running",
     "progress": 0.5, "message": "half"},
    {"type": "metric", "component": "c", "run_id": "r1", "name": "loss", "value": 0.25,
     "unit": "1", "step": 3, "ts": "2026-01-02T03:04:05.123456Z"},
    {"type": "tag", "component": "c", "run_id": "r1", "key": "k", "value": "välue \"q\""},
    {"type": "log", "component": "c", "run_id": "r1", "level": "warning", "message": "m"},
    {"type": "artifact", "component": "c", "run_id": "r1", "name": "a.txt", "uri": "s3://x",
     "size_bytes": 10, "media_type": "text/plain"},
    {"type": "result", "component": "c", "run_id": "r1", "test": "t::a", "outcome": "passed",
     "duration_s": 0.5, "message": "ok"},
    {"type": "delete", "component": "c", "run_id": "gone"},
]


@pytest.mark.parametrize("kind", KINDS)
def test_each_event_type_arrives_as_posted(tmp_path: Path, kind: str) -> None:
    """Every field as posted, plus seq, id (@seq when none was given), ts, received_at."""
    async def main() -> None:
        async with make_server(tmp_path) as client:
            seqs = await post(client, ONE_OF_EACH)
            async with stream(client, kind, "?after=0&until=caught_up") as messages:
                got = [m.data for m in await read_until(messages, lambda m: False)
                       if m.kind == "event"]
        assert [e["seq"] for e in got] == seqs
        for sent, seq, event in zip(ONE_OF_EACH, seqs, got, strict=True):
            extra = {"seq", "id", "ts", "received_at"}
            assert set(event) == set(sent) | extra, event
            for name, value in sent.items():
                if name != "ts":
                    assert event[name] == value, (name, event)
            assert event["id"] == sent.get("id", f"@{seq}")
            received = datetime.fromisoformat(event["received_at"])
            if "ts" in sent:
                assert datetime.fromisoformat(event["ts"]) == datetime.fromisoformat(sent["ts"])
            else:  # defaults to the time the server received it
                assert event["ts"] == event["received_at"]
            assert received.tzinfo is not None and event["ts"].endswith("Z")
    run(main())
