"""End-to-end test of the seed-style baseline comparator (bench/baseline/server.py).

Runs the real server as a subprocess and checks every read endpoint against figures worked
out by hand from the small event stream below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.baseline_server import start, stop
from helpers.plain_http import call, get

# Recent enough for the 30-day performance window; whole seconds keep the arithmetic exact.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
OLD = T0 - timedelta(days=60)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(seconds: float, base: datetime = T0) -> str:
    return iso(base + timedelta(seconds=seconds))


def ev(kind: str, run_id: str | None, t: str | float, component: str = "test",
       **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind, "component": component, "ts": t, **fields}
    if run_id is not None:
        event["run_id"] = run_id
    return event


# "test" component. Durations: r1 60 s (from started_at), r2 30 s, r3 90 s (no running:
# from created_at), r4 10 s, r8 5 s; r5 is pending (no status), r7 still running.
TEST_EVENTS = [
    ev("batch", None, at(0), batch_id="b1", description="nightly", expected_count=2),
    ev("run", "r1", at(0), model="A", hardware="gpu", name="first", params={"lr": 0.1}),
    ev("status", "r1", at(10), status="running"),
    ev("metric", "r1", at(20), name="latency", value=1, unit="ms"),
    ev("metric", "r1", at(30), name="latency", value=2.0, unit="ms"),
    ev("metric", "r1", at(40), name="latency", value=3, unit="ms"),
    ev("tag", "r1", at(45), key="suite", value="smoke"),
    ev("status", "r1", at(70), status="completed"),
    ev("tag", "r1", at(71), key="suite", value="regress"),  # upsert replaces "smoke"
    ev("run", "r2", at(100), model="A", hardware="cpu", name="second"),
    ev("status", "r2", at(100), status="running"),
    ev("metric", "r2", at(110), name="latency", value=10),
    ev("status", "r2", at(130), status="failed", error="boom: out of memory"),
    ev("run", "r3", at(200), model="B", hardware="gpu", batch_id="b1"),
    ev("metric", "r3", at(210), name="throughput", value=100),
    ev("metric", "r3", at(220), name="throughput", value=200),
    # an offset timestamp and an epoch one must land on the same instants as the Z form
    ev("status", "r3", (T0 + timedelta(seconds=290)).astimezone(
        timezone(timedelta(hours=2))).isoformat(), status="completed"),
    ev("run", "r4", (T0 + timedelta(seconds=300)).timestamp(), model="B", hardware="cpu",
       batch_id="b1"),
    ev("status", "r4", at(310), status="running"),
    ev("result", "r4", at(315), test="tests/test_x.py::test_needle_case", outcome="passed"),
    ev("status", "r4", at(320), status="cancelled"),
    ev("run", "r5", at(400), model="A", hardware="gpu"),
    ev("run", "r6", at(500), model="B", hardware="gpu"),
    ev("metric", "r6", at(505), name="latency", value=999),
    ev("status", "r6", at(520), status="completed"),
    ev("delete", "r6", at(530)),
    ev("run", "r7", at(600), model="A", hardware="gpu"),
    ev("status", "r7", at(610), status="running"),
    ev("metric", "r7", at(620), name="latency", value=4),
    # r8 is 60 days old: outside the default performance window
    ev("run", "r8", at(0, OLD), model="B", hardware="cpu"),
    ev("metric", "r8", at(1, OLD), name="latency", value=1000),
    ev("status", "r8", at(5, OLD), status="completed"),
    # a whole batch that is deleted again, with its run
    ev("batch", None, at(700), batch_id="b2"),
    ev("run", "r9", at(700), model="A", hardware="gpu", batch_id="b2"),
    ev("status", "r9", at(710), status="failed", error="needle"),
    ev("delete", None, at(720), batch_id="b2"),
]

# "generator" component, sent to /api/generator/events without a component field.
GEN_EVENTS = [
    {"type": "run", "run_id": "g1", "ts": at(50), "model": "A", "hardware": "gpu"},
    {"type": "log", "run_id": "g1", "ts": at(55), "level": "info", "message": "found a NEEDLE"},
    {"type": "status", "run_id": "g1", "ts": at(60), "status": "completed"},
    {"type": "step", "run_id": "g2", "ts": at(80), "step": "encode-needle", "status": "running"},
    {"type": "status", "run_id": "g2", "ts": at(90), "status": "failed", "error": "x"},
]

STATUS0 = {"pending": 0, "running": 0, "completed": 0, "failed": 0, "cancelled": 0}


def by_status(**counts: int) -> dict[str, int]:
    return {**STATUS0, **counts}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = start(tmp_path_factory.mktemp("baseline") / "baseline.duckdb")
    try:
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def loaded(server: str) -> str:
    # the "test" stream in three shapes: one object, a JSON array, NDJSON
    assert call(server, "/api/events", json.dumps(TEST_EVENTS[0]).encode()) == (
        202, {"accepted": 1})
    assert call(server, "/api/events", json.dumps(TEST_EVENTS[1:20]).encode()) == (
        202, {"accepted": 19})
    ndjson = "\n".join(json.dumps(e) for e in TEST_EVENTS[20:]) + "\n"
    assert call(server, "/api/events", ndjson.encode(), "application/x-ndjson") == (
        202, {"accepted": len(TEST_EVENTS) - 20})
    assert call(server, "/api/generator/events", json.dumps(GEN_EVENTS).encode()) == (
        202, {"accepted": len(GEN_EVENTS)})
    return server


def test_bad_requests_are_rejected_whole(loaded: str) -> None:
    bad = [ev("run", "zz", at(1), model="Z"), {"type": "nope", "component": "test"},
           {"type": "metric", "component": "test", "name": "m", "value": 1}]
    status, body = call(loaded, "/api/events", json.dumps(bad).encode())
    assert status == 400
    assert [(d["index"], d["field"]) for d in body["error"]["details"]] == [
        (1, "type"), (2, "run_id")]
    status, body = call(loaded, "/api/events", b"{not json")
    assert status == 400 and "error" in body
    status, _ = call(loaded, "/api/other/events", json.dumps(ev("run", "x", 1)).encode())
    assert status == 400  # component in the body contradicts the URL
    assert get(loaded, "/api/test/db/runs", q="zz")["total"] == 0  # nothing was written
    # a wrong-typed field only DuckDB notices: a 400 too (earlier events stay, as in the seeds)
    status, body = call(loaded, "/api/events", json.dumps(
        {"type": "metric", "component": "test", "run_id": "zz", "name": "m", "value": 1,
         "step": "not-an-int"}).encode())
    assert status == 400 and body["error"]["details"][0]["index"] == 0
    assert get(loaded, "/api/test/db/runs", q="zz")["total"] == 0  # its transaction rolled back


def test_model_and_hardware_stats(loaded: str) -> None:
    models = get(loaded, "/api/test/db/models/stats")
    assert models["total"] == 2 and models["limit"] == 100 and models["offset"] == 0
    a, b = models["items"]
    assert a == {"model": "A", "runs": 4,
                 "by_status": by_status(pending=1, running=1, completed=1, failed=1),
                 "success_rate": 0.5, "duration_avg_s": 45.0, "duration_p50_s": 45.0,
                 "duration_p95_s": pytest.approx(58.5),  # 30 + 0.95 * (60 - 30)
                 "first_seen": at(0), "last_seen": at(610)}  # r7's running status
    assert b == {"model": "B", "runs": 3, "by_status": by_status(completed=2, cancelled=1),
                 "success_rate": 1.0, "duration_avg_s": 35.0, "duration_p50_s": 10.0,
                 "duration_p95_s": pytest.approx(82.0),  # [5, 10, 90] at position 1.9
                 "first_seen": at(0, OLD), "last_seen": at(320)}

    hw = get(loaded, "/api/test/db/hardware/stats")["items"]
    assert [(h["hardware"], h["runs"], h["success_rate"]) for h in hw] == [
        ("gpu", 4, 1.0), ("cpu", 3, 0.5)]
    assert (hw[0]["duration_avg_s"], hw[0]["duration_p95_s"]) == (75.0, pytest.approx(88.5))
    assert (hw[1]["duration_p50_s"], hw[1]["duration_p95_s"]) == (10.0, pytest.approx(28.0))
    page = get(loaded, "/api/test/db/hardware/stats", limit=1, offset=1)
    assert [h["hardware"] for h in page["items"]] == ["cpu"] and page["total"] == 2


def test_runs_list(loaded: str) -> None:
    everything = get(loaded, "/api/test/db/runs")
    assert everything["total"] == 7 and everything["limit"] == 50
    assert [r["run_id"] for r in everything["items"]] == [
        "r7", "r5", "r4", "r3", "r2", "r1", "r8"]  # default -created_at

    model_a = get(loaded, "/api/test/db/tasks", model="A", sort="created_at")
    assert [r["run_id"] for r in model_a["items"]] == ["r1", "r2", "r5", "r7"]
    r1, r2 = model_a["items"][:2]
    assert r2 == {"component": "test", "run_id": "r2", "model": "A", "hardware": "cpu",
                  "batch_id": None, "name": "second", "params": None, "status": "failed",
                  "error": "boom: out of memory", "created_at": at(100),
                  "started_at": at(100), "finished_at": at(130), "duration_s": 30.0,
                  "updated_at": at(130)}
    assert r1["params"] == {"lr": 0.1} and r1["duration_s"] == 60.0
    assert r1["updated_at"] == at(70)  # run/status events only: the tag at 71 is not a touch
    assert model_a["items"][2]["status"] == "pending"
    assert model_a["items"][2]["duration_s"] is None

    done = get(loaded, "/api/test/db/runs", status="completed", sort="duration_s")
    assert [(r["run_id"], r["duration_s"]) for r in done["items"]] == [
        ("r8", 5.0), ("r1", 60.0), ("r3", 90.0)]
    top = get(loaded, "/api/test/db/runs", sort="-duration_s", limit=2)
    assert [r["run_id"] for r in top["items"]] == ["r3", "r1"] and top["total"] == 7
    window = get(loaded, "/api/test/db/runs", since=at(100), until=at(400), sort="run_id")
    assert [r["run_id"] for r in window["items"]] == ["r2", "r3", "r4"]
    batch = get(loaded, "/api/test/db/runs", batch_id="b1", hardware="cpu")
    assert [r["run_id"] for r in batch["items"]] == ["r4"]
    assert get(loaded, "/api/test/db/runs", q="FIRST")["items"][0]["run_id"] == "r1"
    status, body = call(loaded, "/api/test/db/runs?sort=params")  # not a sort key
    assert status == 400 and "error" in body


def test_performance(loaded: str) -> None:
    perf = get(loaded, "/api/test/db/performance")
    rows = {(i["model"], i["hardware"], i["metric"]): i for i in perf["items"]}
    assert list(rows) == [("A", "cpu", "latency"), ("A", "gpu", "latency"),
                          ("B", "gpu", "throughput")]  # r6 deleted, r8 too old
    assert rows["A", "gpu", "latency"] == {
        "model": "A", "hardware": "gpu", "metric": "latency", "count": 4, "mean": 2.5,
        "min": 1.0, "max": 4.0, "p50": 2.5, "p95": pytest.approx(3.85),
        "p99": pytest.approx(3.97)}
    assert rows["B", "gpu", "throughput"]["p95"] == pytest.approx(195.0)
    assert rows["A", "cpu", "latency"]["p99"] == 10.0
    wide = get(loaded, "/api/test/db/performance", days=90, metric="latency", model="B")
    assert [(i["hardware"], i["count"], i["mean"]) for i in wide["items"]] == [
        ("cpu", 1, 1000.0)]


def test_overview(loaded: str) -> None:
    test_counts = by_status(pending=1, running=1, completed=3, failed=1, cancelled=1)
    assert get(loaded, "/api/db/overview") == {
        "components": {
            "generator": {"runs": 2, "by_status": by_status(completed=1, failed=1),
                          "success_rate": 0.5},
            "test": {"runs": 7, "by_status": test_counts, "success_rate": 0.75}},
        "total": {"runs": 9, "by_status": by_status(pending=1, running=1, completed=4,
                                                    failed=2, cancelled=1),
                  "success_rate": 4 / 6}}


def test_run_batches_and_model(loaded: str) -> None:
    r1 = get(loaded, "/api/test/db/run/r1")
    assert (r1["status"], r1["duration_s"], r1["tags"]) == ("completed", 60.0, {"suite": "regress"})
    assert r1["metrics"] == [{"name": "latency", "unit": "ms", "count": 3, "mean": 2.0,
                              "min": 1.0, "max": 3.0, "last": 3.0}]
    r4 = get(loaded, "/api/test/db/task/r4")
    assert (r4["results"]["total"], r4["results"]["passed"]) == (1, 1)
    g2 = get(loaded, "/api/generator/db/run/g2")
    assert [(s["step"], s["status"]) for s in g2["steps"]] == [("encode-needle", "running")]
    g1 = get(loaded, "/api/generator/db/run/g1")
    assert [(lg["level"], lg["message"]) for lg in g1["logs"]] == [("info", "found a NEEDLE")]
    assert call(loaded, "/api/test/db/run/r6")[0] == 404  # deleted

    batches = get(loaded, "/api/test/db/batches")
    assert batches["total"] == 1  # b2 was deleted with its run
    (b1,) = batches["items"]
    assert b1 == {"batch_id": "b1", "description": "nightly", "expected_count": 2, "runs": 2,
                  "by_status": by_status(completed=1, cancelled=1), "finished": 2,
                  "progress": 1.0, "declared_at": at(0), "first_seen": at(200),
                  "last_seen": at(320)}

    a = get(loaded, "/api/db/model/A")
    assert (a["total"]["runs"], a["total"]["success_rate"]) == (5, 2 / 3)
    assert [r["run_id"] for r in a["components"]["test"]["recent_runs"]] == [
        "r7", "r5", "r2", "r1"]
    assert a["components"]["generator"]["by_status"] == by_status(completed=1)
    status, body = call(loaded, "/api/db/model/nope")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_search(loaded: str) -> None:
    found = get(loaded, "/api/db/search", query="needle")
    # r4: a test name; g1: a log message (case-insensitive); g2: a step name; r9 was deleted
    assert {c: [r["run_id"] for r in runs] for c, runs in found["results"].items()} == {
        "test": ["r4"], "generator": ["g2", "g1"]}
    assert found["result_counts"] == {"total": 3, "test": 1, "generator": 2}
    assert found["results"]["test"][0]["duration_s"] == 10.0
    assert get(loaded, "/api/db/search", query="smoke")["result_counts"] == {"total": 0}
    tagged = get(loaded, "/api/db/search", query="regress")["results"]
    assert [r["run_id"] for r in tagged["test"]] == ["r1"]
    capped = get(loaded, "/api/db/search", query="gpu", limit=1)
    assert capped["result_counts"] == {"total": 5, "test": 4, "generator": 1}
    assert [r["run_id"] for r in capped["results"]["test"]] == ["r7"]
    assert get(loaded, "/api/db/search", query="b1")["result_counts"]["test"] == 2


def test_sigterm_stops_cleanly_and_data_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "restart.duckdb"
    proc, base = start(db)
    try:
        assert call(base, "/api/jobs/events", json.dumps(
            {"type": "status", "run_id": "j1", "status": "completed"}).encode())[0] == 202
    finally:
        assert stop(proc) == 0
    proc, base = start(db)
    try:
        runs = get(base, "/api/jobs/db/runs")["items"]
        assert [(r["run_id"], r["status"], r["duration_s"]) for r in runs] == [
            ("j1", "completed", 0.0)]  # finished at its own (receive-time) creation
        assert get(base, "/api/db/overview")["total"]["runs"] == 1
        assert get(base, "/api/jobs/db/search", query="J1")["result_counts"] == {
            "total": 1, "jobs": 1}
        # a run event without attributes, twice: the second is an update that sets no attribute
        bare = [{"type": "run", "run_id": "j2", "ts": at(0)}, {"type": "run", "run_id": "j2"}]
        assert call(base, "/api/jobs/events", json.dumps(bare).encode())[0] == 202
        j2 = get(base, "/api/jobs/db/run/j2")
        assert (j2["status"], j2["model"], j2["created_at"]) == ("pending", None, at(0))
    finally:
        stop(proc)
