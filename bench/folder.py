"""Benchmark: the watched folder (DESIGN §5, §9), from drop to durable and to visible.

    python bench/folder.py [--events 1000000] [--file-events 100000] [--baseline-events 5000]

Realistic events (`runlake.demo`) are written, untimed, as NDJSON files and as
Parquet files (the log's columns less `seq` and `received_at`) of `--file-events`
each. For each format a fresh data folder gets the real stack: EventLog, Database,
Fold and Inbox. The files are renamed into the inbox all at once, then we time:

- validate: reading and validating the files alone (one thread, no log), for scale;
- durable: drop -> every file's events durable in the log (and the file in .done/);
- visible: drop -> the fold has caught up, so the views show every event.

The seed-style baseline (`bench/baseline`: one DuckDB transaction per event, as it
is read) ingests the first `--baseline-events` events of the NDJSON files.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyarrow.parquet as pq

from runlake.demo import ndjson_batches
from runlake.events import EventLog, decode_events, events_to_table
from runlake.ingest.files import decode_file, parquet_table
from runlake.ingest.fold import Fold
from runlake.ingest.inbox import Inbox
from runlake.ingest.inbox_ids import assign_ids, assign_table_ids, content_key
from runlake.settings import Settings
from runlake.views.db import Database


def make_files(staging: Path, events: int, per_file: int) -> dict[str, list[Path]]:
    """NDJSON and Parquet files of the same events, `per_file` each."""
    out: dict[str, list[Path]] = {"ndjson": [], "parquet": []}
    (staging / "ndjson").mkdir()
    (staging / "parquet").mkdir()
    chunks = ndjson_batches(events // 25 + 10, seed=1, batch_size=per_file)
    left = events
    for n, chunk in enumerate(itertools.islice(chunks, -(-events // per_file))):
        if left < per_file:
            chunk = b"".join(chunk.splitlines(keepends=True)[:left])
        left -= chunk.count(b"\n")
        path = staging / "ndjson" / f"events-{n:04d}.ndjson"
        path.write_bytes(chunk)
        out["ndjson"].append(path)
        table = events_to_table(decode_events(chunk, ndjson=True, max_events=per_file), 1, 0)
        buf = io.BytesIO()
        pq.write_table(table.drop_columns(["seq", "received_at"]), buf, compression="zstd")
        path = staging / "parquet" / f"events-{n:04d}.parquet"
        path.write_bytes(buf.getvalue())
        out["parquet"].append(path)
    return out


def validate_rate(paths: list[Path], fmt: str, per_file: int) -> float:
    """Events/s of reading, validating and giving ids to the files, one thread."""
    count = 0
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        key = content_key(data)
        if fmt == "parquet":
            count += assign_table_ids(parquet_table(data, path.name, per_file), key).num_rows
        else:
            events = decode_file(data, fmt, path.name, per_file)
            assign_ids(events, key)
            count += len(events)
    return count / (time.perf_counter() - started)


async def ingest(paths: list[Path], data: Path, per_file: int) -> tuple[int, float, float]:
    """Drop `paths` into a fresh inbox: (events, seconds to durable, seconds to visible)."""
    settings = Settings(data=data, max_events=per_file)
    loop = asyncio.get_running_loop()
    event_log = EventLog(settings.log_dir)
    await loop.run_in_executor(None, event_log.open)
    db = Database(settings.db_path)
    await loop.run_in_executor(None, db.open)
    fold = Fold(db, event_log, settings.fold_batch_rows)
    fold.start()
    inbox = Inbox(settings, event_log)
    inbox.start()
    try:
        await inbox.watching.wait()
        started = time.perf_counter()
        for path in paths:  # same file system: each rename is atomic, as writers should do
            os.rename(path, settings.inbox_dir / path.name)
        while inbox.files_ingested + inbox.files_rejected < len(paths):
            await asyncio.sleep(0.005)
        durable = time.perf_counter() - started
        assert inbox.files_rejected == 0, "a benchmark file was rejected"
        while fold.folded_seq < event_log.last_seq:
            await asyncio.sleep(0.005)
        visible = time.perf_counter() - started
        return inbox.events_ingested, durable, visible
    finally:
        await inbox.stop()
        await loop.run_in_executor(None, fold.stop)
        await loop.run_in_executor(None, db.close)
        await loop.run_in_executor(None, event_log.close)


def _lines(paths: list[Path]) -> Iterator[bytes]:
    """The files' lines in order, read as they are needed."""
    for path in paths:
        with path.open("rb") as f:
            yield from f


def baseline_rate(paths: list[Path], events: int, db_path: Path) -> float:
    """Events/s of the seed-style store: each event its own DuckDB transaction."""
    sys.path.insert(0, str(Path(__file__).parent))
    from baseline.server import Store, validate

    lines = list(itertools.islice(_lines(paths), events))  # the first ones: read no further
    store = Store(str(db_path))
    try:
        started = time.perf_counter()
        parsed = [msgspec.json.decode(line) for line in lines]
        for ev in validate(parsed, None, datetime.now(UTC).replace(tzinfo=None)):
            store.apply(ev)
        return len(lines) / (time.perf_counter() - started)
    finally:
        store.con.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--file-events", type=int, default=100_000)
    p.add_argument("--baseline-events", type=int, default=5_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="runlake-bench-folder-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        files = make_files(root, args.events, args.file_events)
        print(f"wrote {len(files['ndjson'])} NDJSON and {len(files['parquet'])} Parquet "
              f"files of {args.file_events:,} events in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        base = baseline_rate(files["ndjson"], args.baseline_events, root / "baseline.duckdb")
        rows = []
        for fmt in ("ndjson", "parquet"):
            paths = files[fmt]
            size = sum(p.stat().st_size for p in paths)
            validate = validate_rate(paths, fmt, args.file_events)
            events, durable, visible = asyncio.run(
                ingest(paths, root / fmt / "data", args.file_events))
            rows.append((fmt, events, len(paths), size, validate, events / durable,
                         events / visible))
        rows.append(("baseline", args.baseline_events, 1, None, None, base, base))

    print(f"{'format':<9} {'events':>10} {'files':>6} {'MB':>7} {'validate ev/s':>14} "
          f"{'durable ev/s':>13} {'visible ev/s':>13}")
    for fmt, events, n, size, validate, durable, visible in rows:
        mb = f"{size / 1e6:7.1f}" if size is not None else f"{'-':>7}"
        val = f"{validate:14,.0f}" if validate is not None else f"{'-':>14}"
        print(f"{fmt:<9} {events:>10,} {n:>6} {mb} {val} {durable:13,.0f} {visible:13,.0f}")


if __name__ == "__main__":
    main()
