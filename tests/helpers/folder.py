"""Fold an existing log into a DuckDB file in small batches until done or killed (the
subject of test_fold_crash.py).

    python folder.py LOG_DIR DB_FILE [--batch-rows N] [--use-fold] [--hold-after N]

Prints `ready <folded_seq>` once the database is open (the high-water mark a killed
predecessor left), then `folded <seq>` after each committed batch, then `done <seq>`.
With --use-fold the batches are folded by `Fold.fold_available()`, otherwise by a loop
of `fold_table`; either way `fold_table` is wrapped to report each batch. With
--hold-after N it stops after N batches and waits to be killed, so that the test
bounds how far a run gets. Each line is one os.write: never torn.

Also `fill_log`, the log the fold tests share.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from runlake import demo
from runlake.events import EventLog, decode_events
from runlake.ingest import fold as fold_module
from runlake.ingest.fold import Fold, fold_table
from runlake.views.db import Database, folded_seq


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("log_dir", type=Path)
    p.add_argument("db_file", type=Path)
    p.add_argument("--batch-rows", type=int, default=500)
    p.add_argument("--use-fold", action="store_true")
    p.add_argument("--hold-after", type=int, default=0)
    args = p.parse_args()
    log = EventLog(args.log_dir, readonly=True).open()
    db = Database(args.db_file).open()
    con = db.connection
    seq = folded_seq(con)
    say(f"ready {seq}")
    folded = 0

    def reported_fold_table(*a: Any, **kw: Any) -> int:
        nonlocal folded
        last = fold_table(*a, **kw)
        say(f"folded {last}")
        folded += 1
        if folded == args.hold_after:
            threading.Event().wait()  # until killed
        return last

    fold_module.fold_table = reported_fold_table  # what Fold.fold_available calls
    if args.use_fold:
        Fold(db, log, batch_rows=args.batch_rows).fold_available()
    else:
        while seq < log.last_seq:
            batches = list(log.read(seq + 1, seq + args.batch_rows))
            seq = reported_fold_table(con, pa.Table.from_batches(batches))
    seq = folded_seq(con)
    db.close()
    log.close()
    say(f"done {seq}")


if __name__ == "__main__":
    main()


def fill_log(log_dir: Path, runs: int) -> int:
    """The demo's runs, then a resent chunk (duplicate ids), deletes of runs and of a
    batch, and events that bring a deleted run back. Returns the last seq."""
    wires = list(demo.generate(runs, seed=7, now=1_767_225_600, with_ids=True))
    runs = sorted({(w["component"], w["run_id"]) for w in wires if "run_id" in w})
    batch = next(w for w in wires if w["type"] == "batch")
    extra = wires[5_000:6_000]  # a client retrying: every one a duplicate
    extra += [{"type": "delete", "component": c, "run_id": r, "id": f"del-{r}"}
              for c, r in runs[::97]]
    extra += [{"type": "delete", "component": batch["component"], "batch_id": batch["batch_id"]}]
    c, r = runs[0]
    extra += [{"type": "status", "component": c, "run_id": r, "status": "running",
               "ts": "2025-12-01T00:00:00Z"},
              {"type": "metric", "component": c, "run_id": r, "name": "loss", "value": 0.5}]
    with EventLog(log_dir, roll_rows=4_000) as log:
        for start in range(0, len(wires), 2_500):
            log.append(decode_events(msgspec.json.encode(wires[start:start + 2_500])))
        log.append(decode_events(msgspec.json.encode(extra)))
        return log.last_seq
