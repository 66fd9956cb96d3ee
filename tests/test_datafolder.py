"""Opening a data folder (runlake/ingest/datafolder.py): log, then database and fold,
then inbox, closed in reverse, the same for the server and every command. The first
test is the regression: `runlake watch` on a database of an older schema version."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers.databases import assert_same_database, dump_file
from helpers.inbox_proc import WatchProcess, drop, ndjson_bytes, run_events

from runlake.errors import LogLocked
from runlake.events import EventLog, decode_events
from runlake.ingest.datafolder import open_folder, open_folder_async, open_log
from runlake.ingest.replay import build
from runlake.settings import Settings
from runlake.views.db import SCHEMA_VERSION

DEADLINE_S = 60.0


def append(log_dir: Path, events: list[dict[str, Any]]) -> None:
    with EventLog(log_dir) as event_log:
        event_log.append(decode_events(json.dumps(events).encode()))


def make_old_database(data: Path) -> None:
    """A database as runlake schema version 4 left it: run_span and runs without the
    run's seq span (first_seq, last_seq), which version 5 added and the fold writes."""
    with EventLog(data / "log", readonly=True) as event_log:
        build(event_log, data / "runlake.duckdb")
    con = duckdb.connect(str(data / "runlake.duckdb"))
    try:
        for table in ("run_span", "runs"):
            for column in ("first_seq", "last_seq"):
                con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        con.execute("UPDATE fold_state SET schema_version = 4")
    finally:
        con.close()


def database_state(db_file: Path) -> tuple[tuple[int, int], list[tuple[str, str, str]]]:
    """((folded_seq, schema_version), [(component, run_id, status)] sorted)."""
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        state = con.execute("SELECT folded_seq, schema_version FROM fold_state").fetchone()
        runs = con.execute("SELECT component, run_id, status FROM runs ORDER BY 1, 2").fetchall()
    finally:
        con.close()
    assert state is not None
    return (int(state[0]), int(state[1])), [tuple(r) for r in runs]


def wal_bytes(log_dir: Path) -> int:
    return sum(p.stat().st_size for p in (log_dir / "wal").iterdir())


def test_watch_folds_into_a_database_of_an_older_schema(tmp_path: Path) -> None:
    """Issue 16: `runlake serve` rebuilt an old database, `runlake watch` did not and
    failed every fold batch; both now open the folder the same way."""
    data = tmp_path / "data"
    old = run_events("old-1") + run_events("old-2", component="jobs")
    append(data / "log", old)
    make_old_database(data)
    new = run_events("new-1", ids=True)

    watch = WatchProcess(data)
    try:
        watch.wait_watching()
        drop(data / "inbox", "new.ndjson", ndjson_bytes(new))
        done = data / "inbox" / ".done" / "new.ndjson"
        deadline = time.monotonic() + DEADLINE_S
        while not done.exists():  # moved only once its events are durable in the log
            assert time.monotonic() < deadline and watch.proc.poll() is None, watch.output
            time.sleep(0.02)
    finally:
        code = watch.stop()  # folds to the end of the log, then closes it
    assert code == 0, watch.output.decode(errors="replace")

    # Every run_events() run ends `completed`; seqs count every event of the log.
    state, runs = database_state(data / "runlake.duckdb")
    assert state == (len(old) + len(new), SCHEMA_VERSION)
    assert runs == [("jobs", "old-2", "completed"), ("test", "new-1", "completed"),
                    ("test", "old-1", "completed")]
    # ... and the rest is what a full replay of the same log gives.
    with EventLog(data / "log", readonly=True) as event_log:
        build(event_log, tmp_path / "replayed.duckdb")
    assert_same_database(dump_file(data / "runlake.duckdb"),
                         dump_file(tmp_path / "replayed.duckdb"), "watch after the rebuild")


def test_closing_folds_to_the_end_before_the_log_rolls(tmp_path: Path, no_leaks: None) -> None:
    settings = Settings(data=tmp_path / "data")
    events = run_events("r1") + run_events("r2")
    with open_folder(settings, if_busy="-") as folder:
        assert folder.fold is not None and folder.fold.running
        folder.event_log.append(decode_events(json.dumps(events).encode()))
        assert wal_bytes(settings.log_dir) > 0  # appended, and (likely) not folded yet
    state, runs = database_state(settings.db_path)
    assert state == (len(events), SCHEMA_VERSION)
    assert [r[1] for r in runs] == ["r1", "r2"]
    assert wal_bytes(settings.log_dir) == 0  # a stopped log is all Parquet
    assert len(list(settings.log_dir.glob("seg-*.parquet"))) == 1


def test_a_folder_in_use_says_what_to_do_instead_and_opens_nothing(
    tmp_path: Path, no_leaks: None
) -> None:
    settings = Settings(data=tmp_path / "data")
    with open_log(settings, if_busy="-"):
        with pytest.raises(LogLocked) as refused:
            with open_folder(settings, if_busy="drop the files into the inbox instead"):
                pytest.fail("opened a folder whose log another holder has")
    message = refused.value.message
    assert str(settings.data) in message and "in use by a running server" in message
    assert message.endswith("drop the files into the inbox instead")
    assert not settings.db_path.exists()


def test_a_database_that_cannot_open_closes_the_log_again(
    tmp_path: Path, no_leaks: None
) -> None:
    settings = Settings(data=tmp_path / "data")
    append(settings.log_dir, run_events("r1"))
    settings.db_path.mkdir(parents=True)  # a directory where the database file goes
    with pytest.raises(OSError):
        with open_folder(settings, if_busy="-"):
            pytest.fail("opened a database that is a directory")
    with open_log(settings, if_busy="-") as event_log:  # the lock was released
        assert event_log.last_seq == len(run_events("r1"))


def test_the_inbox_opens_last_and_stops_first(tmp_path: Path, no_leaks: None) -> None:
    settings = Settings(data=tmp_path / "data")
    events = run_events("from-inbox", ids=True)

    async def main() -> None:
        async with open_folder_async(settings, if_busy="-", inbox=True) as folder:
            inbox, fold = folder.inbox, folder.fold
            assert inbox is not None and fold is not None
            await inbox.watching.wait()
            drop(settings.inbox_dir, "a.ndjson", ndjson_bytes(events))
            deadline = time.monotonic() + DEADLINE_S
            while inbox.files_ingested < 1:
                assert time.monotonic() < deadline, "the inbox did not ingest a.ndjson"
                await asyncio.sleep(0.02)
        assert not inbox.watching.is_set()

    asyncio.run(main())
    assert (settings.inbox_dir / ".done" / "a.ndjson").exists()
    state, runs = database_state(settings.db_path)
    assert state == (len(events), SCHEMA_VERSION)
    assert runs == [("test", "from-inbox", "completed")]
    assert wal_bytes(settings.log_dir) == 0
