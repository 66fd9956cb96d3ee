"""Opening a data folder (`<data>/`: log/, runlake.duckdb, inbox/): the one way the
server and every command do it, so none of them can skip a step.

A data folder opens in dependency order and closes in reverse:

1. the event log (`open_log`): opened, recovering the write-ahead tail; closed
   last, so the tail rolls into a segment and a stopped log is all Parquet
   (DESIGN §2). Its lock admits one process; another is told what to do instead.
2. the database and its fold (`open_database`): a file of an older schema version
   (or not a database at all) is first rebuilt from the log (`ensure_current`),
   then the fold follows the log into it; it stops only after folding to the end.
3. the inbox watcher (`watching_inbox`, on the running event loop): stopped first,
   once the files it already appended have moved to `.done/`.

`open_folder` opens 1 and 2 (1 alone for commands that only append);
`open_folder_async` opens them on a thread, off the event loop, then adds 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TypeVar

from runlake.errors import LogLocked
from runlake.events.log import EventLog
from runlake.ingest.fold import Fold
from runlake.ingest.inbox import Inbox
from runlake.ingest.replay import ensure_current
from runlake.settings import Settings
from runlake.views.db import Database

__all__ = ["DataFolder", "in_thread", "open_database", "open_folder", "open_folder_async",
           "open_log", "watching_inbox"]

log = logging.getLogger("runlake.datafolder")
T = TypeVar("T")


@dataclass
class DataFolder:
    """What is open of one data folder: the log always; the database and fold, and
    the inbox, when asked for."""

    settings: Settings
    event_log: EventLog
    db: Database | None = None
    fold: Fold | None = None
    inbox: Inbox | None = None


@contextlib.contextmanager
def open_log(settings: Settings, *, if_busy: str) -> Iterator[EventLog]:
    """The data folder's log, open for appending; closed (tail rolled) on exit.

    `if_busy`: what to do instead when another process holds the log (says the
    LogLocked raised then, after naming the folder)."""
    event_log = EventLog(settings.log_dir, roll_rows=settings.roll_rows,
                         roll_seconds=settings.roll_seconds)
    try:
        event_log.open()
    except LogLocked:
        raise LogLocked(
            f"the data folder {settings.data} is in use by a running server (or another "
            f"runlake command holds {settings.log_dir / 'LOCK'}): {if_busy}"
        ) from None
    log.info("event log open dir=%s last_seq=%d", settings.log_dir, event_log.last_seq)
    try:
        yield event_log
    finally:
        event_log.close()
        log.info("event log closed last_seq=%d", event_log.last_seq)


@contextlib.contextmanager
def open_database(settings: Settings, event_log: EventLog) -> Iterator[tuple[Database, Fold]]:
    """The database, rebuilt first if its schema is older than this runlake's, and
    the fold following `event_log` into it; on exit the fold folds to the end of
    the log and stops, then the database closes."""
    # After an upgrade that changed a table's shape the old file would fail every
    # fold batch: views are derived data, so rebuilding from the log is always safe.
    ensure_current(event_log, settings.db_path, settings.fold_batch_rows)
    db = Database(settings.db_path).open()
    try:
        # The series is the performance report's; unloaded (no server reads), it ignores notes.
        fold = Fold(db, event_log, settings.fold_batch_rows, series=db.series)
        fold.start()
        log.info("fold started db=%s folded_seq=%d", settings.db_path, fold.folded_seq)
        try:
            yield db, fold
        finally:
            fold.stop()
            log.info("fold stopped folded_seq=%d", fold.folded_seq)
    finally:
        db.close()


@contextlib.contextmanager
def open_folder(settings: Settings, *, if_busy: str, database: bool = True
                ) -> Iterator[DataFolder]:
    """The log, then (with `database`) the database and its fold; closed in reverse."""
    with open_log(settings, if_busy=if_busy) as event_log:
        folder = DataFolder(settings, event_log)
        if not database:
            yield folder
            return
        with open_database(settings, event_log) as (folder.db, folder.fold):
            yield folder


@contextlib.asynccontextmanager
async def watching_inbox(settings: Settings, event_log: EventLog) -> AsyncIterator[Inbox]:
    """The inbox watcher on the running loop (DESIGN §5), entered once it watches
    (its folder exists); stopped on exit after finishing the files it already
    appended."""
    inbox = Inbox(settings, event_log)
    task = inbox.start()
    try:
        watching = asyncio.ensure_future(inbox.watching.wait())
        try:
            await asyncio.wait({task, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
        if task.done():  # it failed before it could watch: say why
            task.result()
        yield inbox
    finally:
        await inbox.stop()


@contextlib.asynccontextmanager
async def open_folder_async(settings: Settings, *, if_busy: str, inbox: bool
                            ) -> AsyncIterator[DataFolder]:
    """`open_folder` (log, database, fold) entered and left on the default executor,
    since it touches files and DuckDB; then, with `inbox`, the inbox watcher."""
    async with in_thread(open_folder(settings, if_busy=if_busy)) as folder:
        if not inbox:
            yield folder
            return
        async with watching_inbox(settings, folder.event_log) as folder.inbox:
            yield folder


@contextlib.asynccontextmanager
async def in_thread(cm: contextlib.AbstractContextManager[T]) -> AsyncIterator[T]:
    """Enter and leave the blocking context manager `cm` on the default executor."""
    loop = asyncio.get_running_loop()
    value = await loop.run_in_executor(None, cm.__enter__)
    try:
        yield value
    except BaseException as e:
        if not await loop.run_in_executor(None, cm.__exit__, type(e), e, e.__traceback__):
            raise
    else:
        await loop.run_in_executor(None, cm.__exit__, None, None, None)
