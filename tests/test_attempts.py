"""Result attempts (issue 20): the `result` event's `attempt`, `file`, `classname` and
`worker`, the log's schema version 2 beside segments of version 1, and a run's result
summary counting each test once, by its last attempt. Expected figures are counted
here, in plain Python, over the events the test sends."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from runlake.events import EventLog, decode_events, events_to_table
from runlake.events.columns import COLUMNS, LOG_SCHEMA, SCHEMA_VERSION
from runlake.events.segments import segment_name
from runlake.ingest import bulk
from runlake.ingest.fold import fold_in_transaction, fold_table, log_tables, rebuild_views
from runlake.views.db import Database

NEW_COLUMNS = ("attempt", "file", "classname", "worker")
T0 = 1_780_000_000.0

# (test, attempt or None, outcome): t1 fails then passes (retried, flaky), t2 errors
# twice (retried, not flaky), t3 passes once, t4 fails once, t5 skipped.
ATTEMPTS = [
    ("t1", 1, "failed"), ("t1", 2, "passed"),
    ("t2", None, "error"), ("t2", 2, "error"),
    ("t3", None, "passed"), ("t4", 1, "failed"), ("t5", None, "skipped"),
]


def result_events(run_id: str = "r1") -> list[dict[str, Any]]:
    out = []
    for i, (test, attempt, outcome) in enumerate(ATTEMPTS):
        ev: dict[str, Any] = {"type": "result", "component": "test", "run_id": run_id,
                              "test": test, "outcome": outcome, "ts": T0 + i,
                              "duration_s": 0.5 * i, "file": "tests/test_x.py",
                              "classname": "tests.test_x", "worker": f"gw{i % 2}"}
        if attempt is not None:
            ev["attempt"] = attempt
        out.append(ev)
    return out


def expected_summary(events: list[dict[str, Any]]) -> dict[str, int]:
    attempts: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for ev in events:
        attempts[ev["test"]].append((ev.get("attempt", 1), ev["outcome"]))
    counts = dict.fromkeys(("passed", "failed", "skipped", "error", "xfailed", "xpassed"), 0)
    retried = flaky = 0
    for items in attempts.values():
        counts[max(items)[1]] += 1
        retried += len(items) > 1
        outcomes = {o for _, o in items}
        flaky += "passed" in outcomes and bool(outcomes & {"failed", "error"})
    return {"total": len(attempts), **counts, "retried": retried, "flaky": flaky}


def test_schema_version_2_adds_the_columns_last() -> None:
    assert SCHEMA_VERSION == "2"
    assert COLUMNS[-4:] == NEW_COLUMNS
    ev = decode_events(msgspec.json.encode(result_events()[1]))[0]
    row = events_to_table([ev], 1, 0).to_pylist()[0]
    assert (row["attempt"], row["file"], row["classname"], row["worker"]) == (
        2, "tests/test_x.py", "tests.test_x", "gw1")


def test_attempt_must_be_at_least_1() -> None:
    for bad in (0, -1, "2", 1.5):
        body = msgspec.json.encode({**result_events()[0], "attempt": bad})
        try:
            decode_events(body)
        except Exception as e:  # InvalidEvents: names the field
            assert any(p.field == "attempt" for p in e.problems), e  # type: ignore[attr-defined]
        else:
            raise AssertionError(f"attempt {bad!r} was accepted")


def _old_segment(directory: Path, events: list[dict[str, Any]], first_seq: int) -> Path:
    """A segment as runlake wrote it at log schema version 1: without the new columns."""
    table = events_to_table(decode_events(msgspec.json.encode(events)), first_seq, 0)
    old = table.drop_columns(list(NEW_COLUMNS))
    old = old.replace_schema_metadata({"runlake.schema_version": "1"})
    path = directory / segment_name(first_seq, first_seq + len(events) - 1)
    pq.write_table(old, path, compression="zstd")
    return path


def _results(con: Any) -> list[tuple[Any, ...]]:
    return sorted(con.execute("SELECT run_id, test, attempt, outcome, file, classname, worker "
                              "FROM results").fetchall())


def test_old_segments_read_beside_new_ones(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    old_events = [{k: v for k, v in ev.items() if k not in NEW_COLUMNS}
                  for ev in result_events("old")]
    _old_segment(log_dir, old_events, 1)
    new_events = result_events("new")
    with EventLog(log_dir) as log:
        log.append(decode_events(msgspec.json.encode(new_events)))
        batches = list(log.read())
        assert all(b.schema.equals(LOG_SCHEMA, check_metadata=False) for b in batches)
        table = pa.Table.from_batches(batches)
        assert table.num_rows == len(old_events) + len(new_events)
        db = Database(tmp_path / "fold.duckdb").open()
        try:
            for t, end in log_tables(log, 0, None, 1000):
                fold_table(db.connection, t, last=end)
            got = _results(db.connection)
        finally:
            db.close()
    # Old results have no attempt: each is attempt 1, so t2's two rows are one (the later).
    want = set()
    for ev in old_events:
        want.add(("old", ev["test"], 1))
    for ev in new_events:
        want.add(("new", ev["test"], ev.get("attempt", 1)))
    assert {r[:3] for r in got} == want
    assert all(r[4:] == (None, None, None) for r in got if r[0] == "old")
    assert all(r[4] == "tests/test_x.py" for r in got if r[0] == "new")


def test_bulk_replay_of_only_old_segments(tmp_path: Path) -> None:
    """Every segment of version 1: the bulk fold's SQL still finds the new columns."""
    old_events = [{k: v for k, v in ev.items() if k not in NEW_COLUMNS}
                  for ev in result_events("old")]
    path = _old_segment(tmp_path, old_events, 1)
    db = Database(tmp_path / "bulk.duckdb").open()
    try:
        con = db.connection
        with bulk.SegmentFold(con, [path]) as fold:
            fold_in_transaction(con, len(old_events), fold.apply)
        rebuild_views(con)
        got = _results(con)
    finally:
        db.close()
    assert {(r[1], r[2]) for r in got} == {(ev["test"], 1) for ev in old_events}


def test_run_summary_counts_each_test_by_its_last_attempt(make_server: Any) -> None:
    asyncio.run(_summary(make_server))


async def _summary(make_server: Any) -> None:
    events = result_events()
    async with make_server() as client:
        reply = await client.post_events(events)
        assert reply.status == 202, reply.body
        last = reply.json()["last_seq"]
        run = (await client.get(f"/api/test/db/run/r1?min_seq={last}")).json()
        assert run["results"] == expected_summary(events)
        page = (await client.get("/api/test/db/run/r1/results?limit=100")).json()
        got = sorted((r["test"], r["attempt"], r["outcome"], r["worker"]) for r in page["items"])
        # Every attempt is kept; an event without `attempt` is attempt 1.
        assert got == sorted((ev["test"], ev.get("attempt", 1), ev["outcome"], ev["worker"])
                             for ev in events)
