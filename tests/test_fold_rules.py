"""One test per rule of DESIGN §3 (ordering, definitions, deletes, duplicate ids),
each folding a few hand-written events into a real DuckDB file and reading the
tables and views the rule is about."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest
from helpers.databases import assert_same_database, dump_database
from helpers.stats import interpolated_bound, quantile_cont

from runlake.events import decode_events, events_to_table
from runlake.ingest.fold import fold_table
from runlake.views import queries
from runlake.views.db import Database
from runlake.views.metric_daily import (
    ALPHA,
    EXACT_MAX_POINTS,
    GAMMA,
    OFFSET,
    REPRESENTATIVE,
)
from runlake.views.metric_series import MetricSeries

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z, epoch seconds
RECEIVED_US = (T0 + 86_400) * 1_000_000


def at(s: float) -> datetime:
    """The stored TIMESTAMP (naive UTC) of T0 + s seconds."""
    return datetime(2023, 11, 14, 22, 13, 20) + timedelta(seconds=s)


def ev(type_: str, run_id: str | None = "r1", s: float = 0, comp: str = "test",
       **fields: Any) -> dict[str, Any]:
    """A wire event of `comp` at T0 + s seconds."""
    wire = {"type": type_, "component": comp, "ts": T0 + s, **fields}
    if run_id is not None:
        wire["run_id"] = run_id
    return wire


class Folded:
    """A DuckDB file folded batch by batch; seq runs on across batches."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path).open()
        self.seq = 0

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.db.connection

    def fold(self, *events: dict[str, Any]) -> Folded:
        """Fold `events` as one batch (one transaction)."""
        table = events_to_table(
            decode_events(msgspec.json.encode(list(events))), self.seq + 1, RECEIVED_US)
        self.seq = fold_table(self.con, table)
        return self

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, list(params)).fetchall()

    def one(self, sql: str, *params: Any) -> Any:
        rows = self.rows(sql, *params)
        assert len(rows) == 1, rows
        return rows[0] if len(rows[0]) > 1 else rows[0][0]

    def run(self, run_id: str = "r1", comp: str = "test") -> dict[str, Any] | None:
        cur = self.con.execute("SELECT * FROM runs WHERE component = ? AND run_id = ?",
                               [comp, run_id])
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        return dict(zip(names, rows[0], strict=True)) if rows else None


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Folded]:
    folded = Folded(tmp_path / "runlake.duckdb")
    yield folded
    folded.db.close()


# -------------------------------------------------------------- ordering by (ts, seq)


def test_late_older_event_does_not_override_newer(lake: Folded) -> None:
    lake.fold(ev("run", s=20, model="new", hardware="h-new"),
              ev("status", s=20, status="completed"),
              ev("tag", s=20, key="k", value="new"),
              ev("step", s=20, step="load", status="completed"),
              ev("result", s=20, test="t", outcome="passed"))
    # A late file: older events arrive afterwards, with higher seqs.
    lake.fold(ev("run", s=10, model="old", hardware="h-old"),
              ev("status", s=10, status="failed", error="boom"),
              ev("tag", s=10, key="k", value="old"),
              ev("step", s=10, step="load", status="running"),
              ev("result", s=10, test="t", outcome="failed"))
    run = lake.run()
    assert (run["model"], run["hardware"], run["status"], run["error"]) == (
        "new", "h-new", "completed", None)
    assert run["finished_at"] == at(20) and run["created_at"] == at(10)
    assert lake.one("SELECT value FROM tags") == "new"
    assert lake.one("SELECT status FROM steps") == "completed"
    assert lake.one("SELECT outcome FROM results") == "passed"
    assert lake.rows("SELECT model, runs, completed, failed FROM model_stats") == [
        ("new", 1, 1, 0)]


def test_equal_ts_higher_seq_wins(lake: Folded) -> None:
    lake.fold(ev("run", model="first"), ev("status", status="failed"),
              ev("tag", key="k", value="first"), ev("step", step="s", status="failed"))
    lake.fold(ev("run", model="second"), ev("status", status="completed"),
              ev("tag", key="k", value="second"), ev("step", step="s", status="completed"))
    run = lake.run()
    assert (run["model"], run["status"]) == ("second", "completed")
    assert lake.one("SELECT value FROM tags") == "second"
    assert lake.one("SELECT status FROM steps") == "completed"
    # Within one batch as well: the later seq wins whatever the row order of ties.
    lake.fold(ev("run", model="third"), ev("run", model="fourth"),
              ev("tag", key="k", value="third"), ev("tag", key="k", value="fourth"))
    assert lake.run()["model"] == "fourth"
    assert lake.one("SELECT value FROM tags") == "fourth"


def test_attribute_left_out_keeps_previous_value(lake: Folded) -> None:
    lake.fold(ev("run", s=0, model="m", hardware="h", batch_id="b", name="n",
                 params={"lr": 0.1}))
    lake.fold(ev("run", s=5, name="renamed"))
    lake.fold(ev("run", s=6, hardware="h2"))
    run = lake.run()
    assert (run["model"], run["hardware"], run["batch_id"], run["name"]) == (
        "m", "h2", "b", "renamed")
    assert msgspec.json.decode(run["params"]) == {"lr": 0.1}


# -------------------------------------------------------------- run definitions


def test_run_without_status_is_pending(lake: Folded) -> None:
    lake.fold(ev("metric", s=3, name="loss", value=1.5), ev("log", s=7, level="info", message="x"))
    run = lake.run()
    assert run["status"] == "pending"
    assert (run["created_at"], run["updated_at"], run["events"]) == (at(3), at(7), 2)
    assert (run["started_at"], run["finished_at"], run["duration_s"]) == (None, None, None)
    assert lake.rows("SELECT runs, pending, success_rate, duration_avg_s FROM model_stats") == [
        (1, 1, None, None)]


def test_started_at_is_earliest_running(lake: Folded) -> None:
    lake.fold(ev("status", s=30, status="running"))
    lake.fold(ev("status", s=10, status="running"), ev("status", s=50, status="running"))
    lake.fold(ev("status", s=60, status="completed"))
    run = lake.run()
    assert (run["started_at"], run["finished_at"], run["duration_s"]) == (at(10), at(60), 50.0)


def test_finished_at_only_while_terminal(lake: Folded) -> None:
    lake.fold(ev("status", s=0, status="running"), ev("status", s=40.25, status="completed"))
    run = lake.run()
    assert (run["status"], run["finished_at"], run["duration_s"]) == (
        "completed", at(40.25), 40.25)
    lake.fold(ev("status", s=50, status="running"))  # restarted: no longer finished
    run = lake.run()
    assert (run["status"], run["finished_at"], run["duration_s"]) == ("running", None, None)
    assert lake.one("SELECT duration_avg_s FROM model_stats") is None
    lake.fold(ev("status", s=45, status="failed"))  # late, older than the restart: no effect
    assert lake.run()["status"] == "running"
    lake.fold(ev("status", s=70, status="failed", error="oom"))
    run = lake.run()
    # Started at the first `running`, finished at the latest terminal status.
    assert (run["status"], run["error"], run["finished_at"], run["duration_s"]) == (
        "failed", "oom", at(70), 70.0)


def test_duration_from_created_at_when_never_running(lake: Folded) -> None:
    lake.fold(ev("run", s=0, model="m"), ev("metric", s=-2.5, name="x", value=1.0),
              ev("status", s=30, status="completed"))
    run = lake.run()
    assert (run["created_at"], run["started_at"], run["duration_s"]) == (at(-2.5), None, 32.5)
    assert lake.rows("SELECT duration_avg_s, duration_p50_s, duration_p95_s FROM model_stats"
                     ) == [(32.5, 32.5, 32.5)]


def test_duration_statistics_are_interpolated(lake: Folded) -> None:
    for i, d in enumerate([10, 20, 30, 40]):
        lake.fold(ev("run", f"r{i}", s=0, model="m", hardware="h"),
                  ev("status", f"r{i}", s=d, status="completed"))
    lake.fold(ev("status", "r9", s=0, status="running"), ev("run", "r9", model="m"))
    avg, p50, p95 = lake.one(
        "SELECT duration_avg_s, duration_p50_s, duration_p95_s FROM model_stats")
    assert (avg, p50) == (25.0, 25.0)
    assert p95 == pytest.approx(38.5, rel=1e-12)  # 30 + 0.85 · (40 − 30)
    assert lake.one("SELECT runs FROM hardware_stats WHERE hardware = 'h'") == 4
    assert lake.one("SELECT runs FROM hardware_stats WHERE hardware IS NULL") == 1


def test_success_rate_ignores_cancelled(lake: Folded) -> None:
    lake.fold(ev("run", "a", model="m"), ev("status", "a", status="cancelled"),
              ev("run", "b", model="m"), ev("status", "b", status="running"))
    assert lake.one("SELECT runs, cancelled, success_rate FROM model_stats") == (2, 1, None)
    assert lake.one("SELECT success_rate FROM overview") is None
    lake.fold(ev("run", "c", model="m"), ev("status", "c", status="completed"),
              ev("run", "d", model="m"), ev("status", "d", status="failed"),
              ev("run", "e", model="m"), ev("status", "e", status="completed"))
    assert lake.one("SELECT runs, completed, failed, cancelled, success_rate FROM model_stats"
                    ) == (5, 2, 1, 1, pytest.approx(2 / 3))
    assert lake.one("SELECT runs, success_rate FROM overview") == (5, pytest.approx(2 / 3))


# -------------------------------------------------------------- duplicate ids


def test_duplicate_id_dropped_within_and_across_batches(lake: Folded) -> None:
    lake.fold(ev("metric", s=0, name="loss", value=1.0, id="m-1"),
              ev("metric", s=1, name="loss", value=2.0, id="m-1"))  # same batch
    lake.fold(ev("metric", s=2, name="loss", value=3.0, id="m-1"),  # a later batch
              ev("run", s=3, model="x", id="m-1"),  # another type, same id
              ev("metric", "r2", s=4, name="loss", value=4.0, comp="other", id="m-1"),
              ev("metric", s=5, name="loss", value=5.0))  # no id: never a duplicate
    assert lake.rows("SELECT value FROM metrics ORDER BY seq") == [(1.0,), (5.0,)]
    assert lake.run()["model"] is None
    assert lake.run("r2", "other") is None  # ids are unique across components
    assert lake.one("SELECT count, mean FROM metric_stats") == (2, 3.0)
    assert lake.rows("SELECT component, events FROM overview") == [("test", 2)]
    assert lake.run()["events"] == 2


def test_duplicate_of_delete_dropped_in_later_batch(lake: Folded) -> None:
    lake.fold(ev("run", s=0, model="m"), ev("delete", s=1, id="del-1"),
              ev("run", s=2, model="m2"))
    assert lake.run()["model"] == "m2"
    run, overview = lake.run(), lake.rows("SELECT * FROM overview")
    lake.fold(ev("delete", s=3, id="del-1"))  # a retried request: must be dropped
    assert lake.run() is not None
    assert lake.run()["model"] == "m2"
    assert lake.run() == run  # not even its events or updated_at moved
    assert lake.rows("SELECT * FROM overview") == overview  # the retry is not counted


# -------------------------------------------------------------- deletes


def _full_run(run_id: str, s: float = 0, **attrs: Any) -> list[dict[str, Any]]:
    return [
        ev("run", run_id, s, model="m", hardware="h", **attrs),
        ev("status", run_id, s + 1, status="running"),
        ev("step", run_id, s + 2, step="load", status="completed"),
        ev("tag", run_id, s + 2, key="k", value="v"),
        ev("metric", run_id, s + 3, name="loss", value=2.0),
        ev("log", run_id, s + 3, level="info", message="hello"),
        ev("artifact", run_id, s + 3, name="out.txt"),
        ev("result", run_id, s + 3, test="t::a", outcome="passed"),
        ev("status", run_id, s + 4, status="completed"),
    ]


RUN_TABLES = ("runs", "run_span", "run_events", "status_events", "steps", "tags", "metrics",
              "logs", "artifacts", "results")


def _count(lake: Folded, table: str, run_id: str) -> int:
    return lake.one(f"SELECT count(*) FROM {table} WHERE run_id = ?", run_id)


def test_delete_run_removes_it_everywhere(lake: Folded) -> None:
    lake.fold(*_full_run("r1"), *_full_run("r2"))
    assert all(_count(lake, t, "r1") > 0 for t in RUN_TABLES)
    # The delete acts by seq: its old ts does not matter.
    lake.fold(ev("delete", "r1", s=-1000))
    assert {t: _count(lake, t, "r1") for t in RUN_TABLES} == dict.fromkeys(RUN_TABLES, 0)
    assert _count(lake, "metrics", "r2") == 1
    assert lake.one("SELECT runs, completed FROM model_stats") == (1, 1)
    assert lake.one("SELECT count FROM metric_stats") == 1
    assert lake.one("SELECT sum(count) FROM metric_daily") == 1
    assert lake.one("SELECT sum(count) FROM metric_hist") == 1
    assert lake.one("SELECT runs, completed FROM overview") == (1, 1)


def test_delete_batch_removes_its_runs_and_the_batch(lake: Folded) -> None:
    lake.fold(ev("batch", None, batch_id="b1", expected_count=3, description="sweep"),
              ev("batch", None, batch_id="b2", expected_count=1),
              *_full_run("r1", batch_id="b1"), *_full_run("r2", batch_id="b1"),
              *_full_run("r3", batch_id="b2"),
              *_full_run("r4", batch_id="b1"), ev("run", "r4", s=10, batch_id="b2"),  # moved
              ev("run", "r6", batch_id="b1", comp="other"))  # b1 of another component
    assert lake.one("SELECT runs FROM batch_stats WHERE batch_id = 'b1' AND component = 'test'"
                    ) == 2
    lake.fold(ev("delete", None, s=5, batch_id="b1"))
    assert lake.rows("SELECT component, run_id FROM runs ORDER BY ALL") == [
        ("other", "r6"), ("test", "r3"), ("test", "r4")]
    assert lake.rows("SELECT component, batch_id, runs FROM batch_stats ORDER BY ALL") == [
        ("other", "b1", 1), ("test", "b2", 2)]
    assert lake.rows("SELECT batch_id FROM batch_events") == [("b2",)]
    assert _count(lake, "metrics", "r1") == _count(lake, "steps", "r2") == 0
    assert lake.one("SELECT count FROM metric_stats WHERE component = 'test'") == 2
    # Declaring it again starts a new batch: the old runs stay gone.
    lake.fold(ev("batch", None, s=6, batch_id="b1", expected_count=5))
    assert lake.one("SELECT runs, expected_count, description, declared_at FROM batch_stats "
                    "WHERE component = 'test' AND batch_id = 'b1'") == (0, 5, None, at(6))


def test_events_after_delete_start_the_run_afresh(lake: Folded) -> None:
    lake.fold(*_full_run("r1", s=0, name="old"))
    lake.fold(ev("delete", "r1", s=100))
    # Older ts than the deleted events, but a higher seq: a new run.
    lake.fold(ev("metric", "r1", s=50, name="loss", value=7.0),
              ev("status", "r1", s=60, status="running"))
    run = lake.run()
    assert (run["model"], run["name"], run["status"]) == (None, None, "running")
    assert (run["created_at"], run["started_at"], run["updated_at"], run["events"]) == (
        at(50), at(60), at(60), 2)
    assert lake.rows("SELECT value FROM metrics") == [(7.0,)]
    assert _count(lake, "steps", "r1") == _count(lake, "tags", "r1") == 0
    assert lake.rows("SELECT model, count, mean FROM metric_stats") == [(None, 1, 7.0)]


def test_events_before_delete_in_same_batch_are_removed(lake: Folded) -> None:
    lake.fold(ev("run", s=0, model="m"), ev("metric", s=1, name="loss", value=1.0),
              ev("tag", s=1, key="k", value="v"), ev("delete", s=2),
              ev("status", s=3, status="running"), ev("metric", s=4, name="loss", value=9.0),
              ev("run", "r2", s=0, model="m"))
    run = lake.run()
    assert (run["model"], run["status"], run["created_at"], run["events"]) == (
        None, "running", at(3), 2)
    assert lake.rows("SELECT run_id, value FROM metrics") == [("r1", 9.0)]
    assert lake.rows("SELECT * FROM tags") == []
    assert lake.rows("SELECT model, runs FROM model_stats ORDER BY ALL") == [
        ("m", 1), (None, 1)]
    assert lake.rows("SELECT model, count, max FROM metric_stats") == [(None, 1, 9.0)]


def test_delete_then_events_in_one_batch_equals_separate_batches(tmp_path: Path) -> None:
    events = [*_full_run("r1"), ev("delete", "r1", s=5), ev("run", "r1", s=1, model="z"),
              ev("metric", "r1", s=2, name="loss", value=3.0), ev("delete", "r1", s=6),
              ev("metric", "r1", s=7, name="loss", value=4.0)]
    one = Folded(tmp_path / "one.duckdb")
    try:
        many = Folded(tmp_path / "many.duckdb")
        try:
            one.fold(*events)
            for e in events:
                many.fold(e)
            for lake in (one, many):
                assert lake.rows("SELECT run_id, model, events FROM runs") == [("r1", None, 1)]
                assert lake.rows("SELECT model, count, mean FROM metric_stats") == [
                    (None, 1, 4.0)]
            assert_same_database(dump_database(one.con), dump_database(many.con),
                                 "one batch vs one batch per event")
        finally:
            many.db.close()
    finally:
        one.db.close()


# -------------------------------------------------------------- views


def test_model_change_moves_metrics_between_groups(lake: Folded) -> None:
    lake.fold(ev("run", s=0, model="m1", hardware="h"),
              ev("metric", s=1, name="loss", value=1.0),
              ev("metric", s=86_400, name="loss", value=3.0),  # the next day
              ev("run", "r2", s=0, model="m1", hardware="h"),
              ev("metric", "r2", s=1, name="loss", value=10.0))
    assert lake.rows("SELECT model, count, mean FROM metric_stats") == [
        ("m1", 3, pytest.approx(14 / 3))]
    lake.fold(ev("run", s=2, model="m2"))  # r1 now runs m2: its points move
    assert lake.rows("SELECT model, hardware, count, mean, min, max FROM metric_stats "
                     "ORDER BY model") == [("m1", "h", 1, 10.0, 10.0, 10.0),
                                           ("m2", "h", 2, 2.0, 1.0, 3.0)]
    assert lake.rows("SELECT model, day, count, sum FROM metric_daily ORDER BY ALL") == [
        ("m1", at(1).date(), 1, 10.0), ("m2", at(1).date(), 1, 1.0),
        ("m2", at(86_400).date(), 1, 3.0)]
    assert lake.rows("SELECT model, sum(count) FROM metric_hist GROUP BY 1 ORDER BY 1") == [
        ("m1", 1), ("m2", 2)]
    assert lake.rows("SELECT model, runs FROM model_stats ORDER BY 1") == [("m1", 1), ("m2", 1)]
    # A late, older run event does not move them back.
    lake.fold(ev("run", s=-5, model="m1"))
    assert lake.rows("SELECT model, count FROM metric_stats ORDER BY 1") == [
        ("m1", 1), ("m2", 2)]
    lake.fold(ev("run", s=3, hardware="h2"))  # hardware moves them too
    assert lake.rows("SELECT model, hardware, count FROM metric_stats ORDER BY 1") == [
        ("m1", "h", 1), ("m2", "h2", 2)]
    assert lake.rows("SELECT hardware, runs FROM hardware_stats ORDER BY 1") == [
        ("h", 1), ("h2", 1)]


def test_batch_progress_against_expected_count(lake: Folded) -> None:
    runs = [("a", "completed"), ("b", "completed"), ("c", "failed"), ("d", "cancelled"),
            ("e", "running"), ("f", None)]
    lake.fold(ev("batch", None, s=-10, batch_id="b", expected_count=8, description="d1"),
              *[e for rid, st in runs for e in [ev("run", rid, s=0, batch_id="b")]
                + ([ev("status", rid, s=5, status=st)] if st else [])])
    row = lake.one("SELECT runs, pending, running, completed, failed, cancelled, finished, "
                   "progress, expected_count, description, declared_at, first_seen, last_seen "
                   "FROM batch_stats")
    assert row == (6, 1, 1, 2, 1, 1, 4, 0.5, 8, "d1", at(-10), at(0), at(5))
    lake.fold(ev("batch", None, s=-20, batch_id="b", expected_count=2))  # older: ignored
    assert lake.one("SELECT expected_count, declared_at FROM batch_stats") == (8, at(-20))
    lake.fold(ev("batch", None, s=1, batch_id="b", expected_count=0))
    assert lake.one("SELECT expected_count, progress, description FROM batch_stats") == (
        0, None, "d1")
    # A batch named only by runs exists, with no expected count and no progress.
    lake.fold(ev("run", "g", batch_id="b-undeclared"), ev("status", "g", status="completed"))
    assert lake.one("SELECT runs, finished, expected_count, progress, declared_at "
                    "FROM batch_stats WHERE batch_id = 'b-undeclared'") == (1, 1, None, None, None)
    # A declared batch with no runs (yet).
    lake.fold(ev("batch", None, batch_id="empty", expected_count=3))
    assert lake.one("SELECT runs, finished, progress FROM batch_stats WHERE batch_id = 'empty'"
                    ) == (0, 0, 0.0)


def test_overview_event_counts(lake: Folded) -> None:
    lake.fold(*_full_run("r1"), ev("batch", None, batch_id="b"),
              ev("metric", "g1", name="x", value=1.0, comp="generator", id="g-1"))
    lake.fold(ev("metric", "g1", name="x", value=1.0, comp="generator", id="g-1"),  # dup
              ev("log", "g1", level="info", message="m", comp="generator"))
    assert lake.rows("SELECT component, events, runs, completed, pending FROM overview "
                     "ORDER BY 1") == [("generator", 2, 1, 0, 1), ("test", 10, 1, 1, 0)]
    assert lake.one("SELECT first_seen, last_seen FROM overview WHERE component = 'test'") == (
        at(0), at(4))


def test_overview_counts_delete_events(lake: Folded) -> None:
    lake.fold(ev("run", s=0), ev("delete", s=1))
    lake.fold(ev("delete", "gone", s=2, comp="cleanup"))
    assert lake.rows("SELECT component, events, runs FROM overview ORDER BY 1") == [
        ("cleanup", 1, 0), ("test", 2, 0)]


# -------------------------------------------------------------- histograms


def test_the_percentile_error_bound_is_the_documented_one_percent() -> None:
    """The percentile tests (here, the property test, the report's) bound the error by
    ALPHA, read from the code: it must stay the ≤ 1 % that DESIGN and views.md promise."""
    assert 0 < ALPHA <= 0.01


def test_histogram_percentiles_within_alpha(lake: Folded) -> None:
    values = [0.0, 1e-9, 3e-7, -2.5, -1e6, 1.0, 1.0100000001, 7.0, 1e12, 1e100, -1e-3,
              *[1.0 + i / 97 for i in range(200)]]
    lake.fold(*[ev("metric", s=i, name="v", value=v) for i, v in enumerate(values)])
    buckets = lake.rows("SELECT bucket, count FROM metric_hist ORDER BY bucket")
    assert sum(c for _, c in buckets) == len(values)
    reps = dict(lake.rows(f"SELECT bucket, {REPRESENTATIVE} FROM metric_hist"))
    keys = [b for b, c in buckets for _ in range(c)]  # each point's bucket, in value order
    xs = sorted(values)
    for q in [i / 100 for i in range(101)]:
        rank = math.floor(q * (len(xs) - 1))
        bucket = keys[rank]
        rep = reps[bucket]
        if bucket:  # REPRESENTATIVE agrees with the formula DESIGN states
            i = abs(bucket) - OFFSET
            assert rep == pytest.approx(math.copysign(2 * GAMMA**i / (GAMMA + 1), bucket))
        assert abs(rep - xs[rank]) <= ALPHA * abs(xs[rank]) * (1 + 1e-9), (q, rep, xs[rank])


@pytest.mark.parametrize("values", [
    [100.0, 200.0, 1600.0],  # few points: rank-based would give p99 = 200
    [5.0], [2.0, 2.0], [1.0, 1e6], [0.25 + i / 7 for i in range(101)],
    [-3.0, -1.0, -0.5, -0.25],
])
def test_sketch_percentiles_interpolate_like_quantile_cont(lake: Folded,
                                                           values: list[float]) -> None:
    """metric_stats interpolates between the two ranks around q·(n−1), as DESIGN's
    exact percentiles do, each rank within ALPHA, and stays within [min, max]; the
    performance report of so few points (≤ EXACT_MAX_POINTS) is exact."""
    lake.fold(*[ev("metric", s=i, name="lat", value=v) for i, v in enumerate(values)])
    xs = sorted(values)
    got = lake.one("SELECT p50, p95, p99 FROM metric_stats")
    report = report_of(lake)
    (item,) = report["items"]
    for (quantile, name), stat in zip(((0.5, "p50"), (0.95, "p95"), (0.99, "p99")), got,
                                      strict=True):
        exact = quantile_cont(xs, quantile)
        bound = interpolated_bound(xs, quantile, ALPHA)
        assert abs(stat - exact) <= bound and xs[0] <= stat <= xs[-1], (name, stat, exact)
        if len(xs) <= EXACT_MAX_POINTS:
            assert (item[name], item["approximate"]) == (exact, False), name
        else:
            assert abs(item[name] - exact) <= bound and item["approximate"], name


def report_of(lake: Folded, **page: int) -> dict[str, Any]:
    """The one-day performance report of component test, from a series loaded now."""
    return queries.performance(lake.con.cursor(), MetricSeries(), "test", days=1,
                               today=at(0).date(), **page)


def test_performance_report_is_paged(lake: Folded) -> None:
    names = ["a", "b", "c", "d", "e"]
    lake.fold(*[ev("metric", s=i, name=n, value=float(i + 1)) for i, n in enumerate(names)])
    page = report_of(lake, limit=2, offset=2)
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    assert [i["metric"] for i in page["items"]] == ["c", "d"]
    assert [[t["count"] for t in i["trend"]] for i in page["items"]] == [[1], [1]]
    past = report_of(lake, limit=2, offset=9)
    assert past["items"] == [] and past["total"] == 5
