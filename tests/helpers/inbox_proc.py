"""The inbox for tests, for real: in-process (`running_inbox`: a real EventLog,
Database, Fold and Inbox on a temp folder) or as `python -m runlake watch` in a
subprocess (`WatchProcess`, for kill -9), plus builders of event files."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from runlake.events import EventLog, decode_events, events_to_table
from runlake.ingest.fold import Fold
from runlake.ingest.inbox import Inbox
from runlake.settings import Settings
from runlake.views.db import Database

Wire = dict[str, Any]


# -- event files -----------------------------------------------------------------


def run_events(run_id: str, component: str = "test", metrics: int = 3,
               ids: bool = False) -> list[Wire]:
    """The events of one whole run, one of nearly every type, with fixed times."""
    base: Wire = {"component": component, "run_id": run_id}
    t = "2024-05-01T12:00:{:02d}Z"
    events: list[Wire] = [
        {"type": "run", "model": "gpt2", "hardware": "nvidia-t4", "name": f"run {run_id}",
         "params": {"batch_size": 8, "tags": ["a", "b"]}, "ts": t.format(0)},
        {"type": "status", "status": "running", "ts": t.format(1)},
        {"type": "step", "step": "load", "status": "completed", "progress": 1.0,
         "ts": t.format(2)},
        {"type": "tag", "key": "branch", "value": "main", "ts": t.format(3)},
        {"type": "log", "level": "info", "message": f"hello from {run_id}", "ts": t.format(4)},
        {"type": "artifact", "name": "report.html", "uri": "s3://b/report.html",
         "size_bytes": 1234, "ts": t.format(5)},
        {"type": "result", "test": "test_ok", "outcome": "passed", "duration_s": 0.5,
         "ts": t.format(6)},
    ]
    events += [
        {"type": "metric", "name": "loss", "value": 1 / (i + 1), "step": i, "unit": "nats",
         "ts": 1714564807.0 + i}  # epoch seconds, as some clients send
        for i in range(metrics)
    ]
    events.append({"type": "status", "status": "completed", "ts": "2024-05-01T12:01:00Z"})
    out = [base | e for e in events]
    if ids:
        for n, e in enumerate(out):
            e["id"] = f"{run_id}-{n}"
    return out


def ndjson_bytes(events: list[Wire]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def json_bytes(events: list[Wire] | Wire) -> bytes:
    return json.dumps(events, indent=2).encode()


def parquet_bytes(events: list[Wire]) -> bytes:
    """Events as a Parquet file in the log's columns, less `seq` and `received_at`."""
    table = events_to_table(decode_events(json.dumps(events).encode()), 1, 0)
    buf = io.BytesIO()
    pq.write_table(table.drop_columns(["seq", "received_at"]), buf)
    return buf.getvalue()


ENCODERS: dict[str, Callable[[list[Wire]], bytes]] = {
    ".ndjson": ndjson_bytes,
    ".jsonl": ndjson_bytes,
    ".json": json_bytes,
    ".parquet": parquet_bytes,
}


def encode(name: str, events: list[Wire]) -> bytes:
    """The bytes of a file called `name` holding `events` (gzipped for *.gz)."""
    gz = name.endswith(".gz")
    suffix = Path(name[:-3] if gz else name).suffix
    data = ENCODERS[suffix](events)
    return gzip.compress(data) if gz else data


def drop(directory: Path, name: str, data: bytes) -> Path:
    """Write a file the way writers should: under a `.part` name, then rename."""
    part = directory / f"{name}.part"
    part.write_bytes(data)
    path = directory / name
    os.rename(part, path)
    return path


# -- in-process ------------------------------------------------------------------


@dataclass
class RunningInbox:
    settings: Settings
    inbox: Inbox
    event_log: EventLog
    db: Database
    fold: Fold

    @property
    def dir(self) -> Path:
        return self.settings.inbox_dir

    def files(self, sub: str = "") -> list[str]:
        """Names of the files in the inbox (or its `.done`/`.rejected`), sorted."""
        return sorted(p.name for p in (self.dir / sub).iterdir() if not p.is_dir())

    async def until(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out waiting for the inbox"
            await asyncio.sleep(0.02)

    async def settled(self, files: int, timeout: float = 30.0) -> None:
        """Wait until `files` files in all were ingested or rejected, then for the fold."""
        inbox = self.inbox
        await self.until(lambda: inbox.files_ingested + inbox.files_rejected >= files, timeout)
        if self.fold.running:
            assert await self.fold.wait_folded(self.event_log.last_seq, timeout)

    async def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        def run(cur: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
            return cur.execute(query, params or []).fetchall()

        return await self.db.read(run)

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        return await self.db.read(fn)


@contextlib.asynccontextmanager
async def running_inbox(data: Path, *, start: bool = True, fold: bool = True,
                        max_bytes: int | None = None, **settings: Any
                        ) -> AsyncIterator[RunningInbox]:
    """A real log, database, fold and inbox over `data`; everything closed on exit.
    `fold=False`: the fold does not follow the log (call `fold.fold_available()`)."""
    config = Settings(data=data, **settings)
    event_log = EventLog(config.log_dir, roll_rows=config.roll_rows,
                         roll_seconds=config.roll_seconds)
    await asyncio.to_thread(event_log.open)
    db = Database(config.db_path, readers=2)
    follower: Fold | None = None
    try:
        await asyncio.to_thread(db.open)
        follower = Fold(db, event_log, config.fold_batch_rows)
        if fold:
            follower.start()
        extra = {} if max_bytes is None else {"max_bytes": max_bytes}
        inbox = Inbox(config, event_log, **extra)
        if start:
            inbox.start()
            await inbox.watching.wait()
        try:
            yield RunningInbox(config, inbox, event_log, db, follower)
        finally:
            await inbox.stop()
    finally:
        if follower is not None:
            await asyncio.to_thread(follower.stop)
        await asyncio.to_thread(db.close)
        await asyncio.to_thread(event_log.close)


# -- subprocess ------------------------------------------------------------------

WATCHING = "runlake watching "


class WatchProcess:
    """`python -m runlake watch --data DATA` in a subprocess (stderr read by us)."""

    def __init__(self, data: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLAKE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runlake", "watch", "--data", str(data),
             "--log-level", "warning", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        self.output = b""

    def wait_watching(self, timeout: float = 120.0) -> None:
        """Block until the watcher has opened the log and database and is watching."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        while WATCHING.encode() not in self.output:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, self.output.decode(errors="replace")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                self.output += os.read(fd, 65536)

    def kill(self) -> None:
        """kill -9, and reap."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM: finish the file in hand, fold to the end, close; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        rest, _ = self.proc.communicate(timeout=timeout)
        self.output += rest or b""
        return self.proc.returncode

    def _close(self) -> None:
        if self.proc.stderr is not None:
            self.proc.stderr.close()
