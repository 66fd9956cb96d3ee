"""Streamed export (`POST /api/{c}/db/export`, `GET /api/db/export`) against real servers.

Expected events are the events the test sent, filtered in plain Python; expected
runs are what `/runs` answers. Re-ingesting an export into a fresh data folder
must reproduce the statistics exactly.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pyarrow.parquet as pq
import pytest
from helpers.compare import assert_same_json
from helpers.plain_http import call
from helpers.server import Reply, ServerProcess, ThreadedServer, serve_in_thread

from runlake import demo
from runlake.api import export as export_module
from runlake.api.middleware import CLIENT_CLOSED
from runlake.api.state import HTTP_METRICS, SETTINGS
from runlake.events import LOG_SCHEMA, decode_events, events_to_table
from runlake.ingest.files import load_parquet
from runlake.views.queries import RUN_COLUMNS

NOW = datetime.now(UTC).replace(microsecond=0)
ENC = msgspec.json.Encoder()
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
MEDIA = {"ndjson": "application/x-ndjson", "json": "application/json",
         "parquet": "application/vnd.apache.parquet"}


def at(minutes: float) -> str:
    return (NOW - timedelta(days=1) + timedelta(minutes=minutes)).isoformat()


def edge_events() -> list[dict[str, Any]]:
    """What demo data lacks: deletes (run, batch, and a run restarted after its
    delete), a duplicate id, odd strings, time offsets and epoch seconds."""
    t = {"component": "test"}
    return [
        {**t, "type": "batch", "batch_id": "b-del", "expected_count": 2, "ts": at(0)},
        {**t, "type": "run", "run_id": "x-b1", "batch_id": "b-del", "ts": at(1)},
        {**t, "type": "run", "run_id": "x-b2", "batch_id": "b-del", "ts": at(1)},
        {**t, "type": "delete", "batch_id": "b-del", "ts": at(2)},
        {**t, "type": "run", "run_id": "x-del", "model": "m", "ts": at(3), "id": "x-1"},
        {**t, "type": "delete", "run_id": "x-del", "ts": at(4)},
        {**t, "type": "status", "run_id": "x-again", "status": "running", "ts": at(5)},
        {**t, "type": "delete", "run_id": "x-again", "ts": at(6)},
        {**t, "type": "run", "run_id": "x-again", "model": "m2", "ts": at(7),
         "params": {"nested": {"list": [1, 2.5, None, "é\n\"q\""]}, "big": 2**53 + 1}},
        {**t, "type": "status", "run_id": "x-again", "status": "completed", "ts": at(8)},
        # Same id as x-1: a duplicate the fold drops, and must drop again after re-ingest.
        {**t, "type": "run", "run_id": "x-dup", "model": "dup", "ts": at(9), "id": "x-1"},
        {**t, "type": "metric", "run_id": "x-again", "name": "loss", "value": 0.1 + 0.2,
         "unit": "µ\u2028s", "step": 3, "ts": (NOW - timedelta(hours=20)).timestamp()},
        {**t, "type": "tag", "run_id": "x-again", "key": "k", "value": "", "ts":
            (NOW - timedelta(hours=19)).isoformat().replace("+00:00", "+05:30")},
        {**t, "type": "step", "run_id": "x-again", "step": "s", "status": "running",
         "progress": 0.5, "ts": at(10)},
        {**t, "type": "log", "run_id": "x-again", "level": "error", "message": "ü\tz",
         "ts": at(11)},
        {**t, "type": "result", "run_id": "x-again", "test": "t::a", "outcome": "xfailed",
         "duration_s": 0.0, "ts": at(12)},
        {**t, "type": "artifact", "run_id": "x-again", "name": "a", "uri": "s3://b/k",
         "size_bytes": 0, "media_type": "text/plain", "ts": at(13)},
    ]


def all_events() -> list[dict[str, Any]]:
    # Ids on half the demo runs: an export keeps ids, and leaves absent ones absent.
    with_ids = list(demo.generate(150, seed=11, with_ids=True))
    without = list(demo.generate(150, seed=12, now=NOW.timestamp() - 86_400))
    return with_ids + without + edge_events()


EVENTS = all_events()


def wire_ts(value: str | float) -> datetime:
    """An event time as the log keeps it: UTC, whole microseconds."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).astimezone(UTC)
    return datetime.fromtimestamp(round(value * 1_000_000) / 1_000_000, UTC)


def normal(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "ts": wire_ts(event["ts"])}


def expected_events(component: str | None, since: datetime | None = None,
                    until: datetime | None = None) -> list[dict[str, Any]]:
    return [e for e in map(normal, EVENTS)
            if (component is None or e["component"] == component)
            and (since is None or e["ts"] >= since) and (until is None or e["ts"] < until)]


def parse(body: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt == "ndjson":
        return [msgspec.json.decode(line) for line in body.splitlines()]
    if fmt == "json":
        return msgspec.json.decode(body)
    return pq.read_table(io.BytesIO(body)).to_pylist()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    # No roll during the module: the data folder's listing must stay put (filename test).
    with serve_in_thread(tmp_path_factory.mktemp("export"), roll_seconds=3600) as server:
        # BytesIO: aiohttp warns about (and the suite errors on) large raw-bytes bodies.
        body = io.BytesIO(ENC.encode_lines(EVENTS))
        reply = server.run(server.client.request("POST", "/api/events", data=body,
                                                 content_type="application/x-ndjson"))
        assert reply.status == 202, reply.body
        last = reply.json()["last_seq"]
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield server


def export(server: ThreadedServer, component: str | None = "test", **body: Any) -> Reply:
    if component is None:
        query = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in body.items())
        return server.run(server.client.get(f"/api/db/export?{query}"))
    return server.run(server.client.request("POST", f"/api/{component}/db/export", json=body))


def runs(server: ThreadedServer, component: str, query: str = "") -> list[dict[str, Any]]:
    reply = server.run(server.client.get(f"/api/{component}/db/runs?limit=1000{query}"))
    assert reply.status == 200, reply.body
    return reply.json()["items"]


# -- a client that goes away ----------------------------------------------------------


def test_client_gone_mid_export_cancels_it_and_releases_the_source(
    lake: ThreadedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The client disconnects while the server reads its next batch: the handler is
    cancelled (499), the source is closed, nothing is logged as an error, and the
    next export streams as before."""
    second_read, release, closing = threading.Event(), threading.Event(), threading.Event()
    real_next, real_close = export_module._Pump.next, export_module._Pump.close
    reads = 0

    def next_chunk(self: Any) -> bytes | None:
        nonlocal reads
        reads += 1
        if reads == 2:  # the first chunk is out; hold the second until the client has gone
            second_read.set()
            assert release.wait(60), "the test never released the read"
        return real_next(self)

    def close(self: Any) -> None:
        closing.set()
        real_close(self)

    monkeypatch.setattr(export_module._Pump, "next", next_chunk)
    monkeypatch.setattr(export_module._Pump, "close", close)
    assert lake.client.app is not None
    requests = lake.client.app[HTTP_METRICS].requests
    key = ("/api/{component}/db/export", "POST", CLIENT_CLOSED)
    before = requests.get(key, 0)

    async def leave_mid_stream() -> None:
        host, port = lake.client.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/test/db/export HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        assert b" 200 " in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0]
        assert await asyncio.to_thread(second_read.wait, 60), "the export never read on"
        writer.close()
        await writer.wait_closed()
        try:  # the server cancels the handler, which closes the source (after the read)
            assert await asyncio.to_thread(closing.wait, 60), "the export was not cancelled"
        finally:
            release.set()
        async with asyncio.timeout(60):  # a guard against hanging, not a measurement
            while requests.get(key, 0) == before:
                await asyncio.sleep(0.01)

    lake.run(leave_mid_stream())
    assert requests.get(key, 0) == before + 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    reply = export(lake, "test")
    assert reply.status == 200, reply.body
    assert [normal(e) for e in parse(reply.body, "ndjson")] == expected_events("test")


# -- formats -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "json", "parquet"])
@pytest.mark.parametrize("what", ["events", "runs"])
def test_each_format_streams_and_parses(lake: ThreadedServer, what: str, fmt: str) -> None:
    reply = export(lake, "test", what=what, format=fmt)
    assert reply.status == 200, reply.body
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert reply.headers["Content-Type"] == MEDIA[fmt]
    disposition = reply.headers["Content-Disposition"]
    assert re.fullmatch(rf'attachment; filename="test-{what}-\d{{8}}T\d{{6}}Z\.{fmt}"',
                        disposition), disposition
    items = parse(reply.body, fmt)
    if what == "runs":
        assert_runs(items, runs(lake, "test"), fmt)
    elif fmt == "parquet":
        assert_parquet_events(reply.body, lake)
    else:
        assert [normal(e) for e in items] == expected_events("test")


def assert_runs(items: list[dict[str, Any]], listed: list[dict[str, Any]], fmt: str) -> None:
    ids = {e["run_id"] for e in EVENTS if e["component"] == "test" and "run_id" in e}
    # deleted, or named only by a duplicate event the fold drops
    assert {r["run_id"] for r in items} == ids - {"x-b1", "x-b2", "x-del", "x-dup"}
    order = [(r["component"], r["created_at"], r["run_id"]) for r in items]
    assert order == sorted(order)
    if fmt == "parquet":  # times as UTC timestamps, params as JSON text
        for r in items:
            r["params"] = None if r["params"] is None else json.loads(r["params"])
            for k in ("created_at", "started_at", "finished_at", "updated_at"):
                r[k] = None if r[k] is None else r[k].isoformat().replace("+00:00", "Z")
    assert sorted(items, key=lambda r: r["run_id"]) == sorted(listed, key=lambda r: r["run_id"])
    assert list(items[0]) == [c.strip() for c in RUN_COLUMNS.split(",")]


def assert_parquet_events(body: bytes, lake: ThreadedServer) -> None:
    table = pq.read_table(io.BytesIO(body))
    assert table.schema.equals(LOG_SCHEMA, check_metadata=True)  # the log's own schema
    expected = expected_events("test")
    assert table.num_rows == len(expected)
    seqs = table.column("seq").to_pylist()
    assert seqs == sorted(seqs)
    assert set(table.column("component").to_pylist()) == {"test"}
    # The inbox's Parquet loader takes the file, giving the NDJSON export's events.
    from_parquet = load_parquet(body, "export.parquet")
    ndjson = export(lake, "test", format="ndjson").body
    assert from_parquet == decode_events(ndjson, ndjson=True)


@pytest.mark.parametrize("fmt", ["ndjson", "json", "parquet"])
def test_unknown_component_is_404_and_an_empty_selection_exports_nothing(
        lake: ThreadedServer, fmt: str) -> None:
    later = (NOW + timedelta(days=1)).isoformat()
    for what in ("events", "runs", "documents"):
        reply = export(lake, "nosuch", what=what, format=fmt)
        assert reply.status == 404, reply.body
        assert reply.json()["error"]["details"][0]["allowed"] == sorted(
            {e["component"] for e in EVENTS})
        reply = export(lake, "test", what=what, format=fmt, since=later)
        assert reply.status == 200, reply.body
        assert parse(reply.body, fmt) == []
        if fmt == "json":
            assert reply.body == b"[]"


def test_since_until_filter_events_by_ts_and_runs_by_created_at(lake: ThreadedServer) -> None:
    since = NOW - timedelta(days=30)
    until = NOW - timedelta(hours=20, minutes=1)
    # `since` written with an offset: the filter compares instants.
    body = {"since": (since + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00"),
            "until": until.isoformat().replace("+00:00", "Z")}
    got = [normal(e) for e in parse(export(lake, "test", **body).body, "ndjson")]
    want = expected_events("test", since, until)
    assert got == want
    assert 0 < len(want) < len(expected_events("test"))
    # since inclusive, until exclusive: an event exactly at either bound
    first = want[0]["ts"]
    exact = parse(export(lake, "test", since=first.isoformat(), until=first.isoformat()).body,
                  "ndjson")
    assert exact == []
    exact = parse(export(lake, "test", since=first.isoformat()).body, "ndjson")
    assert normal(exact[0]) == want[0]

    query = (f"&since={urllib.request.quote(body['since'])}"
             f"&until={urllib.request.quote(body['until'])}")
    listed = runs(lake, "test", query)
    got_runs = parse(export(lake, "test", what="runs", format="json", **body).body, "json")
    assert {r["run_id"] for r in got_runs} == {r["run_id"] for r in listed}
    assert 0 < len(got_runs) < len(runs(lake, "test"))
    for r in got_runs:
        assert since <= datetime.fromisoformat(r["created_at"]) < until


def test_get_export_spans_every_component(lake: ThreadedServer) -> None:
    reply = export(lake, None, format="ndjson")
    assert reply.status == 200, reply.body
    assert re.fullmatch(r'attachment; filename="all-events-\d{8}T\d{6}Z\.ndjson"',
                        reply.headers["Content-Disposition"])
    assert [normal(e) for e in parse(reply.body, "ndjson")] == expected_events(None)
    got = parse(export(lake, None, what="runs", format="json").body, "json")
    components = {e["component"] for e in EVENTS}
    assert {r["component"] for r in got} == components
    assert len(got) == sum(len(runs(lake, c)) for c in components)


# -- bad requests --------------------------------------------------------------------

BAD_BODIES = [
    ({"what": "tasks"}, "what"),
    ({"format": "csv"}, "format"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-01-01T00:00:00"}, "since"),  # no timezone
    ({"until": 1700000000}, "until"),
    ({"filename": 42}, "filename"),
    ({"filename": "a" * 1025}, "filename"),
    ({"min_seq": -1}, "min_seq"),
    ({"formatt": "json"}, "formatt"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_bad_body_is_400_naming_the_field(lake: ThreadedServer, body: dict[str, Any],
                                          field: str) -> None:
    reply = export(lake, "test", **body)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "bad_request"
    assert error["details"][0]["field"] == field
    assert field in error["message"]


def test_min_seq_beyond_the_log_is_409_naming_the_field(lake: ThreadedServer) -> None:
    """As every read's `min_seq` (docs/limits.md): a seq the log has not reached is a
    conflict with the log's state, not a malformed request."""
    reply = export(lake, "test", what="runs", min_seq=10**12)
    assert reply.status == 409, reply.body
    error = reply.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"][0]["field"] == "min_seq" and "min_seq" in error["message"]


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"events"', b"\xff", b'{"what": "\xff\xfe"}',
                                 b"[" * 5000 + b"]" * 5000])
def test_body_that_is_not_an_object_is_400(lake: ThreadedServer, raw: bytes) -> None:
    reply = lake.run(lake.client.request("POST", "/api/test/db/export", data=raw))
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/x-ndjson",
    "application/xml", "application/json; charset=latin-1"])
def test_body_that_is_not_json_is_415(lake: ThreadedServer, content_type: str) -> None:
    """As ingest: a body whose Content-Type is not JSON is refused, not read as JSON."""
    reply = lake.run(lake.client.request("POST", "/api/test/db/export",
                                         data=b'{"format": "json"}', content_type=content_type))
    assert reply.status == 415, reply.body
    error = reply.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert content_type.split(";")[0] in error["message"] or "latin-1" in error["message"]


@pytest.mark.parametrize(("content_type", "data"), [
    (None, None), (None, b""), ("text/plain", b""), ("application/x-www-form-urlencoded", b" "),
    ("application/json; charset=utf-8", b'{"format": "ndjson"}'), (None, b'{"format": "ndjson"}'),
], ids=["no_body", "empty_body", "empty_text", "blank_form", "json_utf8", "json_untyped"])
def test_no_body_or_a_json_body_exports(lake: ThreadedServer, content_type: str | None,
                                        data: bytes | None) -> None:
    """No body (whatever a client's tool labels it) means the defaults: all events, NDJSON."""
    reply = lake.run(lake.client.request("POST", "/api/test/db/export", data=data,
                                         content_type=content_type))
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith(MEDIA["ndjson"])
    assert [normal(e) for e in parse(reply.body, "ndjson")] == expected_events("test")


def test_oversized_body_is_413(lake: ThreadedServer) -> None:
    reply = export(lake, "test", filename="a" * 70_000)
    assert reply.status == 413, reply.body
    assert reply.json()["error"]["code"] == "payload_too_large"


BAD_QUERIES = [
    ("format=xml", "format"),
    ("what=events&what=runs", "what"),
    ("nope=1", "nope"),
    ("since=2026-13-01T00:00:00Z", "since"),
    ("filename=" + "a" * 1025, "filename"),
    ("min_seq=x", "min_seq"),
]


@pytest.mark.parametrize(("query", "param"), BAD_QUERIES, ids=[p for _, p in BAD_QUERIES])
def test_bad_query_is_400_naming_the_parameter(lake: ThreadedServer, query: str,
                                               param: str) -> None:
    reply = lake.run(lake.client.get(f"/api/db/export?{query}"))
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["details"][0]["parameter"] == param


def test_bad_component_in_url_is_400(lake: ThreadedServer) -> None:
    reply = lake.run(lake.client.request("POST", "/api/No%20Such/db/export", json={}))
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["details"][0]["parameter"] == "component"


# -- the download name -------------------------------------------------------------

TRICKS = [
    ("../../etc/passwd", "passwd.ndjson"),
    ("/etc/passwd", "passwd.ndjson"),
    ("..\\..\\Windows\\win.ini", "win.ndjson"),
    ("/tmp/../../root/.ssh/authorized_keys", "authorized_keys.ndjson"),
    ("report\x00.sh", "report.ndjson"),
    ("x\x00/../../etc/shadow\x00", "shadow.ndjson"),
    ("evil\r\nX-Injected: 1", "evilX-Injected1.ndjson"),
    ('quote".json"; filename*=UTF-8\'\'x', "quote.ndjson"),
    (".bashrc", "bashrc.ndjson"),
    ("nightly.csv", "nightly.ndjson"),  # .json/.ndjson/.jsonl/.parquet choose the format
    ("a" * 300 + ".txt", "a" * 93 + ".ndjson"),
    ("....", None),
    ("/", None),
    ("\x00", None),
    ("ünïcødé", "ncd.ndjson"),
    ("", None),
]


def tree(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_filename_tricks_never_touch_the_filesystem(
    lake: ThreadedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the server shares this process: a relative write lands here
    assert lake.client.app is not None
    data = lake.client.app[SETTINGS].data
    before = tree(data, cwd)
    etc = {p: os.stat(p).st_mtime for p in ("/etc/passwd", "/etc/shadow") if os.path.exists(p)}
    for requested, expected in TRICKS:
        if method == "POST":
            reply = export(lake, "test", filename=requested)
        else:
            query = urllib.request.quote(requested, safe="")
            reply = lake.run(lake.client.get(f"/api/db/export?filename={query}"))
        assert reply.status == 200, (requested, reply.body)
        disposition = reply.headers["Content-Disposition"]
        name = re.fullmatch(r'attachment; filename="([^"]*)"', disposition)
        assert name is not None, disposition
        assert SAFE_NAME.fullmatch(name[1]) and name[1].endswith(".ndjson"), disposition
        if expected is not None:
            assert name[1] == expected, requested
        else:  # nothing usable: the server's own name
            assert re.fullmatch(r"(test|all)-events-\d{8}T\d{6}Z\.ndjson", name[1])
        assert "X-Injected" not in reply.headers
        assert reply.body.count(b"\n") == len(expected_events("test" if method == "POST"
                                                             else None))
    assert tree(data, cwd) == before
    assert list(cwd.iterdir()) == []
    assert {p: os.stat(p).st_mtime for p in etc} == etc


# -- re-ingest -----------------------------------------------------------------------

STAT_PATHS = ("/db/models/stats?limit=1000", "/db/hardware/stats?limit=1000",
              "/db/runs?limit=1000&sort=run_id", "/db/batches?limit=1000",
              "/db/performance?days=90")


def answers(server: ThreadedServer, components: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in sorted(components):
        for path in STAT_PATHS:
            reply = server.run(server.client.get(f"/api/{c}{path}"))
            assert reply.status == 200, reply.body
            out[c + path] = reply.json()
    reply = server.run(server.client.get("/api/db/overview"))
    overview = reply.json()["components"]
    out["overview"] = {c: overview.get(c) for c in sorted(components)}
    return out


@pytest.mark.parametrize(("component", "fmt"), [("test", "ndjson"), (None, "json")])
def test_events_export_reingested_reproduces_stats(
    lake: ThreadedServer, tmp_path: Path, component: str | None, fmt: str
) -> None:
    reply = export(lake, component, format=fmt)
    assert reply.status == 200, reply.body
    components = {component} if component else {e["component"] for e in EVENTS}
    with serve_in_thread(tmp_path) as fresh:
        content_type = "application/x-ndjson" if fmt == "ndjson" else "application/json"
        posted = fresh.run(fresh.client.request("POST", "/api/events",
                                                data=io.BytesIO(reply.body),
                                                content_type=content_type))
        assert posted.status == 202, posted.body
        last = posted.json()["last_seq"]
        assert fresh.run(fresh.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        want, got = answers(lake, components), answers(fresh, components)
    # Floats may differ in their last bits: DuckDB sums in an order that depends on how
    # the events were batched (the fold property test allows 1e-9; this allows 1e-12).
    assert_same_json(got, want, rel_tol=1e-12, finite=True)
    assert got["test/db/runs?limit=1000&sort=run_id"]["total"] > 30  # something to compare


# -- a million events: constant memory ------------------------------------------------

MILLION = 1_000_000


def readyz(url: str) -> dict[str, Any]:
    """The body of /readyz, also while it answers 503 (the fold lags)."""
    return call(url, "/readyz", content_type=None)[1]


@dataclass
class Streamed:
    size: int  # bytes received
    lines: int  # newline-terminated lines among them (NDJSON: whole events)
    tail: bytes  # the last up to 4 KiB

    @property
    def last_line(self) -> bytes:
        return self.tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]


def stream(server: ServerProcess, method: str, path: str, body: bytes | None = None,
           stop_after: int | None = None) -> Streamed:
    """What came of a streamed answer, read 1 MiB at a time (up to `stop_after` bytes)."""
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        size, lines, tail = 0, 0, b""
        while chunk := resp.read(1 << 20):
            size += len(chunk)
            lines += chunk.count(b"\n")
            tail = (tail + chunk)[-4096:]
            if stop_after is not None and size >= stop_after:
                break
        return Streamed(size, lines, tail)
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_million_event_export_keeps_server_memory_flat(start_server_process: Any,
                                                       tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo.drop_parquet(data / "inbox", MILLION)
    server = start_server_process(data)
    # ~30 s unloaded; the bound guards against hanging and measures nothing (90 s
    # could be run past on a loaded machine).
    deadline = time.monotonic() + 240
    while (r := readyz(server.url))["folded_seq"] < MILLION:
        assert time.monotonic() < deadline, r
        time.sleep(0.2)
    proc = psutil.Process(server.proc.pid)
    baseline = max(proc.memory_info().rss for _ in range(5))
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, name="rss-sampler")
    sampler.start()
    try:
        events = stream(server, "GET", "/api/db/export")  # every event, NDJSON
        parquet = stream(server, "GET", "/api/db/export?format=parquet")
        runs = stream(server, "POST", "/api/test/db/export", b'{"what": "runs"}')
    finally:
        done.set()
        sampler.join()
    growth = (peak - baseline) / 2**20
    assert growth < 100, f"server RSS grew {growth:.0f} MiB exporting {MILLION} events"
    assert events.size > 100 * MILLION  # every event went out (~200 bytes each)
    assert events.lines == MILLION  # one line per event, each ended by its newline
    assert events.tail.endswith(b"\n")  # nothing after the last line
    assert msgspec.json.decode(events.last_line)["type"]  # ends on a whole event
    assert parquet.size > 0 and runs.size > 0

    # A client that leaves mid-stream costs nothing: the server answers and stops cleanly.
    assert stream(server, "GET", "/api/db/export", stop_after=1 << 20).size >= 1 << 20
    stream(server, "POST", "/api/test/db/export", b'{"what": "runs"}', stop_after=1)
    assert readyz(server.url)["last_seq"] == MILLION
    assert server.stop() == 0, server.stderr()[-3000:]


def test_runs_export_pages_by_key_without_holding_a_cursor(tmp_path: Path) -> None:
    """Keyset pages of 3 give every run once, in order, ties on created_at included;
    between pages no read is in flight (a replay could swap the file)."""
    from runlake.ingest.fold import fold_table
    from runlake.views.db import Database
    from runlake.views.export import runs_batches

    events = [{"type": "run", "component": comp, "run_id": f"r{i}",
               "ts": "2026-01-01T00:00:00Z" if i % 2 else f"2026-01-0{1 + i % 5}T00:00:00Z"}
              for comp in ("alpha", "beta") for i in range(11)]
    db = Database(tmp_path / "runlake.duckdb").open()
    try:
        fold_table(db.connection, events_to_table(
            decode_events(msgspec.json.encode(events)), 1, 0))
        seen, sizes = [], []
        for batch in runs_batches(db, None, batch_rows=3):
            assert db._readers == 0  # no read is held across pages
            seen += [(r["component"], r["created_at"], r["run_id"]) for r in batch.to_pylist()]
            sizes.append(batch.num_rows)
        assert sizes == [3] * 7 + [1]  # paged, not one read
        assert len(seen) == 22 and seen == sorted(seen)
        assert len(set(seen)) == 22
        only_beta = [r for b in runs_batches(db, ["beta"], batch_rows=4) for r in b.to_pylist()]
        assert [r["run_id"] for r in only_beta] == [r for c, _, r in seen if c == "beta"]
    finally:
        db.close()
