"""`make_app(settings)`: the aiohttp application, its shared state and its lifetimes.

Lifetimes are `cleanup_ctx` entries in dependency order; aiohttp enters them in
order at start-up and leaves them in reverse at shutdown, after in-flight
requests have finished:

0. the API keys: read first, so an invalid keys file stops start-up before
   anything else opens;
1. the event log: opened (recovering the write-ahead tail), closed last so the
   tail rolls into a segment and the stopped log is all Parquet (DESIGN §2);
2. the database and the fold: the fold stops only after folding to the end;
3. the inbox watcher (when `settings.inbox`): stopped first, after the files it
   already appended have moved to `.done/`.

Opening and closing touch files and DuckDB, so they run in the default executor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from runlake.api.auth import Auth, authenticate, is_loopback
from runlake.api.keys import KeyRing
from runlake.api.limits import concurrency_limit, read_body_in_time
from runlake.api.metrics import HttpMetrics
from runlake.api.middleware import errors_and_metrics
from runlake.api.routes import add_routes
from runlake.api.state import (
    AUTH,
    DATABASE,
    EVENT_LOG,
    FOLD,
    HTTP_METRICS,
    INBOX,
    REBUILD,
    SETTINGS,
)
from runlake.events import EventLog
from runlake.ingest.fold import Fold
from runlake.ingest.inbox import Inbox
from runlake.ingest.replay import Rebuild, ensure_current
from runlake.settings import Settings
from runlake.views.db import Database

log = logging.getLogger("runlake.api")


def make_app(settings: Settings, *, loopback: bool | None = None) -> web.Application:
    """The app for `settings`; `loopback`: whether the bind address is loopback
    (worked out from `settings.host` when not given)."""
    # client_max_size bounds chunked bodies too; aiohttp's 413 goes through the middleware.
    # authenticate runs inside errors_and_metrics, so refusals are enveloped and counted.
    # The limits (docs/limits.md): the concurrency cap counts every request, even one
    # refused by auth; bodies are read (within read_timeout_s) only once auth has passed.
    # keepalive_timeout is aiohttp's only bound on slow headers (see api/limits.py).
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[errors_and_metrics, concurrency_limit(settings.max_concurrent_requests),
                     authenticate, read_body_in_time],
        handler_args={"keepalive_timeout": settings.read_timeout_s},
    )
    app[SETTINGS] = settings
    app[HTTP_METRICS] = HttpMetrics()
    app.cleanup_ctx.append(keys_context)
    app.cleanup_ctx.append(event_log_context)
    app.cleanup_ctx.append(fold_context)
    app.cleanup_ctx.append(inbox_context)
    add_routes(app)
    if loopback is None:
        loopback = is_loopback(settings.host)
    app[AUTH] = Auth(KeyRing(settings.keys_path), loopback)
    return app


async def keys_context(app: web.Application) -> AsyncIterator[None]:
    await asyncio.get_running_loop().run_in_executor(None, app[AUTH].keyring.load)
    yield


async def event_log_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    event_log = EventLog(
        settings.log_dir, roll_rows=settings.roll_rows, roll_seconds=settings.roll_seconds
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, event_log.open)
    app[EVENT_LOG] = event_log
    log.info("event log open dir=%s last_seq=%d", settings.log_dir, event_log.last_seq)
    try:
        yield
    finally:
        await loop.run_in_executor(None, event_log.close)
        log.info("event log closed last_seq=%d", event_log.last_seq)


async def fold_context(app: web.Application) -> AsyncIterator[None]:
    """The database and the fold that follows the log into it.

    Appends never wait for the fold: a stopped or slow fold shows as lag in
    /readyz and /metrics, not as failed ingest.
    """
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(  # after an upgrade that changed the views' shape
        None, ensure_current, app[EVENT_LOG], settings.db_path, settings.fold_batch_rows)
    db = Database(settings.db_path)
    await loop.run_in_executor(None, db.open)
    try:
        fold = await loop.run_in_executor(
            None, _start_fold, db, app[EVENT_LOG], settings.fold_batch_rows
        )
    except BaseException:
        await loop.run_in_executor(None, db.close)
        raise
    db.preload_series()  # the performance report's, off the first request's path
    app[DATABASE] = db
    app[FOLD] = fold
    app[REBUILD] = rebuild = Rebuild(db, fold, app[EVENT_LOG], settings.fold_batch_rows)
    log.info("fold started db=%s folded_seq=%d", settings.db_path, fold.folded_seq)
    try:
        yield
    finally:
        try:
            await loop.run_in_executor(None, rebuild.stop)  # a replay in flight is dropped
            await loop.run_in_executor(None, fold.stop)  # folds to the end of the log
            log.info("fold stopped folded_seq=%d", fold.folded_seq)
        finally:
            await loop.run_in_executor(None, db.close)


def _start_fold(db: Database, event_log: EventLog, batch_rows: int) -> Fold:
    fold = Fold(db, event_log, batch_rows, series=db.series)  # reads the high-water mark
    fold.start()
    return fold


async def inbox_context(app: web.Application) -> AsyncIterator[None]:
    """Files dropped into `<data>/inbox` are appended like POSTed events (DESIGN §5)."""
    settings = app[SETTINGS]
    if not settings.inbox:
        yield
        return
    inbox = Inbox(settings, app[EVENT_LOG])
    app[INBOX] = inbox
    inbox.start()
    try:
        yield
    finally:
        await inbox.stop()
