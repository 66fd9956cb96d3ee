"""Where one fold batch's time goes: each SQL statement of one incremental batch, timed.

    python bench/fold_profile.py --db PATH [--events 1000 20000 100000] [--top 12]
    python bench/fold_profile.py --history 1000000 [--events ...]

Each batch of `--events` new demo events (other runs, the same models and hardware)
is folded into a fresh copy of the database at `--db` (a folded runlake.duckdb,
e.g. from `runlake replay`), with the server's DuckDB settings, in one transaction
as the server's fold does, after an untimed warm-up batch (the first after opening
is cold). Without `--db`, a log of `--history` events is replayed first. Prints the
batch's total and its slowest statements (COMMIT included).

The batch is a demo stream of its own, so its runs spread over the 60 days before
today; a live batch is a slice of a stream arriving in time order and touches fewer
(group, day) rollups per event. The figures are an upper bound for such a batch.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from fold import RUN_EVENTS, make_log  # bench/fold.py

from runlake.demo import ndjson_batches
from runlake.events import EventLog, decode_events, events_to_table
from runlake.ingest.fold import fold_table
from runlake.ingest.replay import build
from runlake.views.db import connect, folded_seq
from runlake.views.metric_series import MetricSeries

WARM_UP = 1000


class TimedConnection:
    """A DuckDB connection whose `execute` and `sql` calls are timed per statement."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def _timed(self, sql: str, call: Any) -> Any:
        start = time.perf_counter()
        try:
            return call()
        finally:
            key = " ".join(sql.split())  # whole: statements may share a long prefix
            self.seconds[key] += time.perf_counter() - start
            self.calls[key] += 1

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed(sql, lambda: self.con.execute(sql, *args))

    def sql(self, sql: str, *args: Any) -> Any:
        """`con.sql` only plans; its result is fetched here, inside the timing."""
        table = self._timed(sql, lambda: self.con.sql(sql, *args).to_arrow_table())
        return self.con.from_arrow(table)

    def __getattr__(self, name: str) -> Any:  # register, unregister, cursor, …
        return getattr(self.con, name)


def _batch(con: duckdb.DuckDBPyConnection, events: int, seed: int) -> pa.Table:
    """About `events` new demo events, numbered after the database's high-water mark."""
    body = next(iter(ndjson_batches(events // RUN_EVENTS + 1, seed=seed, batch_size=events)))
    return events_to_table(decode_events(body, ndjson=True), folded_seq(con) + 1,
                           time.time_ns() // 1000)


def profile(db: Path, events: int, top: int, workdir: Path) -> None:
    copy = workdir / "profile.duckdb"
    shutil.copy(db, copy)
    con = connect(copy, threads=2)  # the server's settings: memory cap, checkpoint size
    try:
        fold_table(con, _batch(con, WARM_UP, seed=98))  # the first batch after opening is cold
        table = _batch(con, events, seed=99)
        timed = TimedConnection(con)
        start = time.perf_counter()
        # An unloaded series: the fold still reads the keys it touched, as the server's does.
        fold_table(timed, table, series=MetricSeries())  # type: ignore[arg-type]
        total = time.perf_counter() - start
    finally:
        con.close()
        copy.unlink()
    print(f"\nbatch of {table.num_rows:,} events: {1000 * total:.0f} ms "
          f"({1e6 * total / table.num_rows:.1f} µs/event), "
          f"{len(timed.calls)} distinct statements")
    for sql, seconds in timed.seconds.most_common(top):
        print(f"{1000 * seconds:8.1f} ms  {timed.calls[sql]:3d}×  {sql[:100]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, help="a folded runlake.duckdb (copied, never changed)")
    p.add_argument("--history", type=int, default=1_000_000,
                   help="without --db: events to replay into a fresh database first")
    p.add_argument("--events", type=int, nargs="+", default=[1000, 20_000, 100_000],
                   help="batch sizes to profile")
    p.add_argument("--top", type=int, default=12, help="statements to print per batch")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runlake-bench-profile-") as tmp:
        work = Path(tmp)
        db = args.db
        if db is None:
            make_log(work / "log", args.history)
            db = work / "runlake.duckdb"
            with EventLog(work / "log", readonly=True) as event_log:
                build(event_log, db)
        for events in args.events:
            profile(db, events, args.top, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
