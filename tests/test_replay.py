"""`runlake replay` (DESIGN §3): rebuild the database from the log into a new file and
swap it in; the old file is untouched until the swap.

The log holds the demo's runs plus duplicates, run and batch deletes and a resurrected
run (helpers.folder.fill_log). The reference is the same log folded incrementally,
as the server folds it, in small batches.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from helpers.databases import assert_same_database, dump_file
from helpers.folder import fill_log

from runlake.events import EventLog, decode_events
from runlake.ingest import bulk
from runlake.ingest.fold import Fold
from runlake.ingest.replay import build, staging_path
from runlake.views.db import SCHEMA_VERSION

RUNS = 400  # ~12 k events
BATCH_ROWS = 3_000  # the replay's batches after the bulk part


def replay_cli(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runlake", "replay", "--data", str(data), *flags],
        capture_output=True, text=True, timeout=120,
    )


def fold_incrementally(data: Path, batch_rows: int = 1_500) -> dict[str, list[tuple[object, ...]]]:
    """The database the server would have: the log followed in small batches."""
    with EventLog(data / "log", readonly=True) as event_log:
        return dump_file(data / "runlake.duckdb",
                         lambda db: Fold(db, event_log, batch_rows).fold_available())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    fill_log(tmp_path / "log", RUNS)
    return tmp_path


def test_replay_rebuilds_what_the_incremental_fold_built(data: Path) -> None:
    last_seq = EventLog(data / "log", readonly=True).open().last_seq
    incremental = fold_incrementally(data)
    assert incremental["fold_state"] == [(last_seq, SCHEMA_VERSION)]

    done = replay_cli(data)
    assert done.returncode == 0, done.stderr
    assert f"{last_seq:,}/{last_seq:,} events" in done.stderr  # the progress bar's last line
    assert "/s" in done.stderr and "ETA" in done.stderr
    assert not staging_path(data / "runlake.duckdb").exists()
    replayed = dump_file(data / "runlake.duckdb")
    assert replayed["runs"] and replayed["metric_hist"]
    assert_same_database(replayed, incremental, "replayed vs incrementally folded")


@pytest.mark.parametrize("max_batch_deletes", [bulk.MAX_BATCH_DELETES, 0])
def test_bulk_replay_of_segments_then_batches_of_the_tail(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_batch_deletes: int,
) -> None:
    """Whole segments in one pass (bulk.py), the tail in batches: the same database.
    With more batch deletes than bulk takes (here: any), all of it goes in batches."""
    monkeypatch.setattr(bulk, "MAX_BATCH_DELETES", max_batch_deletes)
    with EventLog(data / "log") as event_log:
        segments = event_log.segments()
        event_log.append(decode_events(b'{"type": "status", "component": "test", '
                                       b'"run_id": "tail", "status": "running"}'))
        assert segments and segments[-1].last < event_log.last_seq  # a tail is left
        updates: list[int] = []
        progress = SimpleNamespace(update=updates.append)
        seq = build(event_log, tmp_path / "bulk.duckdb", batch_rows=BATCH_ROWS, progress=progress,
                    bulk_min_rows=0)
    assert seq == event_log.last_seq == sum(updates)
    bulk_used = max_batch_deletes > 0
    assert (updates[0] == segments[-1].last) is bulk_used, updates
    assert all(n <= BATCH_ROWS for n in updates[bulk_used:]), updates  # the rest in batches
    assert_same_database(dump_file(tmp_path / "bulk.duckdb"), fold_incrementally(data),
                         "bulk replay vs incrementally folded")


def test_replay_of_a_database_that_is_missing_or_stale(data: Path) -> None:
    """No database at all: replay creates one. A database folded from another log:
    replay throws it away, whatever it held."""
    assert replay_cli(data).returncode == 0
    expected = dump_file(data / "runlake.duckdb")
    con = duckdb.connect(str(data / "runlake.duckdb"))
    con.execute("DELETE FROM runs")
    con.execute("UPDATE fold_state SET folded_seq = 5")
    con.close()
    assert replay_cli(data).returncode == 0
    assert_same_database(dump_file(data / "runlake.duckdb"), expected, "after a second replay")


def test_replay_drops_the_old_files_duckdb_wal(data: Path) -> None:
    """A server killed with -9 leaves `runlake.duckdb.wal` beside its file. That WAL
    belongs to the old file: left beside the new one DuckDB would replay it into it."""
    assert replay_cli(data).returncode == 0
    expected = dump_file(data / "runlake.duckdb")
    crash = (
        "import duckdb, os, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute(\"SET checkpoint_threshold = '1TB'\")\n"
        "con.execute(\"INSERT INTO component_events SELECT 'zz' || range, range "
        "FROM range(1000)\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", crash, str(data / "runlake.duckdb")], check=True)
    wal = Path(str(data / "runlake.duckdb") + ".wal")
    assert wal.exists() and wal.stat().st_size > 0, "the crash should leave a DuckDB WAL"

    assert replay_cli(data).returncode == 0
    assert not wal.exists()
    assert_same_database(dump_file(data / "runlake.duckdb"), expected, "replayed after a crash")


def test_replay_refuses_while_a_server_runs(data: Path, start_server_process) -> None:
    assert replay_cli(data).returncode == 0
    expected = dump_file(data / "runlake.duckdb")
    server = start_server_process(data, inbox=False)
    try:
        refused = replay_cli(data)
        assert refused.returncode == 2
        assert "in use by a running server" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not staging_path(data / "runlake.duckdb").exists()
    finally:
        assert server.stop() == 0
    # The refused replay touched nothing: the server's database is as it was.
    assert_same_database(dump_file(data / "runlake.duckdb"), expected, "after a refused replay")


@pytest.mark.slow
def test_replay_killed_midway_leaves_the_old_database_as_it_was(data: Path) -> None:
    """kill -9 during the build: the old file is byte for byte what it was and still
    opens; the next replay cleans up the half-built file and finishes."""
    assert replay_cli(data).returncode == 0
    db_file = data / "runlake.duckdb"
    expected, digest = dump_file(db_file), sha256(db_file)
    staging = staging_path(db_file)
    for delay in (0.0, 0.2, 0.5):
        # The previous round's half-built file would end the wait below at once: remove
        # it (and its WAL), so that the file waited for is this round's build.
        for leftover in (staging, Path(f"{staging}.wal")):
            leftover.unlink(missing_ok=True)
        # Tiny batches make the build take seconds (~10 s): time to kill it mid-way.
        proc = subprocess.Popen(
            [sys.executable, "-m", "runlake", "replay", "--data", str(data),
             "--fold-batch-rows", "50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not (staging.exists() and staging.stat().st_size > 0):
            assert proc.poll() is None, "the replay exited before it built anything"
            assert time.monotonic() < deadline, "the replay never started its build"
            time.sleep(0.01)
        time.sleep(delay)
        assert proc.poll() is None, "the replay finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        # Killed mid-build, not exited by itself; and the half-built file was never
        # swapped in: it is left behind, the old file untouched.
        assert proc.wait() == -signal.SIGKILL
        assert staging.exists(), "a killed replay leaves its half-built file behind"
        assert sha256(db_file) == digest, "the old database changed before the swap"
    assert_same_database(dump_file(db_file), expected, "old database after the kills")

    assert replay_cli(data).returncode == 0
    assert not staging.exists()
    assert_same_database(dump_file(db_file), expected, "replayed after the kills")


def test_server_rebuilds_a_database_of_an_older_schema(data: Path, start_server_process) -> None:
    """After an upgrade that changed a view's shape, the server rebuilds the database
    from the log when it opens it, instead of failing on the old tables."""
    assert replay_cli(data).returncode == 0
    expected = dump_file(data / "runlake.duckdb")
    con = duckdb.connect(str(data / "runlake.duckdb"))
    con.execute("UPDATE fold_state SET schema_version = 1")
    con.execute("ALTER TABLE metric_stats ADD COLUMN unit VARCHAR")  # version 1 had a unit
    con.close()
    server = start_server_process(data, inbox=False)
    assert server.stop() == 0
    assert "rebuilding it from the log" in server.stderr()
    assert_same_database(dump_file(data / "runlake.duckdb"), expected, "rebuilt at start-up")


def test_server_rebuilds_a_database_file_that_is_not_one(data: Path, start_server_process) -> None:
    assert replay_cli(data).returncode == 0
    expected = dump_file(data / "runlake.duckdb")
    (data / "runlake.duckdb").write_bytes(b"not a duckdb file" * 100)
    server = start_server_process(data, inbox=False)
    assert server.stop() == 0
    assert "rebuilding it from the log" in server.stderr()
    assert_same_database(dump_file(data / "runlake.duckdb"), expected, "rebuilt at start-up")
