"""Ingest over real HTTP: one event, arrays and NDJSON; seqs; the log's contents;
appends while the fold is stopped; and the operations routes."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runlake.api.export import ExportRequest
from runlake.api.routes import ROUTE_TABLE
from runlake.api.state import FOLD
from runlake.events import EventLog

pytestmark = pytest.mark.usefixtures("no_leaks")

MakeServer = Callable[..., Any]


def metric(run_id: str, i: int, component: str | None = "test", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "metric", "run_id": run_id, "name": "loss",
                             "value": i / 10, "id": f"{run_id}-{i}", **extra}
    if component is not None:
        event["component"] = component
    return event


def read_log(log_dir: Path) -> list[dict[str, Any]]:
    """Every row of a stopped (or running) log, read the way any reader would."""
    with EventLog(log_dir, readonly=True) as event_log:
        return [row for batch in event_log.read() for row in batch.to_pylist()]


def test_one_event_array_and_ndjson_get_consecutive_seqs(
    make_server: MakeServer, tmp_path: Path
) -> None:
    async def main() -> None:
        async with make_server() as client:
            r = await client.post_events(metric("r1", 0))
            assert (r.status, r.json()) == (202, {"accepted": 1, "first_seq": 1, "last_seq": 1})
            r = await client.post_events([metric("r1", i) for i in range(1, 4)])
            assert (r.status, r.json()) == (202, {"accepted": 3, "first_seq": 2, "last_seq": 4})
            r = await client.post_events([metric("r2", i) for i in range(2)], ndjson=True)
            assert (r.status, r.json()) == (202, {"accepted": 2, "first_seq": 5, "last_seq": 6})
            body = b'{"type":"tag","component":"test","run_id":"r2","key":"k","value":"v"}'
            r = await client.request("POST", "/api/events", data=body,
                                     content_type="application/jsonl")
            assert (r.status, r.json()["first_seq"]) == (202, 7)
            r = await client.request("POST", "/api/events", data=b"\n" + body + b"\n\n",
                                     content_type="application/x-ndjson; charset=utf-8")
            assert (r.status, r.json()["first_seq"]) == (202, 8)
            assert r.headers["Content-Type"].startswith("application/json")

    asyncio.run(main())
    rows = read_log(tmp_path / "data" / "log")
    assert [r["seq"] for r in rows] == list(range(1, 9))
    assert [r["id"] for r in rows[:6]] == ["r1-0", "r1-1", "r1-2", "r1-3", "r2-0", "r2-1"]
    assert [r["type"] for r in rows[5:]] == ["metric", "tag", "tag"]
    assert rows[6]["tag_value"] == "v"


def test_missing_content_type_means_json(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            body = b'[{"type":"status","component":"test","run_id":"r","status":"running"}]'
            r = await client.request("POST", "/api/events", data=body, content_type=None)
            assert (r.status, r.json()["accepted"]) == (202, 1)

    asyncio.run(main())


def test_gzip_encoded_body_is_accepted(make_server: MakeServer) -> None:
    body = gzip.compress(b"".join(msgspec.json.encode(metric("z", i)) + b"\n" for i in range(50)))

    async def main() -> None:
        async with make_server() as client:
            r = await client.request("POST", "/api/events", data=body,
                                     content_type="application/x-ndjson",
                                     headers={"Content-Encoding": "gzip"})
            assert (r.status, r.json()["accepted"]) == (202, 50)

    asyncio.run(main())


def test_component_route_implies_component(make_server: MakeServer, tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server() as client:
            events = [metric("g1", 0, component=None), metric("g1", 1, component="generator")]
            r = await client.post_events(events, path="/api/generator/events")
            assert (r.status, r.json()["accepted"]) == (202, 2)
            r = await client.post_events([metric("g2", 0, component=None)],
                                         path="/api/generator/events", ndjson=True)
            assert r.status == 202

    asyncio.run(main())
    rows = read_log(tmp_path / "data" / "log")
    assert [r["component"] for r in rows] == ["generator"] * 3


def test_large_body_is_decoded_off_the_loop_and_appended_whole(
    make_server: MakeServer, tmp_path: Path
) -> None:
    n = 5_000  # ~500 KiB of NDJSON: over the inline-decoding threshold

    async def main() -> None:
        async with make_server() as client:
            r = await client.post_events([metric("big", i) for i in range(n)], ndjson=True)
            assert (r.status, r.json()) == (202, {"accepted": n, "first_seq": 1, "last_seq": n})
            assert client.event_log.last_seq == n

    asyncio.run(main())
    assert [r["id"] for r in read_log(tmp_path / "data" / "log")] == [
        f"big-{i}" for i in range(n)
    ]


def test_concurrent_appends_get_distinct_contiguous_seqs(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            replies = await asyncio.gather(
                *(client.post_events(metric(f"c{i}", i)) for i in range(64))
            )
            assert {r.status for r in replies} == {202}
            seqs = sorted(r.json()["first_seq"] for r in replies)
            assert seqs == list(range(1, 65))
            # Readers see the running log too (segments plus the write-ahead tail).
            rows = await asyncio.to_thread(read_log, client.event_log.directory)
            assert {r["id"] for r in rows} == {f"c{i}-{i}" for i in range(64)}

    asyncio.run(main())


def test_appends_continue_while_the_fold_is_stopped(
    make_server: MakeServer, tmp_path: Path
) -> None:
    async def main() -> None:
        async with make_server() as client:
            assert client.app is not None
            fold = client.app[FOLD]
            await asyncio.to_thread(fold.stop)
            r = await client.post_events([metric("s", i) for i in range(10)])
            assert (r.status, r.json()["last_seq"]) == (202, 10)
            ready = await client.get("/readyz")
            assert ready.status == 503
            assert ready.json()["status"] == "not_running"
            assert ready.json()["lag_events"] == 10
            await asyncio.to_thread(fold.start)
            assert await fold.wait_folded(10, timeout=30)
            ready = await client.get("/readyz")
            assert (ready.status, ready.json()["status"]) == (200, "ready")

    asyncio.run(main())
    assert len(read_log(tmp_path / "data" / "log")) == 10


def test_healthz_and_readyz(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            r = await client.get("/healthz")
            assert (r.status, r.json()) == (200, {"status": "ok"})
            r = await client.post_events([metric("h", i) for i in range(3)])
            assert client.app is not None
            assert await client.app[FOLD].wait_folded(3, timeout=30)
            r = await client.get("/readyz")
            body = r.json()
            assert r.status == 200
            assert set(body) == {"status", "last_seq", "folded_seq", "lag_events",
                                 "lag_seconds", "max_lag_seconds"}
            assert (body["status"], body["last_seq"], body["folded_seq"]) == ("ready", 3, 3)
            assert (body["lag_events"], body["lag_seconds"]) == (0, 0.0)

    asyncio.run(main())


def test_metrics_count_events_and_requests_by_route_template(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            await client.post_events([metric("m", i) for i in range(5)], path="/api/test/events")
            await client.post_events(metric("m", 9, component=None), path="/api/bench/events")
            await client.get("/nowhere")
            assert client.app is not None
            assert await client.app[FOLD].wait_folded(6, timeout=30)
            r = await client.get("/metrics")
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.body.decode()

        def value(sample: str) -> float:
            m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
            assert m, f"{sample} missing from /metrics"
            return float(m[1])

        assert value("runlake_events_appended_total") == 6
        assert value("runlake_events_folded_total") == 6
        assert value("runlake_fold_lag_events") == 0
        assert value("runlake_group_commits_total") >= 1
        route = 'route="/api/{component}/events",method="POST"'
        assert value(f'runlake_http_requests_total{{{route},status="202"}}') == 2
        assert value(f"runlake_http_request_duration_seconds_count{{{route}}}") == 2
        assert value(f'runlake_http_request_duration_seconds_bucket{{{route},le="+Inf"}}') == 2
        unmatched = 'runlake_http_requests_total{route="unmatched",method="GET",status="404"}'
        assert value(unmatched) == 1
        assert "/api/bench/events" not in text  # raw URLs never become labels

    asyncio.run(main())


def test_openapi_describes_every_route_in_the_table(make_server: MakeServer) -> None:
    async def main() -> dict[str, Any]:
        async with make_server() as client:
            r = await client.get("/api/openapi.json")
            assert r.status == 200
            doc: dict[str, Any] = r.json()
            return doc

    doc = asyncio.run(main())
    assert doc["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == {(r.method, r.path) for r in ROUTE_TABLE}
    for route in ROUTE_TABLE:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"] == route.summary
        assert str(route.status) in op["responses"]
    schemas = doc["components"]["schemas"]
    # /api/events needs each event's component; /api/{component}/events takes it from the URL.
    assert {"MetricEventWithComponent", "DeleteEventInComponent", "Accepted", "ErrorResponse",
            "Readiness"} <= set(schemas)
    for name in ("MetricEventWithComponent", "MetricEventInComponent"):
        assert schemas[name]["additionalProperties"] is False
    assert "component" in schemas["MetricEventWithComponent"]["required"]
    assert "component" not in schemas["MetricEventInComponent"]["properties"]
    ingest = doc["paths"]["/api/{component}/events"]["post"]
    assert ingest["parameters"][0]["in"] == "path"
    assert set(ingest["requestBody"]["content"]) == {
        "application/json", "application/x-ndjson", "application/jsonl"
    }
    # The GET export's query parameters are ExportRequest's fields, with their rules.
    params = {p["name"]: p for p in doc["paths"]["/api/db/export"]["get"]["parameters"]}
    assert list(params) == list(ExportRequest.__struct_fields__) == [
        "what", "format", "since", "until", "filename", "min_seq"]
    # No default: left out, the file name's extension or `what` decides (docs/compat.md).
    assert params["format"]["schema"] == {"enum": ["json", "ndjson", "parquet"]}
    assert params["since"]["schema"] == {"type": "string", "format": "date-time"}
    assert params["min_seq"]["schema"] == {"type": "integer", "minimum": 0, "default": 0}
