"""Request limits (docs/limits.md) against a real server over raw sockets: slow
bodies and slow headers are cut off while other requests go on, the concurrency
cap answers 503, oversized or over-deep input gets a 4xx naming what was wrong.

Assertions are on outcomes and their order, never on durations.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from helpers.server import Client

from runlake.api.export import MAX_BODY_BYTES as EXPORT_MAX_BODY_BYTES
from runlake.api.state import SETTINGS

pytestmark = pytest.mark.usefixtures("no_leaks")

MakeServer = Callable[..., Any]
# The slow client's deadline: long enough that the other requests of a test are
# answered first even on a loaded 2-core machine (1 s was not, once).
SLOW_DEADLINE_S = 3.0
GOOD: dict[str, Any] = {"type": "metric", "component": "test", "run_id": "r", "name": "loss",
                        "value": 1.0}


class Raw:
    """One raw HTTP/1.1 connection to the server, to send requests byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client: Client) -> Raw:
        host, port = client.url.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

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


def test_slow_body_is_cut_off_without_stalling_other_requests(make_server: MakeServer) -> None:
    """A body that keeps trickling in (a byte at a time, never idle for long) is cut
    off by the whole-body deadline; meanwhile other requests are answered."""
    order: list[str] = []

    async def main() -> None:
        async with make_server(read_timeout_s=SLOW_DEADLINE_S) as client:
            body = msgspec.json.encode([{**GOOD, "run_id": f"slow-{i}"} for i in range(20)])
            slow = await Raw.open(client)
            await slow.send(post_head("/api/events", len(body)) + body[:1])

            async def slow_answer() -> tuple[int, dict[str, str], bytes]:
                answer = await slow.response()
                order.append("slow")
                return answer

            trickle = asyncio.create_task(slow.trickle(body[1:]))
            answer = asyncio.create_task(slow_answer())
            normal = await client.post_events([{**GOOD, "run_id": "normal"}])
            order.append("normal")
            health = await client.get("/healthz")
            order.append("healthz")
            async with asyncio.timeout(60):  # a guard against hanging, not a measurement
                status, headers, payload = await answer
            trickle.cancel()
            await slow.close()

            assert normal.status == 202, normal.body
            assert health.status == 200
            assert status == 408, payload
            assert error_of(payload)["code"] == "request_timeout"
            assert headers["connection"] == "close"
            assert client.event_log.last_seq == normal.json()["last_seq"] == 1  # none slow
            # The server is none the worse: the next request is answered.
            assert (await client.post_events([GOOD])).status == 202

    asyncio.run(main())
    assert order == ["normal", "healthz", "slow"]


def test_slow_headers_are_cut_off_without_stalling_other_requests(
    make_server: MakeServer,
) -> None:
    """Headers that never finish: aiohttp's keepalive_timeout (= read_timeout_s)
    closes the connection without an answer."""
    order: list[str] = []

    async def main() -> None:
        async with make_server(read_timeout_s=SLOW_DEADLINE_S) as client:
            slow = await Raw.open(client)
            await slow.send(b"GET /healthz HTTP/1.1\r\nHost: runlake\r\n")
            trickle = asyncio.create_task(slow.trickle(b"X-Slow: " + b"a" * 2000))

            async def closed() -> bytes:
                data = await slow.reader.read()  # EOF: the server hung up
                order.append("slow closed")
                return data

            hung_up = asyncio.create_task(closed())
            normal = await client.get("/api/db/overview")
            order.append("normal")
            async with asyncio.timeout(60):  # a guard against hanging, not a measurement
                assert await hung_up == b""  # no response: there was no whole request
            trickle.cancel()
            await slow.close()
            assert normal.status == 200, normal.body

    asyncio.run(main())
    assert order == ["normal", "slow closed"]


# -- concurrency ---------------------------------------------------------------------


def test_concurrency_limit_answers_503_and_spares_healthz(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runlake.api")

    async def main() -> None:
        async with make_server(max_concurrent_requests=2) as client:
            body = msgspec.json.encode([GOOD])
            held = [await Raw.open(client) for _ in range(2)]
            for raw in held:  # in flight until their bodies finish
                await raw.send(post_head("/api/events", len(body)) + body[:5])
            for _ in range(500):  # until the server has taken both in
                reply = await client.get("/api/db/overview")
                if reply.status != 200:
                    break
                await asyncio.sleep(0.01)
            assert reply.status == 503, reply.body
            assert error_of(reply.body)["code"] == "overloaded"
            assert reply.headers["Retry-After"] == "1"
            assert (await client.get("/healthz")).status == 200  # exempt
            assert (await client.post_events([GOOD])).status == 503
            assert client.event_log.last_seq == 0

            for raw in held:
                await raw.send(body[5:])
            for raw in held:
                status, _, payload = await raw.response()
                assert status == 202, payload
                await raw.close()
            # Slots are given back: a request is served again.
            assert (await client.get("/api/db/overview")).status == 200
            assert client.event_log.last_seq == 2

    asyncio.run(main())
    # A refusal is counted, not logged as the server's failure (each one would
    # format a traceback on the event loop while it is busiest).
    errors = [r for r in caplog.records if r.name == "runlake.api" and r.levelno >= logging.ERROR]
    assert errors == []


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
