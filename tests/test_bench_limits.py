"""Smoke tests of the benchmark's limits (bench/limit_server.py, the plain DuckDB load): they
must do the work DESIGN §9 names, or runlake's ratios to them mean nothing."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from helpers.plain_http import call, request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fold as fold_bench
import http_api
from limit_server import GroupWriter

from runlake.events import EventLog

NDJSON = "application/x-ndjson"


def metric(run: str, value: float) -> bytes:
    return json.dumps({"type": "metric", "component": "bench", "run_id": run, "name": "x",
                       "value": value}).encode()


@pytest.fixture
def limit(tmp_path: Path):
    server = http_api.start_limit(tmp_path)
    yield server, tmp_path / "events.raw"
    server.stop()


def test_ingest_appends_the_raw_bytes_and_numbers_events(limit) -> None:
    server, raw = limit
    first = metric("a", 1) + b"\n" + metric("a", 2) + b"\n"
    assert call(server.url, "/api/events", first, NDJSON) == (
        202, {"accepted": 2, "first_seq": 1, "last_seq": 2})
    second = metric("b", 3)
    assert call(server.url, "/api/events", second) == (
        202, {"accepted": 1, "first_seq": 3, "last_seq": 3})
    assert raw.read_bytes() == first + second + b"\n"  # acknowledged: already on disk
    assert call(server.url, "/stats")[1] == {"appends": 2, "syncs": 2}


def test_bad_events_get_a_400_naming_them_and_append_nothing(limit) -> None:
    server, raw = limit
    good = metric("a", 1)
    bad = json.dumps({"type": "metric", "component": "bench", "run_id": "a", "name": "x",
                      "value": "high"}).encode()
    status, body = call(server.url, "/api/events", good + b"\n" + bad + b"\n", NDJSON)
    assert status == 400
    assert body["error"]["code"] == "invalid_events"
    assert [(d["line"], d["field"]) for d in body["error"]["details"]] == [(2, "value")]
    assert not raw.exists() or raw.read_bytes() == b""
    assert call(server.url, "/api/events", good) == (
        202, {"accepted": 1, "first_seq": 1, "last_seq": 1})  # no seq spent on the bad one


def test_cache_answers_the_bytes_it_was_given(limit) -> None:
    server, _ = limit
    body = json.dumps({"items": [{"model": "m", "runs": 3}], "total": 1}).encode()
    put = urllib.request.Request(server.url + "/cache/0", data=body, method="PUT")
    with urllib.request.urlopen(put, timeout=30) as resp:
        assert resp.status == 204
    assert request(server.url + "/cache/0") == (200, body)
    status, answer = call(server.url, "/cache/1")
    assert status == 404 and "'1'" in answer["error"]["message"]


def test_limit_reads_serve_each_route_its_own_answer(tmp_path: Path) -> None:
    bodies = {"small": b'{"a": 1}', "big": json.dumps({"items": list(range(5000))}).encode()}
    lat = asyncio.run(http_api.limit_reads(tmp_path, bodies, requests=3))
    assert {name: v["bytes"] for name, v in lat.items()} == {
        "small": len(bodies["small"]), "big": len(bodies["big"])}
    assert all(0 < v["p50"] <= v["p99"] for v in lat.values())


def test_writer_syncs_once_per_group_of_queued_bodies(tmp_path: Path) -> None:
    """While one group's fdatasync is held, five more bodies queue; they go out together,
    written in order, with one more fdatasync."""
    entered, release = threading.Event(), threading.Event()
    groups: list[int] = []

    def before_sync(size: int) -> None:
        groups.append(size)
        entered.set()
        release.wait()

    async def main() -> GroupWriter:
        writer = GroupWriter(tmp_path / "raw", asyncio.get_running_loop(), before_sync)
        try:
            first = writer.append(b"0", 1)
            await asyncio.to_thread(entered.wait)  # the writer holds group 1 before its sync
            rest = [writer.append(str(i).encode(), 2) for i in range(1, 6)]
            release.set()
            await asyncio.gather(first[2], *(done for _, _, done in rest))
            assert [(a, b) for a, b, _ in [first, *rest]] == [
                (1, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]
        finally:
            release.set()
            writer.close()
        return writer

    writer = asyncio.run(main())
    assert groups == [1, 5]
    assert (writer.appends, writer.syncs) == (6, 2)
    assert (tmp_path / "raw").read_bytes() == b"0\n1\n2\n3\n4\n5\n"


def test_plain_load_reads_every_event_of_the_log(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with EventLog(log_dir, roll_rows=400) as event_log:  # several segments
        appended = sum(fold_bench.append_demo(event_log, 500, seed=s) for s in range(3))
    assert len(list(log_dir.glob("*.parquet"))) > 1
    plain = fold_bench.measure_plain_load(log_dir, tmp_path / "plain.duckdb")
    assert plain["events"] == appended
    assert not (tmp_path / "plain.duckdb").exists()  # removed after
