"""Replay (DESIGN §3): rebuild the database from the log into a new file, then swap.

The log is the source of truth, so the database can always be thrown away and
rebuilt. Replay folds the log into `<db>.replay` without any view upkeep (base
tables only, big batches), computes every view once at the end, checkpoints,
and renames the new file over the old one. Until that rename the old file is
untouched, so a replay that fails or is interrupted changes nothing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from runlake.errors import LogLocked, RunlakeError
from runlake.events.log import EventLog
from runlake.events.wal import fsync_dir
from runlake.ingest.fold import fold_table, rebuild_views
from runlake.progress import Progress
from runlake.settings import Settings
from runlake.views.db import create_schema, folded_seq

log = logging.getLogger("runlake.replay")


@dataclass(frozen=True)
class ReplayResult:
    events: int
    folded_seq: int
    seconds: float
    db_bytes: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def staging_path(db_path: Path) -> Path:
    """Where a replay builds the new file, beside the old one (same filesystem)."""
    return db_path.with_name(db_path.name + ".replay")


def build(event_log: EventLog, path: Path, *, batch_rows: int = 1_000_000,
          upto: int | None = None, progress: Progress | None = None) -> int:
    """Fold the log (up to seq `upto`) into a fresh DuckDB file at `path`.

    Returns the seq folded to. Each batch is its own transaction with its
    high-water mark, so `path` is a valid database after every batch; the views
    are computed once, in the last transaction.
    """
    remove_database(path)
    last = event_log.last_seq if upto is None else upto
    con = duckdb.connect(str(path), config={"threads": os.cpu_count() or 2})
    try:
        con.execute("SET TimeZone = 'UTC'")
        create_schema(con)
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in event_log.read(1, last):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= batch_rows:
                fold_table(con, pa.Table.from_batches(pending), incremental=False)
                if progress is not None:
                    progress.update(rows)
                pending, rows = [], 0
        if pending:
            fold_table(con, pa.Table.from_batches(pending), incremental=False)
            if progress is not None:
                progress.update(rows)
        con.execute("BEGIN")
        rebuild_views(con)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return folded_seq(con)
    finally:
        con.close()


def swap(new: Path, db_path: Path) -> None:
    """Make `new` the database at `db_path` in one rename.

    The old file's DuckDB write-ahead log goes first: left beside the new file
    it would be replayed into it. Without it the old file is still a consistent
    (if older) database, and the fold would redo what it loses.
    """
    Path(str(db_path) + ".wal").unlink(missing_ok=True)
    os.replace(new, db_path)
    fsync_dir(db_path.parent)


def remove_database(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)


def replay(settings: Settings, *, show_progress: bool = True) -> ReplayResult:
    """`runlake replay`: rebuild `settings.db_path` from the log, offline.

    Holding the log's lock keeps a server from starting on this data folder
    meanwhile (and, if one is running, refuses: it holds the database open).
    """
    event_log = EventLog(settings.log_dir)
    try:
        event_log.open()  # recovers a torn write-ahead tail, as a server would
    except LogLocked:
        raise RunlakeError(
            f"the data folder {settings.data} is in use by a running server: stop it first, "
            "then run `runlake replay` again"
        ) from None
    try:
        total = event_log.last_seq
        staging = staging_path(settings.db_path)
        progress = Progress("replay", total) if show_progress else None
        start = time.monotonic()
        try:
            seq = build(event_log, staging, batch_rows=settings.fold_batch_rows,
                        progress=progress)
        except BaseException:
            remove_database(staging)
            raise
        swap(staging, settings.db_path)
        seconds = time.monotonic() - start
        if progress is not None:
            progress.finish()
        result = ReplayResult(total, seq, seconds, settings.db_path.stat().st_size)
        log.info("replayed %d events in %.1f s (%.0f events/s) into %s",
                 total, seconds, result.events_per_s, settings.db_path)
        return result
    finally:
        event_log.close()
