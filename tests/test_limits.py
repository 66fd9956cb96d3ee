"""Request limits (docs/limits.md) against a real server over raw sockets: slow
bodies and slow headers are cut off while other requests go on, the concurrency
cap answers 503 (429 to a client over its share) but never to monitoring, a client
that goes away is cancelled without a half-done append, oversized or over-deep
input gets a 4xx naming what was wrong.

Assertions are on outcomes, never on durations, nor on which of two clocks runs out
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.event_log import log_ids
from helpers.server import Client

from runlake.api.export import MAX_BODY_BYTES as EXPORT_MAX_BODY_BYTES
from runlake.api.keys import add_key
from runlake.api.middleware import CLIENT_CLOSED
from runlake.api.routes import ROUTE_TABLE
from runlake.api.state import HTTP_METRICS, SETTINGS
from runlake.events import log as log_module

pytestmark = pytest.mark.usefixtures("no_leaks")

MakeServer = Callable[..., Any]
# Deadlines for slow clients. While a test checks that other requests are answered,
# the slow client's deadline is one the test never comes near (it would otherwise race
# those requests on a loaded machine); where it checks the cut-off, nothing races it.
FAR_DEADLINE_S = 60.0
CUT_OFF_DEADLINE_S = 1.0
GOOD: dict[str, Any] = {"type": "metric", "component": "test", "run_id": "r", "name": "loss",
                        "value": 1.0}


class Raw:
    """One raw HTTP/1.1 connection to the server, to send requests byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client: Client, source: str = "127.0.0.1") -> Raw:
        """A connection from `source`, any loopback address: another client to the server."""
        host, port = client.url.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port), local_addr=(source, 0)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: bytes, pause: float = 0.05) -> None:
        """`data` a byte at a time, until done or the server closes the connection."""
        try:
            for byte in data:
                await self.send(bytes([byte]))
                await asyncio.sleep(pause)
        except ConnectionError:
            pass

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names), body."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def post_head(path: str, length: int, content_type: str = "application/json") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: runlake\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def error_of(body: bytes) -> dict[str, Any]:
    envelope = msgspec.json.decode(body)
    assert set(envelope) == {"error"} and set(envelope["error"]) == {"code", "message", "details"}
    return envelope["error"]


# -- slow clients --------------------------------------------------------------------


def slow_body() -> bytes:
    return msgspec.json.encode([{**GOOD, "run_id": f"slow-{i}"} for i in range(20)])


def test_slow_body_does_not_stall_other_requests(make_server: MakeServer) -> None:
    """While a body trickles in (a byte at a time), other requests are answered."""
    async def main() -> None:
        async with make_server(read_timeout_s=FAR_DEADLINE_S) as client:
            body = slow_body()
            slow = await Raw.open(client)
            await slow.send(post_head("/api/events", len(body)) + body[:1])
            trickle = asyncio.create_task(slow.trickle(body[1:]))
            answer = asyncio.create_task(slow.response())
            try:
                normal = await client.post_events([{**GOOD, "run_id": "normal"}])
                health = await client.get("/healthz")
                assert not answer.done(), "the slow request should still be sending its body"
            finally:
                trickle.cancel()
                answer.cancel()
                await slow.close()
            assert normal.status == 202, normal.body
            assert health.status == 200
            assert client.event_log.last_seq == normal.json()["last_seq"] == 1  # none slow

    asyncio.run(main())


def test_slow_body_is_cut_off_by_the_whole_body_deadline(make_server: MakeServer) -> None:
    """A body that keeps trickling in, never idle for long, is cut off by the deadline
    on the whole body: 408, and the connection is closed."""
    async def main() -> None:
        async with make_server(read_timeout_s=CUT_OFF_DEADLINE_S) as client:
            body = slow_body()
            slow = await Raw.open(client)
            await slow.send(post_head("/api/events", len(body)) + body[:1])
            trickle = asyncio.create_task(slow.trickle(body[1:]))  # ~90 s if never cut off
            try:
                async with asyncio.timeout(60):  # a guard against hanging, not a measurement
                    status, headers, payload = await slow.response()
            finally:
                trickle.cancel()
                await slow.close()
            assert status == 408, payload
            assert error_of(payload)["code"] == "request_timeout"
            assert headers["connection"] == "close"
            assert client.event_log.last_seq == 0
            # The server is none the worse: the next request is answered (on a new
            # connection: the session holds no idle one that the keep-alive timeout,
            # as short as the deadline, could close under it).
            fresh = await Raw.open(client)
            body = msgspec.json.encode([GOOD])
            await fresh.send(post_head("/api/events", len(body)) + body)
            status, _, payload = await fresh.response()
            await fresh.close()
            assert status == 202, payload

    asyncio.run(main())


async def hung_up(slow: Raw) -> bytes:
    """What the server sent before it closed the connection."""
    try:
        return await slow.reader.read()  # EOF: the server hung up
    except ConnectionResetError:  # ... with a trickled byte still unread
        return b""


def test_slow_headers_do_not_stall_other_requests(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server(read_timeout_s=FAR_DEADLINE_S) as client:
            slow = await Raw.open(client)
            await slow.send(b"GET /healthz HTTP/1.1\r\nHost: runlake\r\n")
            trickle = asyncio.create_task(slow.trickle(b"X-Slow: " + b"a" * 2000))
            closed = asyncio.create_task(hung_up(slow))
            try:
                normal = await client.get("/api/db/overview")
                assert not closed.done(), "the slow headers should still be coming"
            finally:
                trickle.cancel()
                closed.cancel()
                await slow.close()
            assert normal.status == 200, normal.body

    asyncio.run(main())


def test_slow_headers_are_cut_off(make_server: MakeServer) -> None:
    """Headers that never finish: aiohttp's keepalive_timeout (= read_timeout_s)
    closes the connection without an answer."""
    async def main() -> None:
        async with make_server(read_timeout_s=CUT_OFF_DEADLINE_S) as client:
            slow = await Raw.open(client)
            await slow.send(b"GET /healthz HTTP/1.1\r\nHost: runlake\r\n")
            trickle = asyncio.create_task(slow.trickle(b"X-Slow: " + b"a" * 2000))
            try:
                async with asyncio.timeout(60):  # a guard against hanging, not a measurement
                    data = await hung_up(slow)
            finally:
                trickle.cancel()
                await slow.close()
            assert data == b""  # no response: there was no whole request

    asyncio.run(main())


# -- concurrency ---------------------------------------------------------------------


async def metric_value(client: Client, line_start: str, key: str | None = None) -> float:
    """The value of the /metrics sample whose line starts with `line_start`."""
    headers = {"X-API-Key": key} if key else None
    reply = await client.request("GET", "/metrics", headers=headers, content_type=None)
    assert reply.status == 200, reply.body
    found = [line.rsplit(" ", 1)[1] for line in reply.body.decode().splitlines()
             if line.startswith(line_start)]
    assert len(found) == 1, (line_start, found)
    return float(found[0])


async def until_in_flight(client: Client, n: int, key: str | None = None) -> None:
    """Wait until the server counts `n` requests in flight (it has read their headers)."""
    async with asyncio.timeout(60):  # a guard against hanging, not a measurement
        while await metric_value(client, "runlake_http_requests_in_flight ", key) != n:
            await asyncio.sleep(0.01)


async def hold(client: Client, body: bytes, source: str = "127.0.0.1",
               key: str | None = None) -> Raw:
    """A POST /api/events whose body stops after 5 bytes: in flight until it is sent."""
    raw = await Raw.open(client, source)
    head = post_head("/api/events", len(body))
    if key is not None:
        head = head.replace(b"\r\n\r\n", f"\r\nX-API-Key: {key}\r\n\r\n".encode())
    await raw.send(head + body[:5])
    return raw


async def raw_get(client: Client, path: str, source: str, key: str | None = None
                  ) -> tuple[int, dict[str, str], bytes]:
    raw = await Raw.open(client, source)
    auth = f"X-API-Key: {key}\r\n" if key else ""
    await raw.send(f"GET {path} HTTP/1.1\r\nHost: runlake\r\n{auth}\r\n".encode())
    try:
        return await raw.response()
    finally:
        await raw.close()


@contextlib.asynccontextmanager
async def closing_all() -> AsyncIterator[list[Raw]]:
    """A list of connections, each closed at the end even if the test fails."""
    opened: list[Raw] = []
    try:
        yield opened
    finally:
        for raw in opened:
            await raw.close()


async def finish(held: list[Raw], body: bytes) -> None:
    for raw in held:
        await raw.send(body[5:])
    for raw in held:
        status, _, payload = await raw.response()
        assert status == 202, payload
        await raw.close()


def test_concurrency_limit_answers_503_and_spares_operations(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At the limit, held by two clients' trickled bodies: a third client gets 503 with
    Retry-After, while /healthz, /readyz, /metrics and /api/openapi.json still answer."""
    caplog.set_level(logging.INFO, logger="runlake.api")

    async def main() -> None:
        async with make_server(max_concurrent_requests=2) as client, closing_all() as held:
            body = msgspec.json.encode([GOOD])
            held += [await hold(client, body, source) for source in ("127.0.0.1", "127.0.0.2")]
            await until_in_flight(client, 2)
            status, headers, payload = await raw_get(client, "/api/db/overview", "127.0.0.3")
            assert status == 503, payload
            assert error_of(payload)["code"] == "overloaded"
            assert headers["retry-after"] == "1"
            # Monitoring, from a client already at its own share too.
            for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json"):
                reply = await client.get(path)
                assert reply.status == 200, (path, reply.body)
            status, _, payload = await raw_get(client, "/readyz", "127.0.0.3")
            assert status == 200, payload
            assert await metric_value(client, 'runlake_http_requests_refused_total{reason='
                                              '"overloaded"}') == 1
            assert client.event_log.last_seq == 0

            await finish(held, body)
            await until_in_flight(client, 0)  # slots are given back
            assert (await client.get("/api/db/overview")).status == 200
            assert client.event_log.last_seq == 2

    asyncio.run(main())
    # A refusal is counted, not logged as the server's failure (each one would
    # format a traceback on the event loop while it is busiest).
    errors = [r for r in caplog.records if r.name == "runlake.api" and r.levelno >= logging.ERROR]
    assert errors == []


def test_one_address_cannot_take_every_slot(make_server: MakeServer) -> None:
    """A client trickling bodies gets 429 past its share (half the limit by default);
    a client from another address is still admitted."""
    async def main() -> None:
        async with make_server(max_concurrent_requests=4) as client, closing_all() as held:
            body = msgspec.json.encode([GOOD])
            held += [await hold(client, body) for _ in range(2)]
            await until_in_flight(client, 2)
            # From 127.0.0.1 too; a made-up key counts as its address (no extra share).
            for headers in ({}, {"X-API-Key": "rl_" + "x" * 43}):
                reply = await client.request("POST", "/api/events", data=body, headers=headers)
                assert reply.status == 429, reply.body
                error = error_of(reply.body)
                assert error["code"] == "too_many_requests"
                assert "address 127.0.0.1" in error["message"]
                assert "max_requests_per_client" in error["message"]
                assert reply.headers["Retry-After"] == "1"
            status, _, payload = await raw_get(client, "/api/db/overview", "127.0.0.2")
            assert status == 200, payload
            held.append(await hold(client, body, "127.0.0.2"))  # it may hold requests too
            await until_in_flight(client, 3)
            assert await metric_value(client, 'runlake_http_requests_refused_total{reason='
                                              '"client_share"}') == 2
            assert client.event_log.last_seq == 0
            await finish(held, body)
            assert client.event_log.last_seq == 3

    asyncio.run(main())


def test_one_key_cannot_take_every_slot(make_server: MakeServer, tmp_path: Path) -> None:
    """Clients on one address (a proxy, a NAT) are told apart by their keys."""
    keys = tmp_path / "data" / "keys.json"
    first, second = (add_key(keys, "admin", name=name)[1] for name in ("first", "second"))

    async def main() -> None:
        async with (make_server(max_concurrent_requests=4, max_requests_per_client=2) as client,
                    closing_all() as held):
            body = msgspec.json.encode([GOOD])
            held += [await hold(client, body, key=first) for _ in range(2)]
            await until_in_flight(client, 2, first)
            status, _, payload = await raw_get(client, "/api/db/overview", "127.0.0.1", first)
            assert status == 429, payload
            assert "key 'first'" in error_of(payload)["message"]
            status, _, payload = await raw_get(client, "/api/db/overview", "127.0.0.1", second)
            assert status == 200, payload
            await finish(held, body)
            assert client.event_log.last_seq == 2

    asyncio.run(main())


# -- clients that go away ------------------------------------------------------------


def test_client_gone_mid_body_is_cancelled_appending_nothing(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects while sending its body: its handler is cancelled
    (counted as 499), nothing is appended, nothing is logged as an error."""
    async def main() -> None:
        async with make_server() as client, closing_all() as opened:
            assert client.app is not None
            body = msgspec.json.encode([{**GOOD, "run_id": f"gone-{i}"} for i in range(10)])
            opened.append(raw := await hold(client, body))
            await until_in_flight(client, 1)
            await raw.close()
            await until_in_flight(client, 0)
            requests = client.app[HTTP_METRICS].requests
            assert {k: n for k, n in requests.items() if k[0] == "/api/events"} == \
                {("/api/events", "POST", CLIENT_CLOSED): 1}
            assert client.event_log.last_seq == 0
            assert (await client.post_events([GOOD])).status == 202

    asyncio.run(main())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_client_gone_while_its_append_commits_keeps_the_request_whole(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client disconnects while the log writer holds its events mid-commit: the
    handler is cancelled, and the append still lands whole (a request is all or
    nothing, never a part of it)."""
    committing, release = threading.Event(), threading.Event()
    real_encode = log_module.encode_frame

    def encode_frame(table: Any) -> Any:
        committing.set()
        assert release.wait(60), "the test never released the commit"
        return real_encode(table)

    async def main() -> None:
        async with make_server() as client, closing_all() as opened:
            assert client.app is not None
            events = [{**GOOD, "run_id": f"whole-{i}", "id": f"whole-{i}"} for i in range(50)]
            body = msgspec.json.encode(events)
            monkeypatch.setattr(log_module, "encode_frame", encode_frame)
            opened.append(raw := await Raw.open(client))
            await raw.send(post_head("/api/events", len(body)) + body)
            assert await asyncio.to_thread(committing.wait, 60), "the append never began"
            await raw.close()
            try:
                await until_in_flight(client, 0)  # cancelled, with the commit still held
            finally:
                release.set()
            assert await asyncio.to_thread(client.event_log.wait, 0, 60)
            assert log_ids(client.event_log, check_seqs=True) == [e["id"] for e in events]
            statuses = {k[2]: n for k, n in client.app[HTTP_METRICS].requests.items()
                        if k[0] == "/api/events"}
            assert statuses == {CLIENT_CLOSED: 1}

    asyncio.run(main())


# -- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/events", "/api/test/db/export"])
def test_declared_oversized_body_is_refused_before_it_is_sent(make_server: MakeServer,
                                                              path: str) -> None:
    async def main() -> None:
        async with make_server(max_body_bytes=1024) as client:
            raw = await Raw.open(client)
            await raw.send(post_head(path, 10**12))  # and not one byte of body
            status, headers, payload = await raw.response()
            await raw.close()
            assert status == 413, payload
            assert error_of(payload)["code"] == "payload_too_large"

    asyncio.run(main())


def test_export_body_over_its_own_limit_is_refused_before_it_is_sent(
    make_server: MakeServer,
) -> None:
    """The export route's 64 KiB limit applies before the body is read, although the
    server's own limit (64 MiB) would let it through; chunked, once it is read."""
    async def main() -> None:
        async with make_server() as client:
            assert client.app is not None
            assert client.app[SETTINGS].max_body_bytes > 100 * EXPORT_MAX_BODY_BYTES
            raw = await Raw.open(client)
            await raw.send(post_head("/api/test/db/export", EXPORT_MAX_BODY_BYTES + 1))
            status, _, payload = await raw.response()  # not one byte of body sent
            await raw.close()
            assert status == 413, payload
            assert str(EXPORT_MAX_BODY_BYTES) in error_of(payload)["message"]

            raw = await Raw.open(client)
            head = (b"POST /api/test/db/export HTTP/1.1\r\nHost: runlake\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            body = b'{"filename": "' + b"a" * EXPORT_MAX_BODY_BYTES + b'"}'
            await raw.send(head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
            status, _, payload = await raw.response()
            await raw.close()
            assert status == 413, payload
            assert error_of(payload)["code"] == "payload_too_large"

    asyncio.run(main())


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def deep_event(depth: int) -> bytes:
    """A run event whose params nest `depth` levels (built as text: too deep for Python)."""
    params = b'{"a":' * (depth - 1) + b'{"leaf":1}' + b"}" * (depth - 1)
    return b'{"type":"run","component":"test","run_id":"deep","params":' + params + b"}"


RUN = msgspec.json.encode({"type": "run", "component": "test", "run_id": "ok"})
BIG = msgspec.json.encode({"type": "run", "component": "test", "run_id": "big",
                           "params": {"blob": "x" * 17_000}})
PARAMS_CASES = {
    "depth_9": deep_event(9),
    "depth_100000": deep_event(100_000),
    "over_16_KiB": BIG,
}


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
@pytest.mark.parametrize("case", list(PARAMS_CASES))
def test_params_too_deep_or_too_big_is_400_naming_event_and_field(
    make_server: MakeServer, case: str, ndjson: bool
) -> None:
    bad = PARAMS_CASES[case]

    async def main() -> None:
        async with make_server() as client:
            if ndjson:
                body, content_type, where, pos = RUN + b"\n" + RUN + b"\n" + bad, \
                    "application/x-ndjson", "line", 3
            else:
                body, content_type, where, pos = b"[" + RUN + b"," + RUN + b"," + bad + b"]", \
                    "application/json", "event", 2
            reply = await client.request("POST", "/api/events", data=body,
                                         content_type=content_type)
            assert reply.status == 400, reply.body
            error = error_of(reply.body)
            assert error["code"] == "invalid_events"
            assert error["details"][0][where] == pos
            assert error["details"][0]["field"] == "params"
            assert f"{where} {pos}" in error["message"] and "params" in error["message"]
            assert client.event_log.last_seq == 0  # all or nothing

    asyncio.run(main())


def test_params_at_the_limits_are_accepted(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            edge = {"type": "run", "component": "test", "run_id": "edge", "params": nested(8)}
            big = {"type": "run", "component": "test", "run_id": "big",
                   "params": {"blob": "x" * (16_384 - 11)}}  # exactly 16 384 bytes of JSON
            assert len(msgspec.json.encode(big["params"])) == 16_384
            reply = await client.post_events([edge, big])
            assert reply.status == 202, reply.body

    asyncio.run(main())


def test_overlong_query_parameter_is_400_naming_it(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            reply = await client.get("/api/test/db/runs?model=" + "m" * 1025)
            assert reply.status == 400, reply.body
            assert error_of(reply.body)["details"][0]["parameter"] == "model"
            reply = await client.get("/api/db/export?filename=" + "f" * 1025)
            assert reply.status == 400, reply.body
            assert error_of(reply.body)["details"][0]["parameter"] == "filename"

    asyncio.run(main())


def test_every_operations_route_is_admitted_at_the_limit() -> None:
    """The limit middleware admits by the table's `always_admitted` alone: monitoring
    routes must carry it."""
    operations = [r.path for r in ROUTE_TABLE if r.tag == "operations"]
    assert set(operations) >= {"/healthz", "/readyz", "/metrics", "/api/openapi.json"}
    assert [p for p in operations if not next(
        r for r in ROUTE_TABLE if r.path == p).always_admitted] == []
