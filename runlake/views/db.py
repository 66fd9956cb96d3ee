"""The DuckDB file: one writer (the fold), many readers, each on its own cursor.

Reads run in a thread pool so no handler touches DuckDB on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import duckdb

from runlake.errors import Unavailable
from runlake.views import VIEWS, tables

T = TypeVar("T")
SCHEMA_VERSION = 1


class Database:
    """A DuckDB file holding the base tables and views. `close()` is idempotent."""

    def __init__(self, path: Path, *, threads: int = 2, memory_limit: str = "1GB",
                 readers: int = 4) -> None:
        self.path = Path(path)
        self.threads, self.memory_limit, self.readers = threads, memory_limit, readers
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def open(self) -> Database:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path), config={
            "threads": self.threads, "memory_limit": self.memory_limit,
        })
        con.execute("SET TimeZone = 'UTC'")
        create_schema(con)
        self._con = con
        self._pool = ThreadPoolExecutor(self.readers, thread_name_prefix="runlake-read")
        return self

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._con is not None:
                self._con.close()
                self._con = None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The writer connection (for the fold)."""
        if self._con is None:
            raise Unavailable("the database is closed")
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.connection.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    def read_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        cur = self.cursor()
        try:
            return fn(cur)
        finally:
            cur.close()

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn(cursor)` on a reader thread with a cursor of its own."""
        if self._pool is None:
            raise Unavailable("the database is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.read_sync, fn)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    tables.create(con)
    for view in VIEWS:
        con.execute(view.create)
    if con.execute("SELECT count(*) FROM fold_state").fetchone() == (0,):
        con.execute("INSERT INTO fold_state VALUES (0, ?)", [SCHEMA_VERSION])


def folded_seq(con: duckdb.DuckDBPyConnection) -> int:
    """The high-water mark: the last seq folded into this database."""
    row = con.execute("SELECT folded_seq FROM fold_state").fetchone()
    return int(row[0]) if row else 0
