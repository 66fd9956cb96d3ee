"""Bad requests: each gets the right 4xx, exactly the DESIGN §4 error envelope, and
leaves the log as it was; so do requests aiohttp cannot even parse (sent over raw
sockets), which are also counted and logged in one line. One server serves the
whole table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.server import Reply, ThreadedServer, serve_in_thread

from runlake.api.protocol import MAX_HEADER_LINE_BYTES, MAX_HEADERS, MAX_URL_BYTES

MAX_BODY = 4096
MAX_EVENTS = 5
JSON = "application/json"
GOOD: dict[str, Any] = {"type": "metric", "component": "test", "run_id": "r", "name": "x",
                        "value": 1}


def j(*events: Any) -> bytes:
    return msgspec.json.encode(events[0] if len(events) == 1 else list(events))


def ev(**fields: Any) -> bytes:
    """GOOD with some fields changed; a None value removes the field."""
    event = {**GOOD, **fields}
    return j({k: v for k, v in event.items() if v is not None})


def lines(*events: Any) -> bytes:
    return b"\n".join(e if isinstance(e, bytes) else j(e) for e in events) + b"\n"


@dataclass
class Bad:
    id: str
    status: int
    code: str
    body: bytes | None = None
    path: str = "/api/events"
    method: str = "POST"
    content_type: str | None = JSON
    chunked: bool = False
    # (where, position) of each bad event the details must name, when given
    bad: list[tuple[str, int]] | None = None
    message: str = ""  # a substring the message must contain
    headers: dict[str, str] = field(default_factory=dict)


BAD_REQUESTS = [
    # the body is not events
    Bad("truncated_json", 400, "invalid_events", b'{"type": "metric",'),
    Bad("json_number", 400, "invalid_events", b"42"),
    Bad("json_string", 400, "invalid_events", b'"hello"'),
    Bad("invalid_utf8", 400, "invalid_events", b'{"type": "\xff\xfe"}'),
    Bad("deeply_nested", 400, "invalid_events", b"[" * 1500 + b"]" * 1500),
    Bad("empty_body", 400, "invalid_events", b"", message="empty"),
    Bad("whitespace_body", 400, "invalid_events", b" \n\t "),
    Bad("empty_array", 400, "invalid_events", b"[]"),
    Bad("blank_ndjson", 400, "invalid_events", b"\n\n", content_type="application/x-ndjson"),
    Bad("array_as_ndjson", 400, "invalid_events", j([GOOD]),
        content_type="application/x-ndjson", bad=[("line", 1)]),
    # fields
    Bad("value_wrong_type", 400, "invalid_events", ev(value="fast"), bad=[("event", 0)],
        message="value"),
    Bad("run_id_wrong_type", 400, "invalid_events", ev(run_id=5)),
    Bad("unknown_field", 400, "invalid_events", ev(colour="red"), message="colour"),
    Bad("client_sets_seq", 400, "invalid_events", ev(seq=7)),
    Bad("unknown_type", 400, "invalid_events", ev(type="bogus"), message="type"),
    Bad("missing_type", 400, "invalid_events", ev(type=None)),
    Bad("missing_run_id", 400, "invalid_events", ev(run_id=None), message="run_id"),
    Bad("missing_component", 400, "invalid_events", ev(component=None), message="component"),
    Bad("component_not_a_slug", 400, "invalid_events", ev(component="Test")),
    Bad("component_differs_from_url", 400, "invalid_events", ev(), path="/api/bench/events"),
    Bad("nan", 400, "invalid_events",
        b'{"type":"metric","component":"test","run_id":"r","name":"x","value":NaN}'),
    Bad("infinity", 400, "invalid_events",
        b'{"type":"metric","component":"test","run_id":"r","name":"x","value":1e999}'),
    Bad("progress_out_of_range", 400, "invalid_events",
        j({"type": "step", "component": "test", "run_id": "r", "step": "s",
           "status": "running", "progress": 1.5})),
    Bad("unknown_status", 400, "invalid_events",
        j({"type": "status", "component": "test", "run_id": "r", "status": "done"})),
    Bad("run_id_too_long", 400, "invalid_events", ev(run_id="r" * 300)),
    Bad("ts_not_a_time", 400, "invalid_events", ev(ts="yesterday")),
    Bad("ts_without_offset", 400, "invalid_events", ev(ts="2024-01-01T00:00:00")),
    Bad("reserved_id", 400, "invalid_events", ev(id="@1")),
    Bad("delete_two_targets", 400, "invalid_events",
        j({"type": "delete", "component": "test", "run_id": "r", "batch_id": "b"})),
    Bad("delete_no_target", 400, "invalid_events", j({"type": "delete", "component": "test"})),
    Bad("params_too_deep", 400, "invalid_events",
        j({"type": "run", "component": "test", "run_id": "r",
           "params": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}})),
    # all or nothing
    Bad("mixed_good_and_bad", 400, "invalid_events",
        j(GOOD, {**GOOD, "value": "x"}, GOOD, {**GOOD, "type": "nope"}),
        bad=[("event", 1), ("event", 3)]),
    Bad("ndjson_one_bad_line", 400, "invalid_events", lines(GOOD, b"{oops", GOOD),
        content_type="application/x-ndjson", bad=[("line", 2)]),
    # limits
    Bad("too_many_events", 400, "invalid_events", j(*[GOOD] * (MAX_EVENTS + 1)),
        message=f"at most {MAX_EVENTS}"),
    Bad("too_many_lines", 400, "invalid_events", lines(*[GOOD] * (MAX_EVENTS + 1)),
        content_type="application/x-ndjson", message=f"at most {MAX_EVENTS}"),
    Bad("body_too_large", 413, "payload_too_large", b" " * (MAX_BODY + 1) + j(GOOD)),
    Bad("chunked_body_too_large", 413, "payload_too_large", b" " * (2 * MAX_BODY) + j(GOOD),
        chunked=True),
    # media types
    Bad("text_plain", 415, "unsupported_media_type", j(GOOD), content_type="text/plain"),
    Bad("form", 415, "unsupported_media_type", b"a=1",
        content_type="application/x-www-form-urlencoded"),
    Bad("xml", 415, "unsupported_media_type", b"<event/>", content_type="application/xml"),
    Bad("latin1_charset", 415, "unsupported_media_type", j(GOOD),
        content_type="application/json; charset=latin-1"),
    # the URL
    Bad("url_component_uppercase", 400, "bad_request", j(GOOD), path="/api/Test/events"),
    Bad("url_component_too_long", 400, "bad_request", j(GOOD), path=f"/api/{'a' * 65}/events"),
    Bad("url_component_space", 400, "bad_request", j(GOOD), path="/api/te%20st/events"),
    Bad("url_component_newline", 400, "bad_request", j(GOOD), path="/api/test%0A/events"),
    Bad("unknown_route", 404, "not_found", None, "/api/nope", "GET", None),
    Bad("unknown_nested_route", 404, "not_found", j(GOOD), "/api/test/events/extra"),
    Bad("get_ingest", 405, "method_not_allowed", None, "/api/events", "GET", None),
    Bad("delete_ingest", 405, "method_not_allowed", None, "/api/test/events", "DELETE", None),
    Bad("post_healthz", 405, "method_not_allowed", j(GOOD), "/healthz"),
    Bad("put_openapi", 405, "method_not_allowed", j(GOOD), "/api/openapi.json", "PUT"),
    Bad("patch_ingest", 405, "method_not_allowed", j(GOOD), "/api/events", "PATCH"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    tmp: Path = tmp_path_factory.mktemp("errors")
    with serve_in_thread(tmp, max_body_bytes=MAX_BODY, max_events=MAX_EVENTS) as server:
        reply = server.run(server.client.post_events(GOOD))
        assert reply.status == 202  # a non-empty log, so "unchanged" means something
        yield server


def send(server: ThreadedServer, bad: Bad) -> Reply:
    data: Any = bad.body
    if bad.chunked and bad.body is not None:
        body = bad.body

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 1024):
                yield body[i : i + 1024]

        data = chunks()
    return server.run(server.client.request(
        bad.method, bad.path, data=data, content_type=bad.content_type, headers=bad.headers
    ))


def assert_envelope(reply: Reply) -> dict[str, Any]:
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    assert all(isinstance(d, dict) for d in error["details"])
    return dict(error)


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[b.id for b in BAD_REQUESTS])
def test_bad_request_gets_envelope_and_changes_nothing(server: ThreadedServer, bad: Bad) -> None:
    event_log = server.client.event_log
    before = (event_log.last_seq, event_log.appended_events)
    reply = send(server, bad)
    assert reply.status == bad.status, reply.body
    error = assert_envelope(reply)
    assert error["code"] == bad.code
    assert bad.message in error["message"]
    if bad.code == "invalid_events":
        for d in error["details"]:
            assert {"field", "message"} <= set(d) and ({"event", "line"} & set(d))
    if bad.bad is not None:
        assert [(w, d[w]) for d in error["details"] for w in ("event", "line") if w in d] == bad.bad
    if bad.status == 405:
        assert reply.headers["Allow"]
    assert (event_log.last_seq, event_log.appended_events) == before


def test_table_covers_enough_kinds_of_bad_request() -> None:
    assert len(BAD_REQUESTS) >= 25
    assert len({b.id for b in BAD_REQUESTS}) == len(BAD_REQUESTS)
    assert {b.status for b in BAD_REQUESTS} == {400, 404, 405, 413, 415}


def mutate(rng: random.Random, body: bytes) -> bytes:
    """A random small corruption of a valid body: the inputs parsers trip on."""
    pos = rng.randrange(len(body) + 1)
    junk = rng.choice([b"", b"\x00", b"\xff", b'"', b"{", b"]", b",", b"NaN", b"-1e400",
                       b'"\\u', b"null", b"[]", b"{}", b"\n", rng.randbytes(3)])
    cut = rng.choice([0, 0, 1, 2, 5])
    return body[:pos] + junk + body[pos + cut :]


def test_random_corruptions_never_cause_a_server_error(
    server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(20240601)
    seeds = [j(GOOD), j(GOOD, GOOD), lines(GOOD, GOOD),
             j({"type": "run", "component": "test", "run_id": "r", "params": {"a": [1, 2]}})]
    statuses: set[int] = set()
    for _ in range(300):
        body = mutate(rng, rng.choice(seeds))
        content_type = rng.choice([JSON, "application/x-ndjson", None])
        reply = server.run(server.client.request("POST", "/api/events", data=body,
                                                 content_type=content_type))
        statuses.add(reply.status)
        assert reply.status == 202 or 400 <= reply.status < 500, (body, reply.body)
        if reply.status != 202:
            assert_envelope(reply)
    assert 400 in statuses
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# -- requests aiohttp cannot parse ---------------------------------------------------


@dataclass
class Unparsable:
    id: str
    data: bytes
    status: int
    code: str


def long_header(size: int) -> bytes:
    """A header whose value is `size` bytes."""
    return b"X-Long: " + b"a" * size


UNPARSABLE = [
    Unparsable("nul_in_header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
               400, "bad_request"),
    Unparsable("nul_in_key", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
               b"X-API-Key: rl_SECRET\x00\r\n\r\n", 400, "bad_request"),
    Unparsable("nul_in_url", b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    Unparsable("malformed_request_line", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    Unparsable("bad_method", b"G(T /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"),
    Unparsable("bad_version", b"GET /healthz HTTP/9\r\n\r\n", 400, "bad_request"),
    Unparsable("tls_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "bad_request"),
    Unparsable("bad_content_length", b"POST /api/events HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: abc\r\n\r\n", 400, "bad_request"),
    Unparsable("url_too_long", b"GET /" + b"a" * (MAX_URL_BYTES + 1) + b" HTTP/1.1\r\n\r\n",
               414, "uri_too_long"),
    Unparsable("header_too_long", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
               + long_header(MAX_HEADER_LINE_BYTES + 1) + b"\r\n\r\n", 431, "headers_too_large"),
    Unparsable("header_name_too_long", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX"
               + b"a" * MAX_HEADER_LINE_BYTES + b": 1\r\n\r\n", 431, "headers_too_large"),
    Unparsable("too_many_headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
               + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n",
               431, "headers_too_large"),
]


async def exchange(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection; the answer's status, headers, body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        body = await reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def bad_requests_counted(server: ThreadedServer, status: int) -> int:
    reply = server.run(server.client.get("/metrics"))
    assert reply.status == 200, reply.body
    prefix = f'runlake_http_bad_requests_total{{status="{status}"}} '
    return sum(int(line.removeprefix(prefix)) for line in reply.body.decode().splitlines()
               if line.startswith(prefix))


def server_warnings(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What the server logged at WARNING or above, less asyncio's debug-mode notes of a
    slow callback (the test servers run in debug mode; a loaded machine makes them)."""
    return [r for r in records if r.levelno >= logging.WARNING and r.name != "asyncio"]


@pytest.mark.parametrize("bad", UNPARSABLE, ids=[b.id for b in UNPARSABLE])
def test_request_aiohttp_cannot_parse_gets_envelope_one_warning_and_a_count(
    server: ThreadedServer, bad: Unparsable, caplog: pytest.LogCaptureFixture
) -> None:
    before = bad_requests_counted(server, bad.status)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    status, headers, body = server.run(exchange(server.client.url, bad.data))
    records = list(caplog.records)
    assert status == bad.status, body
    assert headers["content-type"].startswith("application/json")
    error = assert_envelope(Reply(status, {"Content-Type": headers["content-type"]}, body))
    assert error["code"] == bad.code
    assert bad_requests_counted(server, bad.status) == before + 1
    warnings = server_warnings(records)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING and warnings[0].exc_info is None
    message = warnings[0].getMessage()
    assert f"status={bad.status}" in message and "\n" not in message
    assert "SECRET" not in message and "aaaaaaaa" not in message  # no request bytes


def test_url_and_header_at_their_limits_are_parsed(server: ThreadedServer) -> None:
    """One byte under each 414/431 case above is a request the app answers."""
    path = b"/" + b"a" * (MAX_URL_BYTES - 1)
    status, _, body = server.run(exchange(server.client.url,
                                          b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found", body
    request = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + long_header(MAX_HEADER_LINE_BYTES)
               + b"\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS - 2))
               + b"\r\n")
    status, _, body = server.run(exchange(server.client.url, request))
    assert status == 200, body


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_body_that_does_not_decode_is_400_counted_and_logged_once(
    server: ThreadedServer, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Content-Encoding the body does not match: aiohttp fails to decode it while the
    body is read; that is the client's error (400), not a server failure (500)."""
    event_log = server.client.event_log
    before = (event_log.last_seq, event_log.appended_events, bad_requests_counted(server, 400))
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    reply = server.run(server.client.request("POST", "/api/events", data=j(GOOD),
                                             headers={"Content-Encoding": encoding}))
    records = list(caplog.records)
    assert reply.status == 400, reply.body
    error = assert_envelope(reply)
    assert error["code"] == "bad_request" and encoding in error["message"]
    warnings = server_warnings(records)
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, warnings
    assert warnings[0].exc_info is None
    assert (event_log.last_seq, event_log.appended_events,
            bad_requests_counted(server, 400)) == (*before[:2], before[2] + 1)
