"""Benchmark: NDJSON bytes -> validated events -> durable log append (DESIGN §2, §9).

    python bench/log_append.py [--events 1000000] [--batch 1000] [--threads 1,4,8]

Batches of `--batch` realistic events (`runlake.demo`) are decoded and appended, each
submitter waiting for its acknowledgement (fsync) before the next batch, as an HTTP
client waits for its 202. Before that, the stages are timed alone to show where the time
goes: decode (msgspec), events_to_table (Arrow columns), WAL frame encoding (Arrow IPC).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from runlake.events import EventLog, decode_events, events_to_table
from runlake.events.wal import encode_frame


def demo_batches(events: int, batch: int) -> list[bytes]:
    """NDJSON chunks of `batch` events, `events` in all (generation is not timed)."""
    try:
        from runlake.demo import ndjson_batches

        chunks: Iterator[bytes] = ndjson_batches(events // 25 + 10, seed=1, batch_size=batch)
    except ImportError:
        chunks = _fallback_batches(batch)
    out: list[bytes] = []
    for chunk in itertools.islice(chunks, -(-events // batch)):
        out.append(chunk)
    last = events - batch * (len(out) - 1)
    if out and last < batch:
        out[-1] = b"".join(out[-1].splitlines(keepends=True)[:last])
    assert sum(c.count(b"\n") for c in out) == events, "the generator ran short"
    return out


def _fallback_batches(batch: int) -> Iterator[bytes]:
    """Runs of ~30 events (status, steps, metrics, tags, logs) if runlake.demo is missing."""
    rng = random.Random(1)
    enc = msgspec.json.Encoder()
    pending: list[dict[str, object]] = []
    for n in itertools.count():
        run = {"component": rng.choice(["test", "generator", "benchmark"]), "run_id": f"run-{n}"}
        ts = 1_714_564_800 + n
        pending += [{"type": "run", **run, "ts": ts, "model": "llama-3.1-8b",
                     "hardware": "nvidia-h100", "params": {"lr": 1e-4, "seed": n}},
                    {"type": "status", **run, "ts": ts, "status": "running"}]
        for i in range(8):
            pending.append({"type": "step", **run, "ts": ts + i, "step": f"step-{i}",
                            "status": "completed", "progress": 1.0})
        for i in range(14):
            pending.append({"type": "metric", **run, "ts": ts + i, "name": "loss",
                            "value": rng.random(), "unit": "nats", "step": i})
        pending += [{"type": "tag", **run, "key": "branch", "value": "main"},
                    {"type": "log", **run, "level": "info", "message": "done in 12.5 s"},
                    {"type": "status", **run, "ts": ts + 20, "status": "completed"}]
        while len(pending) >= batch:
            yield enc.encode_lines(pending[:batch])
            pending = pending[batch:]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stages(chunks: list[bytes]) -> list[tuple[str, float]]:
    """Seconds spent in each stage alone, one batch at a time."""
    decode_s = table_s = frame_s = 0.0
    seq = 1
    for chunk in chunks:
        t0 = time.perf_counter()
        events = decode_events(chunk, ndjson=True)
        t1 = time.perf_counter()
        table = events_to_table(events, seq, time.time_ns() // 1000)
        t2 = time.perf_counter()
        encode_frame(table)
        t3 = time.perf_counter()
        decode_s, table_s, frame_s = decode_s + t1 - t0, table_s + t2 - t1, frame_s + t3 - t2
        seq += len(events)
    return [("decode only", decode_s), ("events_to_table only", table_s),
            ("WAL frame (Arrow IPC) only", frame_s),
            ("decode + table + frame", decode_s + table_s + frame_s)]


def append(chunks: list[bytes], threads: int, directory: Path) -> tuple[float, float, EventLog]:
    """Decode and append every chunk from `threads` submitters, each waiting for its ack.
    Returns (seconds to the last ack, seconds to close: rolling the tail), and the log."""
    log = EventLog(directory).open()
    work = iter(chunks)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            while True:
                with lock:
                    chunk = next(work, None)
                if chunk is None:
                    return
                log.append(decode_events(chunk, ndjson=True))
        except BaseException as e:  # reported below; a benchmark must not hide failures
            errors.append(e)

    workers = [threading.Thread(target=submitter) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    acked = time.perf_counter() - start
    closing = timed(log.close)
    if errors:
        raise errors[0]
    return acked, closing, log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events per scenario")
    p.add_argument("--batch", type=int, default=1000, help="events per append (request)")
    p.add_argument("--threads", default="1,4,8", help="comma-separated submitter counts")
    p.add_argument("--dir", type=Path, default=None, help="where to put the logs (temp dir)")
    args = p.parse_args(argv)

    t = time.perf_counter()
    chunks = demo_batches(args.events, args.batch)
    mb = sum(map(len, chunks)) / 1e6
    n = args.events
    print(f"{n:,} events in {len(chunks):,} batches of {args.batch:,}, {mb:,.1f} MB of NDJSON "
          f"({mb * 1e6 / n:,.0f} B/event); generated in {time.perf_counter() - t:.1f} s\n")
    head = f"{'scenario':<34} {'seconds':>8} {'events/s':>12} {'MB/s':>8}  notes"
    print(head)
    print("-" * len(head))

    def row(name: str, seconds: float, notes: str = "") -> None:
        print(f"{name:<34} {seconds:>8.2f} {n / seconds:>12,.0f} {mb / seconds:>8.1f}  {notes}")
        sys.stdout.flush()

    for name, seconds in stages(chunks):
        row(name, seconds)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="runlake-bench-") as tmp:
        for threads in (int(x) for x in args.threads.split(",")):
            directory = Path(tmp) / f"log-{threads}"
            acked, closing, log = append(chunks, threads, directory)
            per_commit = log.appended_events / max(1, log.group_commits)
            notes = (f"{log.group_commits:,} fsyncs, {per_commit:,.0f} events/fsync; "
                     f"close (roll tail) {closing:.2f} s")
            row(f"durable append, {threads} submitter{'s' * (threads > 1)}", acked, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
