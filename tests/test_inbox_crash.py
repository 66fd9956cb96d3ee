"""kill -9 of `runlake watch` at random moments while files stream into its inbox,
restarting it each time: in the end every good file's events are in the database
exactly once, and every file is in `.done/` or `.rejected/` (DESIGN §5: a crash at
any point loses nothing and duplicates nothing)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from helpers.inbox_proc import WatchProcess, drop, encode, run_events

from runlake.events import EventLog
from runlake.ingest.fold import Fold
from runlake.views.db import Database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

KILLS = 22
FILES_PER_ROUND = 6
SUFFIXES = (".ndjson", ".jsonl", ".json", ".parquet", ".ndjson.gz", ".parquet.gz")


def test_kill_9_while_ingesting_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(20240501)
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    expected: dict[str, int] = {}  # run_id -> metric points
    good: list[str] = []
    bad: list[str] = []
    n = 0

    def feed(count: int) -> None:
        nonlocal n
        for _ in range(count):
            name = f"f{n:04d}{rng.choice(SUFFIXES)}"
            if n % 9 == 4:  # now and then a bad one
                drop(inbox, name, b'{"type": "metric", "component": "crash"}\n[')
                bad.append(name)
            else:
                run_id = f"run-{n:04d}"
                metrics = rng.randint(50, 1500)
                # Half the files carry their own ids; the rest get ids from their content.
                events = run_events(run_id, "crash", metrics=metrics, ids=n % 2 == 0)
                drop(inbox, name, encode(name, events))
                expected[run_id] = metrics
                good.append(name)
            n += 1

    interrupted = 0
    started = time.monotonic()
    for _ in range(KILLS):
        feed(FILES_PER_ROUND)
        watcher = WatchProcess(data)
        try:
            watcher.wait_watching()
            time.sleep(rng.uniform(0.0, 0.6))
        finally:
            waiting = [p for p in inbox.iterdir() if p.is_file()]
            watcher.kill()
        interrupted += bool(waiting)
    # Kills that found files still waiting, i.e. that may have hit the watcher mid-file:
    # 8 or 9 of the 22 here. Short seeded sleeps (0.03 s, 0.04 s, 0.09 s) make a few
    # certain even on a much faster machine; without any the test would prove nothing.
    assert interrupted >= 1, "no kill found files waiting: none interrupted an ingest"

    # The last one runs until the inbox is empty, then stops cleanly.
    watcher = WatchProcess(data)
    watcher.wait_watching()
    # The files the kills left, up to all 132: a guard against hanging, not a measurement.
    deadline = time.monotonic() + 150
    while any(p.is_file() for p in inbox.iterdir()):
        assert time.monotonic() < deadline, sorted(p.name for p in inbox.iterdir())
        time.sleep(0.1)
    assert watcher.stop() == 0, watcher.output.decode(errors="replace")
    elapsed = time.monotonic() - started

    done = sorted(p.name for p in (inbox / ".done").iterdir())
    rejected = sorted(p.name for p in (inbox / ".rejected").iterdir())
    assert done == sorted(good)  # each once, never as a second copy
    assert rejected == sorted(bad + [f"{b}.error.json" for b in bad])

    event_log = EventLog(data / "log").open()
    db = Database(data / "runlake.duckdb").open()
    try:
        Fold(db, event_log).fold_available()  # the watcher folded to the end already
        con = db.connection
        points = dict(con.execute(
            "SELECT run_id, count(*) FROM metrics WHERE component = 'crash' GROUP BY 1"
        ).fetchall())
        assert points == expected
        per_file = len(run_events("x", metrics=0))
        total = sum(expected.values()) + per_file * len(expected)
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM event_ids").fetchone() == (
            total, total)
        statuses = con.execute("SELECT status, count(*) FROM runs GROUP BY 1").fetchall()
        assert statuses == [("completed", len(expected))]
        appended = event_log.last_seq
    finally:
        db.close()
        event_log.close()
    assert appended >= total  # more when a crash came between an append and its move
    print(f"{KILLS} kills ({interrupted} with files waiting), {len(good)} good and "
          f"{len(bad)} bad files, {total} events, {appended - total} appended twice "
          f"and dropped by the fold, {elapsed:.1f} s")
