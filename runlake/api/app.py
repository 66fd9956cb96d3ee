"""`make_app(settings)`: the aiohttp application, its shared state and its lifetimes.

Lifetimes are `cleanup_ctx` entries in dependency order; aiohttp enters them in
order at start-up and leaves them in reverse at shutdown, after in-flight
requests have finished:

0. the API keys: read first, so an invalid keys file stops start-up before
   anything else opens;
1. the data folder, opened as every command opens it (ingest/datafolder.py): the
   event log, then the database (rebuilt if its schema is older) and the fold,
   then the inbox watcher (when `settings.inbox`); closed in reverse, so the fold
   folds to the end before the log rolls its tail into a segment. A replay the
   server started is dropped first.

Opening and closing touch files and DuckDB, so they run in the default executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from runlake.api.access import Auth
from runlake.api.auth import authenticate, is_loopback
from runlake.api.broadcast import close_streams, stream_context
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
from runlake.ingest.datafolder import open_folder_async
from runlake.ingest.replay import Rebuild
from runlake.settings import Settings

# What a second server on the same data folder is told.
SERVE_BUSY = "stop it first, or give this server another --data folder"


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
    app.cleanup_ctx.append(data_folder_context)
    app.cleanup_ctx.append(stream_context)  # live streams (docs/stream.md)
    app.on_shutdown.append(close_streams)
    add_routes(app)
    # The dashboard at / (docs/dashboard.md). Imported here, not at the top: runlake.web
    # imports the api package, whose __init__ imports this module.
    from runlake.web import add_pages
    add_pages(app)
    if loopback is None:
        loopback = is_loopback(settings.host)
    app[AUTH] = Auth(KeyRing(settings.keys_path), loopback)
    return app


async def keys_context(app: web.Application) -> AsyncIterator[None]:
    await asyncio.get_running_loop().run_in_executor(None, app[AUTH].keyring.load)
    yield


async def data_folder_context(app: web.Application) -> AsyncIterator[None]:
    """The data folder: log, database and fold, inbox (ingest/datafolder.py).

    Appends never wait for the fold: a stopped or slow fold shows as lag in
    /readyz and /metrics, not as failed ingest.
    """
    settings = app[SETTINGS]
    async with open_folder_async(settings, if_busy=SERVE_BUSY, inbox=settings.inbox) as folder:
        assert folder.db is not None and folder.fold is not None
        folder.db.preload_series()  # the performance report's, off the first request's path
        app[EVENT_LOG], app[DATABASE], app[FOLD] = folder.event_log, folder.db, folder.fold
        if folder.inbox is not None:
            app[INBOX] = folder.inbox
        app[REBUILD] = rebuild = Rebuild(folder.db, folder.fold, folder.event_log,
                                         settings.fold_batch_rows)
        try:
            yield
        finally:  # a replay in flight is dropped before the fold stops
            await asyncio.get_running_loop().run_in_executor(None, rebuild.stop)
