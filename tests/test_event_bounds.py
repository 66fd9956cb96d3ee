"""Bounds on event values (issue 16): times a datetime can hold, metric values whose
sums stay finite, identifiers without control characters. Each is refused when
events are decoded, with a 400 naming the event and the field; a log that already
holds a time no reader can hold (written before the check) is read without that
row, whoever reads it: the fold, a replay, the raw events route, an export."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers.server import Client, make_server

from runlake.errors import InvalidEvents, LogError
from runlake.events import EventLog, decode_events, events_to_table
from runlake.events.schema import MetricEvent
from runlake.events.segments import write_segment
from runlake.events.wal import WalWriter, encode_frame, wal_name
from runlake.ingest.fold import Fold
from runlake.ingest.replay import build
from runlake.views.db import Database

pytestmark = pytest.mark.timeout(180)

# 10000-01-01T00:00:00Z is 253 402 300 800 s after the epoch; 0001-01-01T00:00:00Z is
# 62 135 596 800 s before it. One µs past either is a time no datetime holds.
AFTER_9999_US = 253_402_300_800 * 1_000_000
BEFORE_1_US = -62_135_596_800 * 1_000_000 - 1


def metric(**changes: Any) -> dict[str, Any]:
    return {"type": "metric", "component": "test", "run_id": "r", "name": "x", "value": 1.5,
            **changes}


def reject(events: list[dict[str, Any]], ndjson: bool = False) -> list[dict[str, Any]]:
    body = (b"".join(json.dumps(e).encode() + b"\n" for e in events) if ndjson
            else json.dumps(events).encode())
    with pytest.raises(InvalidEvents) as raised:
        decode_events(body, ndjson=ndjson)
    return raised.value.details


def third(bad: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The problem of `bad` as the third event of a JSON array and of NDJSON."""
    events = [metric(), metric(value=2), bad]
    (in_array,) = reject(events)
    (in_lines,) = reject(events, ndjson=True)
    assert in_array["event"] == 2 and in_lines["line"] == 3
    return in_array, in_lines


# -- ts --------------------------------------------------------------------------

BEYOND = {  # outside years 1-9999 once in UTC
    "9999-12-31T23:59:59-01:00": "2024 plus an offset past year 9999",
    "0001-01-01T00:30:00+01:00": "an offset back before year 1",
    "9999-12-31T23:59:59.999999-00:01": "a minute past",
}
EDGES = {  # accepted: the instant each is, worked out by hand
    "0001-01-01T00:00:00Z": datetime(1, 1, 1, tzinfo=UTC),
    "0001-01-01T00:00:00-01:00": datetime(1, 1, 1, 1, tzinfo=UTC),
    "9999-12-31T23:59:59.999999Z": datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    "9999-12-31T23:59:59.999999+01:00": datetime(9999, 12, 31, 22, 59, 59, 999_999, tzinfo=UTC),
    "2300-01-01T00:00:00.000001Z": datetime(2300, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    "1600-07-01T12:00:00.000001+02:00": datetime(1600, 7, 1, 10, 0, 0, 1, tzinfo=UTC),
}


@pytest.mark.parametrize("ts", list(BEYOND))
def test_a_time_outside_years_1_to_9999_is_refused_naming_event_and_field(ts: str) -> None:
    for problem in third(metric(ts=ts)):
        assert problem["field"] == "ts"
        assert "1-9999" in problem["message"] and ts in problem["message"]


@pytest.mark.parametrize("seconds", [253_402_300_800, -62_135_596_801, 1e300])
def test_epoch_seconds_beyond_the_range_are_refused(seconds: float) -> None:
    for problem in third(metric(ts=seconds)):
        assert problem["field"] == "ts"


@pytest.mark.parametrize("count", [1, 200], ids=["one", "many"])  # Python and Arrow paths
def test_times_at_the_edges_are_kept_exactly(tmp_path: Path, count: int) -> None:
    """Through a float, 9999-12-31T23:59:59.999999Z became a year 10000 and times past
    2255 lost their last µs."""
    wires = [metric(ts=ts, id=f"{ts}-{n}") for ts in EDGES for n in range(count)]
    with EventLog(tmp_path) as log:
        log.append(decode_events(json.dumps(wires).encode()))
        got = [t for batch in log.read() for t in batch.column("ts").to_pylist()]
    assert got == [EDGES[w["ts"]] for w in wires]


def test_the_server_refuses_bad_times_and_serves_times_at_the_edges(tmp_path: Path) -> None:
    asyncio.run(_the_server_refuses_bad_times_and_serves_times_at_the_edges(tmp_path))


async def _the_server_refuses_bad_times_and_serves_times_at_the_edges(tmp_path: Path) -> None:
    async with make_server(tmp_path) as client:
        for ts in BEYOND:
            reply = await client.post_events([metric(), metric(ts=ts)])
            assert reply.status == 400, reply.body
            (problem,) = reply.json()["error"]["details"]
            assert (problem["event"], problem["field"]) == (1, "ts")
        assert client.event_log.last_seq == 0
        events = [e for n, ts in enumerate(EDGES) for e in whole_run(f"edge-{n}", ts)]
        reply = await client.post_events(events)
        assert reply.status == 202, reply.body
        await every_read_answers(client, reply.json()["last_seq"], "edge-2")


def whole_run(run_id: str, ts: str | float | None = None) -> list[dict[str, Any]]:
    base = {"component": "test", "run_id": run_id} | ({} if ts is None else {"ts": ts})
    return [base | e for e in (
        {"type": "run", "model": "m", "hardware": "h", "batch_id": "b"},
        {"type": "status", "status": "running"},
        {"type": "step", "step": "s", "status": "completed", "progress": 1.0},
        {"type": "metric", "name": "x", "value": 2.5},
        {"type": "tag", "key": "k", "value": "v"},
        {"type": "log", "level": "info", "message": "hello"},
        {"type": "artifact", "name": "a", "size_bytes": 10},
        {"type": "result", "test": "t", "outcome": "passed", "duration_s": 0.5},
        {"type": "status", "status": "completed"},
    )]


async def every_read_answers(client: Client, last_seq: int, run_id: str) -> dict[str, Any]:
    """GET each read route (having waited for the fold to pass `last_seq`) and export
    runs and events: all answer 200. Returns the run's raw events."""
    await client.get(f"/api/db/overview?min_seq={last_seq}")
    for path in ("/api/db/overview", "/api/test/db/runs", f"/api/test/db/run/{run_id}",
                 f"/api/test/db/run/{run_id}/metrics", f"/api/test/db/run/{run_id}/logs",
                 f"/api/test/db/run/{run_id}/results", "/api/test/db/batches",
                 "/api/test/db/batch/b", "/api/test/db/models/stats",
                 "/api/test/db/hardware/stats", "/api/test/db/performance?days=30",
                 "/api/db/search?query=edge", "/api/db/model/m"):
        reply = await client.get(path)
        assert reply.status == 200, (path, reply.body)
    for what in ("runs", "events"):
        reply = await client.request("POST", "/api/test/db/export",
                                     json={"what": what, "format": "ndjson"})
        assert reply.status == 200, (what, reply.body)
    reply = await client.get(f"/api/test/db/run/{run_id}/events?limit=1000")
    assert reply.status == 200, reply.body
    return dict(reply.json())


# -- a log that already holds a time no reader can hold --------------------------

def log_table(bad: dict[int, int], count: int = 12) -> pa.Table:
    """`count` events of run "r" (seq 1..count) with the `ts` of each seq in `bad`
    set to the given µs: what a log written before decoding checked times holds."""
    wires = [metric(value=n, id=f"m{n}") for n in range(1, count + 1)]
    wires[0] = {"type": "run", "component": "test", "run_id": "r", "model": "m", "id": "m1"}
    table = events_to_table(decode_events(json.dumps(wires).encode()), 1, 1_714_564_800_000_000)
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    for seq, us in bad.items():
        ts[seq - 1] = us
    return table.set_column(table.column_names.index("ts"), table.schema.field("ts"),
                            pa.array(ts, pa.int64()).cast(table.schema.field("ts").type))


def store(directory: Path, table: pa.Table, where: str) -> None:
    """Put `table` in the log at `directory` as a segment, or as a WAL file."""
    directory.mkdir(parents=True)
    if where == "segment":
        write_segment(directory, table)
    else:
        (directory / "wal").mkdir()
        writer = WalWriter(directory / "wal" / wal_name(1))
        writer.write(encode_frame(table))
        writer.close()


def warned_seqs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split()[1] for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "runlake.log"]


@pytest.mark.parametrize(("where", "readonly"), [("segment", False), ("wal", True),
                                                 ("wal", False)],
                         ids=["segment", "wal-snapshot", "wal-recovered"])
def test_reads_leave_out_rows_whose_time_no_reader_can_hold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str, readonly: bool
) -> None:
    store(tmp_path / "log", log_table({3: AFTER_9999_US, 7: BEFORE_1_US}), where)
    caplog.set_level(logging.WARNING, "runlake.log")
    with EventLog(tmp_path / "log", readonly=readonly) as log:
        assert log.last_seq == 12
        for _ in range(2):  # read twice: still one warning per row
            rows = [row for batch in log.read(batch_rows=4) for row in batch.to_pylist()]
            assert [r["seq"] for r in rows] == [1, 2, 4, 5, 6, 8, 9, 10, 11, 12]
        assert [r["seq"] for b in log.read(3, 7) for r in b.to_pylist()] == [4, 5, 6]
        assert list(log.read(7, 7)) == []  # no empty batches either
    assert warned_seqs(caplog) == ["3", "7"]


def test_appending_a_time_no_reader_can_hold_fails_alone(tmp_path: Path) -> None:
    """Events built in Python skip decoding: the writer refuses such a time itself."""
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))
    bad = MetricEvent(component="test", run_id="r", name="x", value=1.0, ts=late)
    good = decode_events(json.dumps([metric(), metric(value=2)]).encode())
    with EventLog(tmp_path) as log:
        first = log.submit(good[:1])
        refused = log.submit([bad])
        after = log.submit(good[1:])
        assert first.result(timeout=10) == (1, 1)
        with pytest.raises(LogError):
            refused.result(timeout=10)
        assert after.result(timeout=10) == (2, 2)


def fold(data: Path) -> tuple[int, list[tuple[Any, ...]]]:
    """Fold the log at `data/log` as the server does: (high-water mark, metrics' seqs)."""
    with EventLog(data / "log", readonly=True) as log:
        db = Database(data / "runlake.duckdb").open()
        try:
            folder = Fold(db, log, batch_rows=5)
            folder.fold_available()
            seqs = db.connection.execute("SELECT seq FROM metrics ORDER BY seq").fetchall()
            return folder.folded_seq, seqs
        finally:
            db.close()


def test_the_fold_and_replays_leave_out_a_bad_row_and_go_past_it(tmp_path: Path) -> None:
    store(tmp_path / "log", log_table({3: AFTER_9999_US, 5: BEFORE_1_US}), "segment")
    folded, seqs = fold(tmp_path)
    good = [(s,) for s in range(2, 13) if s not in (3, 5)]
    assert (folded, seqs) == (12, good)
    with EventLog(tmp_path / "log", readonly=True) as log:
        for name, bulk_min_rows in (("batches", 10**9), ("bulk", 0)):
            path = tmp_path / f"{name}.duckdb"
            assert build(log, path, batch_rows=4, bulk_min_rows=bulk_min_rows) == 12
            db = Database(path).open()
            try:
                got = db.connection.execute("SELECT seq FROM metrics ORDER BY seq").fetchall()
                assert got == good, name
            finally:
                db.close()


def test_the_fold_goes_past_a_bad_last_row(tmp_path: Path) -> None:
    store(tmp_path / "log", log_table({12: AFTER_9999_US}), "segment")
    assert fold(tmp_path) == (12, [(s,) for s in range(2, 12)])


def test_a_server_on_a_log_holding_a_bad_row_serves_the_rest(tmp_path: Path) -> None:
    asyncio.run(_a_server_on_a_log_holding_a_bad_row_serves_the_rest(tmp_path))


async def _a_server_on_a_log_holding_a_bad_row_serves_the_rest(tmp_path: Path) -> None:
    table = log_table({4: AFTER_9999_US})
    store(tmp_path / "data" / "log", table, "segment")
    async with make_server(tmp_path) as client:
        reply = await client.post_events(whole_run("after"))
        assert reply.status == 202, reply.body
        events = await every_read_answers(client, reply.json()["last_seq"], "r")
        assert [e["seq"] for e in events["items"]] == [s for s in range(1, 13) if s != 4]
        reply = await client.request("POST", "/api/test/db/export",
                                     json={"what": "events", "format": "ndjson"})
        ids = [json.loads(line).get("id") for line in reply.body.splitlines()]
        assert [i for i in ids if i] == [f"m{n}" for n in range(1, 13) if n != 4]
        assert len(ids) == 11 + len(whole_run("after"))


# -- metric values and the other numbers -------------------------------------------

def test_metric_values_are_bounded_by_1e100() -> None:
    for value in (1e100, -1e100, 5e-324, 0.0):
        decode_events(json.dumps(metric(value=value)).encode())
    for value in (math.nextafter(1e100, math.inf), -1e101, 1.7976931348623157e308):
        for problem in third(metric(value=value)):
            assert problem["field"] == "value" and "1e+100" in problem["message"]


def test_every_accepted_number_keeps_the_reports_finite(tmp_path: Path) -> None:
    asyncio.run(_every_accepted_number_keeps_the_reports_finite(tmp_path))


async def _every_accepted_number_keeps_the_reports_finite(tmp_path: Path) -> None:
    """Whatever values the schema accepts, sums, means and percentiles stay numbers.
    Candidates up to float64's largest: each is posted, and what is accepted counted."""
    candidates = [1e100, 1e200, 1.7976931348623157e308]
    async with make_server(tmp_path) as client:
        accepted = []
        for value in candidates:
            points = [metric(run_id=f"r{n}", value=value) for n in range(40)]
            reply = await client.post_events(points)
            assert reply.status in (202, 400), reply.body
            if reply.status == 202:
                accepted.append(value)
        assert 1e100 in accepted
        top = [e | {"run_id": "top"} for e in whole_run("top")]
        top += [{"type": "result", "component": "test", "run_id": "top", "test": f"t{n}",
                 "outcome": "passed", "duration_s": 1e9} for n in range(40)]
        top += [{"type": "artifact", "component": "test", "run_id": "top", "name": "big",
                 "size_bytes": 2**62},
                {"type": "batch", "component": "test", "batch_id": "b", "expected_count": 2**62}]
        reply = await client.post_events(top)
        assert reply.status == 202, reply.body
        last = reply.json()["last_seq"]
        reply = await client.get(f"/api/test/db/performance?days=3&min_seq={last}")
        assert reply.status == 200, reply.body
        report = reply.json()
        (group,) = [g for g in report["items"] if g["metric"] == "x" and g["model"] is None]
        for key in ("count", "mean", "min", "max", "p50", "p95", "p99"):
            assert isinstance(group[key], int | float) and math.isfinite(group[key]), (key, group)
        run = (await client.get("/api/test/db/run/r0")).json()
        (summary,) = run["metrics"]
        assert all(math.isfinite(summary[k]) for k in ("mean", "min", "max", "last"))
        results = (await client.get("/api/test/db/run/top/results?limit=1000")).json()
        assert [r["duration_s"] for r in results["items"] if r["test"] != "t"] == [1e9] * 40
        batch = (await client.get("/api/test/db/batch/b")).json()
        assert batch["expected_count"] == 2**62 and math.isfinite(batch["progress"])


# -- identifiers -------------------------------------------------------------------

# (event, identifier field): what URLs, filters and groups select by.
IDENTIFIERS = [
    (metric(), "run_id"), (metric(), "id"), (metric(), "name"),
    ({"type": "run", "component": "test", "run_id": "r"}, "model"),
    ({"type": "run", "component": "test", "run_id": "r"}, "hardware"),
    ({"type": "run", "component": "test", "run_id": "r"}, "batch_id"),
    ({"type": "step", "component": "test", "run_id": "r", "step": "s", "status": "running"},
     "step"),
    ({"type": "tag", "component": "test", "run_id": "r", "key": "k", "value": "v"}, "key"),
    ({"type": "result", "component": "test", "run_id": "r", "test": "t", "outcome": "passed"},
     "test"),
    ({"type": "batch", "component": "test", "batch_id": "b"}, "batch_id"),
    ({"type": "delete", "component": "test", "batch_id": "b"}, "batch_id"),
]
CONTROLS = ["a\x00b", "a\tb", "a\rb", "tail\n", "\x1f", "a\x7fb", "a\x85b", "\x9f"]


@pytest.mark.parametrize(("event", "field"), IDENTIFIERS, ids=[f"{e['type']}.{f}"
                                                              for e, f in IDENTIFIERS])
def test_control_characters_in_identifiers_are_refused(event: dict[str, Any], field: str
                                                       ) -> None:
    decode_events(json.dumps(event | {field: "ok é ✓ / ?#%"}).encode())
    for value in CONTROLS:
        for problem in third(event | {field: value}):
            assert problem["field"] == field and "control character" in problem["message"]


@pytest.mark.parametrize("written", [
    b"a\\u0000b", b"a\\nb", b"a\\tb", b"a\\bb", b"a\\fb", b"a\\rb", b"a\\u001Fb",
    b"a\x7fb", b"a\\u007fb", "a\x85b".encode(), b"a\\u009fb",
], ids=["u0000", "n", "t", "b", "f", "r", "u001F", "raw-DEL", "u007f", "raw-C1", "u009f"])
def test_control_characters_however_written_are_refused(written: bytes) -> None:
    """A control character reaches a string as an escape, a raw DEL or a raw C1 (raw
    C0 is not JSON): the check must not skip a body that holds one like that."""
    body = b'{"type": "metric", "component": "test", "run_id": "' + written + (
        b'", "name": "x", "value": 1}')
    for ndjson in (False, True):
        with pytest.raises(InvalidEvents) as raised:
            decode_events(body, ndjson=ndjson)
        (problem,) = raised.value.details
        assert problem["field"] == "run_id" and "control character" in problem["message"]


def test_free_text_may_hold_control_characters() -> None:
    text = "line 1\n\tline 2\r\n\x00\x85"
    events = [
        {"type": "log", "component": "test", "run_id": "r", "level": "info", "message": text},
        {"type": "tag", "component": "test", "run_id": "r", "key": "k", "value": text},
        {"type": "status", "component": "test", "run_id": "r", "status": "failed",
         "error": text},
        {"type": "run", "component": "test", "run_id": "r", "name": "a\tb"},
        {"type": "batch", "component": "test", "batch_id": "b", "description": text},
    ]
    assert len(decode_events(json.dumps(events).encode())) == len(events)


def test_the_server_refuses_a_run_id_no_url_could_reach(tmp_path: Path) -> None:
    asyncio.run(_the_server_refuses_a_run_id_no_url_could_reach(tmp_path))


async def _the_server_refuses_a_run_id_no_url_could_reach(tmp_path: Path) -> None:
    async with make_server(tmp_path) as client:
        reply = await client.post_events(whole_run("a\x00b"), path="/api/test/events")
        assert reply.status == 400, reply.body
        details = reply.json()["error"]["details"]
        assert {(d["event"], d["field"]) for d in details} == {(n, "run_id") for n in range(9)}
        assert client.event_log.last_seq == 0
