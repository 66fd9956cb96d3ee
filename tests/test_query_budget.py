"""What a read may cost: reads stopped past their time budget, when their caller is
cancelled and when the database closes (views/db.py), and a tag filter whose plan
does not grow with the number of tags (views/run_list.py). Real DuckDB files; the
slow read is a real cross join that would run for hours if nothing stopped it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from runlake.errors import QueryTimeout, Unavailable
from runlake.events import decode_events, events_to_table
from runlake.ingest.fold import fold_table
from runlake.views import run_list
from runlake.views.db import Database
from runlake.views.run_list import RunFilter

# ~10^16 rows: it ends only when interrupted.
ENDLESS = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range < 0"
WAIT_S = 30.0  # for events the test itself sets: generous, never reached when all is well


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """One reader thread: a read that was not stopped would block every later one."""
    database = Database(tmp_path / "budget.duckdb", readers=1).open()
    yield database
    database.close()


def one(cur: duckdb.DuckDBPyConnection) -> Any:
    return cur.execute("SELECT 42").fetchone()


def endless(started: threading.Event, proceed: threading.Event | None = None):  # type: ignore[no-untyped-def]
    """A read that says it started, waits for `proceed` (if given) between two
    statements, then runs ENDLESS."""
    def fn(cur: duckdb.DuckDBPyConnection) -> Any:
        cur.execute("SELECT 1").fetchall()
        started.set()
        if proceed is not None:
            assert proceed.wait(WAIT_S)
        return cur.execute(ENDLESS).fetchall()
    return fn


@pytest.mark.timeout(120)
def test_a_read_past_its_budget_is_interrupted(db: Database) -> None:
    """QueryTimeout (422 query_timeout) naming the budget, and the one reader thread
    is free for the next read."""
    async def main() -> None:
        with pytest.raises(QueryTimeout) as caught:
            await db.read(endless(threading.Event()), budget_s=0.2)
        err = caught.value
        assert (err.status, err.code) == (422, "query_timeout")
        assert "0.2 s" in err.message and "narrow" in err.message
        assert await db.read(one, budget_s=5) == (42,)

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_a_cancelled_read_is_interrupted(db: Database) -> None:
    """The caller is cancelled while its read is between two statements (where an
    interrupt alone is lost): the statement it then starts is interrupted as well,
    and the reader thread is free for the next read."""
    async def main() -> None:
        started, proceed = threading.Event(), threading.Event()
        task = asyncio.create_task(db.read(endless(started, proceed)))
        assert await asyncio.to_thread(started.wait, WAIT_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proceed.set()  # now it starts ENDLESS
        assert await db.read(one) == (42,)

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_close_interrupts_reads_in_flight(tmp_path: Path) -> None:
    """close() with a read running and one waiting for the thread: both end with
    503 unavailable, and close returns."""
    database = Database(tmp_path / "close.duckdb", readers=1).open()

    async def main() -> None:
        started = threading.Event()
        running = asyncio.create_task(database.read(endless(started)))
        assert await asyncio.to_thread(started.wait, WAIT_S)
        queued = asyncio.create_task(database.read(one))
        await asyncio.to_thread(database.close)
        for task in (running, queued):
            with pytest.raises(Unavailable):
                await task

    try:
        asyncio.run(main())
    finally:
        database.close()


# -- the tag filter -----------------------------------------------------------------


def tagged_db(path: Path) -> Database:
    """Three runs with tags: r0 {a:1, b:2}, r1 {a:1}, r2 {a:2, b:2}."""
    tags = {"r0": {"a": "1", "b": "2"}, "r1": {"a": "1"}, "r2": {"a": "2", "b": "2"}}
    events = [{"type": "tag", "component": "c", "run_id": run, "key": k, "value": v}
              for run, kv in tags.items() for k, v in kv.items()]
    db = Database(path).open()
    fold_table(db.connection, events_to_table(decode_events(msgspec.json.encode(events)), 1, 0))
    return db


def plan_operators(cur: duckdb.DuckDBPyConnection) -> int:
    """Operators in the plan of the cursor's last statement (from DuckDB's profile)."""
    def count(node: dict[str, Any]) -> int:
        return 1 + sum(count(c) for c in node.get("children", []))

    info = json.loads(cur.get_profiling_information(format="json"))
    return sum(count(op) for op in info["operator"])


@pytest.mark.timeout(120)
def test_the_tag_filter_plan_does_not_grow_with_tags(tmp_path: Path) -> None:
    """One join whatever the number of tag filters (one EXISTS each made a plan of
    N joins: 250 took 15 s or ran out of memory); 250 copies of one filter answer
    as one does."""
    db = tagged_db(tmp_path / "tags.duckdb")
    try:
        with closing(db.cursor()) as cur:
            cur.execute("SET enable_profiling = 'no_output'")
            sizes = {}
            for n in (1, 2, 40):
                filters = [("a", "1"), ("b", "2")] + [(f"k{i}", "v") for i in range(n - 2)]
                run_list.list_runs(cur, "c", RunFilter(tags=filters[:n]))
                sizes[n] = plan_operators(cur)
            assert sizes[1] == sizes[2] == sizes[40], sizes
            many, _ = run_list.list_runs(cur, "c", RunFilter(tags=[("a", "1")] * 250),
                                         sort="run_id")
            assert [r["run_id"] for r in many["items"]] == ["r0", "r1"]
    finally:
        db.close()
