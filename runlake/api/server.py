"""`runlake serve`: bind, announce the bound URL, run until SIGTERM/SIGINT, stop cleanly.

Shutdown order (aiohttp's AppRunner.cleanup): stop accepting connections, let
in-flight requests (and so their appends) finish, then leave the cleanup
contexts in reverse: the fold folds to the end of the log, then the log closes
and rolls its tail into a segment.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from runlake.api.app import make_app
from runlake.api.auth import is_loopback
from runlake.api.keys import load_keys
from runlake.api.protocol import Runner
from runlake.errors import RunlakeError
from runlake.settings import Settings

log = logging.getLogger("runlake.server")

SHUTDOWN_TIMEOUT = 30.0  # seconds in-flight requests get before they are cancelled


def serve(settings: Settings) -> int:
    """Run the server until a signal; 0 after a clean stop, 2 if it cannot start."""
    # load_keys raises (exit 2, via the CLI) on an invalid keys file, whatever the bind.
    loopback = is_loopback(settings.host)  # may resolve a name: before the loop runs
    if not loopback and not load_keys(settings.keys_path):
        # DESIGN §6: with no API keys, auth is off, which is only safe on loopback.
        print(
            f"runlake: refusing to bind {settings.host}: no API keys exist in "
            f"{settings.keys_path}, and without keys the API is open to anyone who can "
            "reach it, which is only allowed on a loopback bind (127.0.0.1, ::1).\n"
            f"Create a key first:  runlake keys add --role admin --data {settings.data}\n"
            "then start again (every request will need a key), or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_serve(settings, loopback))


async def _serve(settings: Settings, loopback: bool) -> int:
    app = make_app(settings, loopback=loopback)
    runner = Runner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
    except (RunlakeError, OSError) as e:
        await runner.cleanup()
        message = e.message if isinstance(e, RunlakeError) else str(e)
        print(f"runlake: cannot start: {message}", file=sys.stderr)
        return 2
    port = runner.addresses[0][1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{port}"
    print(f"runlake listening on {url}", flush=True)
    log.info("listening url=%s data=%s", url, settings.data)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down: finishing requests, folding to the end, closing the log")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    log.info("stopped")
    return 0
