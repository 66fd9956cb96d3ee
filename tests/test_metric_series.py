"""The performance series (views/metric_series.py) against the rollups it caches:
loads racing the fold, a backlog past MAX_PENDING, and a database file swapped under it.
Real DuckDB files; expected rows come from the tables themselves (`series_rows`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest
from helpers.databases import dump_database, series_rows, split

from runlake import demo
from runlake.events import decode_events, events_to_table
from runlake.ingest.fold import fold_table
from runlake.views import metric_series
from runlake.views.db import Database

NOW = 1_767_225_600  # 2026-01-01: a fixed demo stream
RECEIVED_US = NOW * 1_000_000
TODAY = datetime.fromtimestamp(NOW, UTC).date()


def demo_table(runs: int, seed: int, first_seq: int = 1) -> pa.Table:
    """A demo stream as log rows, with a run delete and a run moved to another model
    at the end (so that batches drop and move (group, day) entries, not only add)."""
    events = list(demo.generate(runs, seed=seed, now=NOW))
    victim, moved = [e for e in events if e["type"] == "run"][:2]
    events += [{"type": "delete", "component": victim["component"], "run_id": victim["run_id"]},
               {**moved, "model": "moved-model"}]
    return events_to_table(decode_events(msgspec.json.encode(events)), first_seq, RECEIVED_US)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "series.duckdb").open()
    yield database
    database.close()


def assert_series_is_the_rollups(db: Database) -> None:
    assert db.series.loaded
    with closing(db.connection.cursor()) as cur:
        kept = db.series.rows(cur)
    assert kept, "the stream should have metrics"
    assert kept == series_rows(dump_database(db.connection))


def test_loads_racing_the_fold(db: Database) -> None:
    """A reader drops and loads the series, and reads reports, over and over while
    the fold commits batches and notes them; then one more batch, noted only: whatever
    the interleaving, the series is loaded and ends equal to the rollups. Every few
    batches the fold waits until a load begun after its commit is done, so loads
    happen between batches however fast either thread is."""
    table = demo_table(300, seed=5)
    parts = split(table, list(range(500, table.num_rows, 500)))
    done = threading.Event()
    loaded = threading.Condition()  # notified on each load done, and when the reader ends
    loads = 0
    reader_gone = False

    def reader() -> None:
        nonlocal loads, reader_gone
        try:
            with closing(db.connection.cursor()) as cur:
                while not done.is_set():
                    db.series.reset()
                    db.series.ensure_loaded(cur)
                    with loaded:
                        loads += 1
                        loaded.notify_all()
                    db.series.report(cur, "generator", TODAY - timedelta(days=89), TODAY)
        finally:
            with loaded:
                reader_gone = True
                loaded.notify_all()

    def wait_for_a_load() -> None:
        with loaded:  # the next load but one begins after this point
            want = loads + 2
            loaded.wait_for(lambda: loads >= want or reader_gone)

    thread = threading.Thread(target=reader)
    thread.start()
    held = 0
    try:
        for n, part in enumerate(parts[:-1]):
            fold_table(db.connection, part, series=db.series)
            if n % 4 == 0:
                wait_for_a_load()
                held += 1
    finally:
        done.set()
        thread.join()
    assert held >= 3 and loads >= 2 * held and len(parts) > 10
    fold_table(db.connection, parts[-1], series=db.series)  # read through its noted keys
    assert_series_is_the_rollups(db)


def test_a_batch_committed_during_a_load_is_read(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving the race test can only hope for, forced: a batch commits
    after a load took its snapshot and before the load is installed. Its keys must
    still reach the series (the fold's note waits for the load to finish)."""
    table = demo_table(60, seed=10)
    first, second = split(table, [table.num_rows // 2])
    fold_table(db.connection, first)
    real_load, real_note = metric_series._load, metric_series.MetricSeries.note
    noting = threading.Event()

    def note(self: metric_series.MetricSeries, keys: pa.Table) -> None:
        noting.set()
        real_note(self, keys)

    folder = threading.Thread(target=fold_table, args=(db.connection, second),
                              kwargs={"series": db.series})

    def load(cur: metric_series.Cursor) -> dict[str, metric_series._Component]:
        components = real_load(cur)  # the snapshot holds `first` only
        folder.start()
        assert noting.wait(60), "the fold never got to note its batch"
        folder.join(1.0)  # a note that does not wait for this load is done by now
        return components

    monkeypatch.setattr(metric_series, "_load", load)
    monkeypatch.setattr(metric_series.MetricSeries, "note", note)
    with closing(db.connection.cursor()) as cur:
        db.series.ensure_loaded(cur)
    folder.join()
    assert_series_is_the_rollups(db)


def test_kept_batch_by_batch_and_past_the_backlog_limit(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded once, then brought up to date from the keys the batches noted; with more
    keys pending than MAX_PENDING the series is dropped, and the next read loads it."""
    table = demo_table(200, seed=6)
    with closing(db.connection.cursor()) as cur:
        db.series.ensure_loaded(cur)  # empty
    for part in split(table, list(range(400, table.num_rows, 400))):
        fold_table(db.connection, part, series=db.series)
    assert_series_is_the_rollups(db)

    monkeypatch.setattr(metric_series, "MAX_PENDING", 10)
    more = demo_table(20, seed=7, first_seq=table.num_rows + 1)
    fold_table(db.connection, more, series=db.series)
    assert not db.series.loaded, "a backlog past MAX_PENDING should drop the series"
    with closing(db.connection.cursor()) as cur:
        db.series.ensure_loaded(cur)
    assert_series_is_the_rollups(db)


def test_a_swapped_file_is_loaded_anew(tmp_path: Path, db: Database) -> None:
    """`replace_with` drops the series: reports read the new file's rollups."""
    fold_table(db.connection, demo_table(50, seed=8), series=db.series)
    with closing(db.connection.cursor()) as cur:
        before = db.series.rows(cur)
    other = Database(tmp_path / "other.duckdb").open()
    try:
        fold_table(other.connection, demo_table(60, seed=9))
        want = series_rows(dump_database(other.connection))
    finally:
        other.close()
    assert want != before
    db.replace_with(tmp_path / "other.duckdb")  # drops the series: rows() below loads it
    with closing(db.connection.cursor()) as cur:
        assert db.series.rows(cur) == want
