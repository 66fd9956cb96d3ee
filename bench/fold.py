"""Benchmark: the fold (DESIGN §3, §9) — replay, incremental batches, ack → visible.

    python bench/fold.py [--events 1000000] [--batches 200] [--rate 100000 --seconds 20]
                         [--dir DIR] [--json PATH]

1. A log of `--events` realistic `runlake demo` events is appended (untimed).
2. replay: `runlake.ingest.replay.build` folds the whole log into a fresh DuckDB
   file (base tables, then every view once): events/s, file sizes; and, just before it,
   its limit: a plain DuckDB load of the same log (CREATE TABLE AS read_parquet +
   CHECKPOINT) into another fresh file.
3. incremental: on that database, `--batches` batches of `--batch-size` new
   events (other runs, same models and hardware) are each folded in one
   transaction with view upkeep, as the server's fold does: latency p50/p99.
4. sustained: the real `Fold` thread follows the log while a producer appends
   `--rate` events/s in requests of `--batch-size` (decoded events, as the HTTP
   path submits them) for `--seconds`: acknowledged → folded latency p50/p99.

The seed-style baseline has no fold (it writes each event as it arrives), so
its side of these figures is its ingest rate, measured by bench/http_api.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
from http_api import percentile  # bench/http_api.py: one definition for every bench

from runlake.demo import ndjson_batches
from runlake.events import EventLog, decode_events
from runlake.ingest.fold import Fold, fold_table, log_tables
from runlake.ingest.replay import build
from runlake.progress import Progress
from runlake.views.db import MEMORY_LIMIT, Database

RUN_EVENTS = 30  # runlake demo writes about this many events per run


def append_demo(event_log: EventLog, events: int, seed: int) -> int:
    """Append at least `events` demo events (whole runs); returns how many."""
    done = 0
    futures = []
    for chunk in ndjson_batches(events // RUN_EVENTS + 1, seed=seed, batch_size=10_000):
        decoded = decode_events(chunk, ndjson=True)
        futures.append(event_log.submit(decoded))
        done += len(decoded)
    for f in futures:
        f.result()
    return done


def make_log(directory: Path, events: int) -> int:
    with EventLog(directory) as event_log:
        progress = Progress("log", events)
        n = append_demo(event_log, events, seed=0)
        progress.update(n)
        progress.finish()
    return n


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_replay(log_dir: Path, db_path: Path) -> dict[str, Any]:
    event_log = EventLog(log_dir, readonly=True).open()
    start = time.perf_counter()
    build(event_log, db_path)
    seconds = time.perf_counter() - start
    events = event_log.last_seq
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds,
            "db_bytes": db_path.stat().st_size, "log_bytes": dir_bytes(log_dir)}


def measure_plain_load(log_dir: Path, db_path: Path) -> dict[str, Any]:
    """The replay's limit (DESIGN §9): a plain DuckDB load of the same log into a fresh file,
    `CREATE TABLE … AS SELECT * FROM read_parquet(…)` then `CHECKPOINT`, with the threads and
    memory cap `build()` gets. The file is removed after."""
    if db_path.exists():
        db_path.unlink()
    glob = str(log_dir / "**" / "*.parquet").replace("'", "''")
    start = time.perf_counter()
    con = duckdb.connect(str(db_path), config={"threads": os.cpu_count() or 2,
                                                "memory_limit": MEMORY_LIMIT})
    try:
        con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{glob}')")
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - start
        row = con.execute("SELECT count(*) FROM events").fetchone()
    finally:
        con.close()
    events = row[0] if row else 0
    out = {"events": events, "seconds": seconds, "events_per_s": events / seconds,
           "db_bytes": db_path.stat().st_size}
    db_path.unlink()
    Path(f"{db_path}.wal").unlink(missing_ok=True)
    return out


def measure_incremental(log_dir: Path, db_path: Path, batches: int, batch_size: int,
                        seed: int = 1) -> dict[str, Any]:
    """Fold `batches` batches of new events one transaction each; per-batch latency."""
    with EventLog(log_dir) as event_log:
        first = event_log.last_seq + 1
        append_demo(event_log, batches * batch_size, seed)
    event_log = EventLog(log_dir, readonly=True).open()
    db = Database(db_path).open()
    try:
        db.series.ensure_loaded(db.cursor())  # as a server preloads it, so batches note keys
        latencies = []
        upto = first - 1 + batches * batch_size
        for table, end in log_tables(event_log, first - 1, upto, batch_size):
            start = time.perf_counter()
            fold_table(db.connection, table, last=end, series=db.series)
            latencies.append(time.perf_counter() - start)
    finally:
        db.close()
    return {"batches": batches, "batch_size": batch_size,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 0.99), "max_ms": 1000 * max(latencies)}


def measure_sustained(log_dir: Path, db_path: Path, rate: int, seconds: float,
                      batch_size: int, seed: int = 2) -> dict[str, Any]:
    """Ack → folded latency while a producer appends `rate` events/s."""
    requests = int(rate * seconds / batch_size)
    chunks = [decode_events(c, ndjson=True)
              for c in ndjson_batches(requests * batch_size // RUN_EVENTS + 1, seed=seed,
                                      batch_size=batch_size)][:requests]
    event_log = EventLog(log_dir).open()
    db = Database(db_path).open()
    db.series.ensure_loaded(db.cursor())  # as the server's fold, which notes each batch's keys
    fold = Fold(db, event_log, batch_rows=200_000, series=db.series)
    fold.fold_available()  # start caught up
    fold.start()
    acked: list[tuple[int, float]] = []  # (last seq, ack time)
    visible: dict[int, float] = {}  # last seq -> when the watcher saw it folded
    done = threading.Event()

    def watch() -> None:  # when did each acknowledged request become visible?
        i = 0
        while i < requests and not (done.is_set() and i >= len(acked)):
            folded = fold.folded_seq
            now = time.perf_counter()
            while i < len(acked) and acked[i][0] <= folded:
                visible[acked[i][0]] = now
                i += 1
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    try:
        for n, events in enumerate(chunks):
            due = start + n * batch_size / rate
            if (pause := due - time.perf_counter()) > 0:
                time.sleep(pause)
            future = event_log.submit(events)
            future.add_done_callback(
                lambda f: acked.append((f.result()[1], time.perf_counter())))
        while len(acked) < requests:
            time.sleep(0.001)
        offered = time.perf_counter() - start
        while fold.folded_seq < event_log.last_seq:
            time.sleep(0.01)
    finally:
        done.set()
        watcher.join()
        fold.stop()
        db.close()
        event_log.close()
    lat = [visible[seq] - t for seq, t in acked]
    return {"rate_target": rate, "rate_achieved": requests * batch_size / offered,
            "requests": requests, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * percentile(lat, 0.99), "max_ms": 1000 * max(lat),
            "fold_batches": fold.batches_folded}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    p.add_argument("--batches", type=int, default=200, help="incremental batches to time")
    p.add_argument("--batch-size", type=int, default=1000, help="events per batch/request")
    p.add_argument("--rate", type=int, default=100_000, help="sustained load, events/s")
    p.add_argument("--seconds", type=float, default=20.0, help="sustained load duration")
    p.add_argument("--dir", type=Path, default=None, help="where to work (a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="runlake-bench-fold-") as tmp:
        log_dir, db_path = Path(tmp) / "log", Path(tmp) / "runlake.duckdb"
        make_log(log_dir, args.events)
        figures: dict[str, Any] = {"plain_load": measure_plain_load(log_dir, db_path),
                                   "replay": measure_replay(log_dir, db_path)}
        r, plain = figures["replay"], figures["plain_load"]
        print(f"replay: {r['events']:,} events in {r['seconds']:.2f} s = "
              f"{r['events_per_s']:,.0f} events/s; database {r['db_bytes'] / 1e6:,.1f} MB, "
              f"log {r['log_bytes'] / 1e6:,.1f} MB; plain DuckDB load "
              f"{plain['events_per_s']:,.0f} events/s, replay ÷ plain load "
              f"{r['events_per_s'] / plain['events_per_s']:.2f}", flush=True)
        figures["incremental"] = i = measure_incremental(
            log_dir, db_path, args.batches, args.batch_size)
        print(f"incremental: {i['batches']} batches of {i['batch_size']:,} events: "
              f"p50 {i['p50_ms']:.0f} ms, p99 {i['p99_ms']:.0f} ms, max {i['max_ms']:.0f} ms",
              flush=True)
        figures["sustained"] = s = measure_sustained(
            log_dir, db_path, args.rate, args.seconds, args.batch_size)
        print(f"sustained: {s['rate_achieved']:,.0f} events/s offered "
              f"(target {s['rate_target']:,}): ack → visible p50 {s['p50_ms']:.0f} ms, "
              f"p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms "
              f"in {s['fold_batches']} fold batches", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
