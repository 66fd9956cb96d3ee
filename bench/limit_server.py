"""The limit server: the least an HTTP server must do to ingest durably and to answer a read
(DESIGN §9's "limit of this machine"), so runlake's figures can be read as a fraction of it.

    python bench/limit_server.py --file events.raw [--host 127.0.0.1] [--port 0]

- `POST /api/events` (JSON or NDJSON, as runlake takes them): the body is decoded and checked
  with runlake's own decoder (`runlake.events.decode_events`, the same msgspec types and
  rules), its raw bytes are handed to one writer thread, and the 202 waits until they are
  on disk. The writer drains whatever has queued up, writes it in one go and fdatasyncs
  once for that whole group of concurrent requests. No Arrow, no log segments, no fold.
- `PUT /cache/{key}` keeps a body; `GET /cache/{key}` answers it, as it is: a bare handler
  returning a cached body (the benchmark stores runlake's own answer for each read route,
  so the bytes on the wire and the client's JSON parsing are the same).
- `GET /stats`: how many appends and fdatasyncs so far (the smoke test reads it).

It prints one line, `limit listening on http://HOST:PORT`, once bound; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
from aiohttp import web

from runlake.errors import InvalidEvents
from runlake.events import decode_events

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})
_encode = msgspec.json.Encoder().encode


class GroupWriter:
    """Appends bodies to one file from one thread: each turn takes every body queued so far,
    writes them and fdatasyncs once, then resolves their futures on the event loop."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop,
                 before_sync: Callable[[int], None] | None = None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None] = (
            queue.SimpleQueue())
        self._before_sync = before_sync  # a test's hook: called with the group's size
        self.next_seq = 1  # numbered on the event loop, in the order bodies are queued
        self.appends = 0
        self.syncs = 0
        self._thread = threading.Thread(target=self._run, name="limit-writer", daemon=True)
        self._thread.start()

    def append(self, body: bytes, events: int) -> tuple[int, int, asyncio.Future[None]]:
        """The seq range given to `body`'s `events` events, and a future resolved once
        `body` is written and fdatasynced. Call it on the event loop."""
        first = self.next_seq
        self.next_seq += events
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((body, done))
        return first, self.next_seq - 1, done

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            group = []
            while item is not None:
                group.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:  # the loop ended on the sentinel: write what came before it, then stop
                stopping = True
            if not group:
                continue
            data = b"".join(body if body.endswith(b"\n") else body + b"\n" for body, _ in group)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self._before_sync is not None:
                self._before_sync(len(group))
            os.fdatasync(self._fd)
            self.appends += len(group)
            self.syncs += 1
            self._loop.call_soon_threadsafe(_resolve, group)


def _resolve(group: list[tuple[bytes, asyncio.Future[None]]]) -> None:
    for _, done in group:
        if not done.done():  # a request whose client went away may have been cancelled
            done.set_result(None)


WRITER = web.AppKey("writer", GroupWriter)
CACHE = web.AppKey("cache", dict)


def _error(status: int, code: str, message: str, details: list[dict[str, object]]
           ) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(body=_encode(body), status=status, content_type="application/json")


async def post_events(request: web.Request) -> web.Response:
    body = await request.read()
    ndjson = request.content_type in NDJSON_TYPES
    try:
        events = decode_events(body, ndjson=ndjson)
    except InvalidEvents as e:
        return _error(400, "invalid_events", str(e), e.details)
    except (UnicodeDecodeError, RecursionError) as e:  # as runlake: bad input all the same
        return _error(400, "invalid_events", f"invalid events: {e}", [])
    first, last, durable = request.app[WRITER].append(body, len(events))
    await asyncio.shield(durable)  # as runlake: a gone client does not cancel the write
    return web.Response(body=_encode({"accepted": len(events), "first_seq": first,
                                      "last_seq": last}),
                        status=202, content_type="application/json")


async def put_cache(request: web.Request) -> web.Response:
    request.app[CACHE][request.match_info["key"]] = await request.read()
    return web.Response(status=204)


async def get_cache(request: web.Request) -> web.Response:
    body = request.app[CACHE].get(request.match_info["key"])
    if body is None:
        return _error(404, "not_found", f"no cached body {request.match_info['key']!r}", [])
    return web.Response(body=body, content_type="application/json")


async def stats(request: web.Request) -> web.Response:
    w = request.app[WRITER]
    return web.Response(body=_encode({"appends": w.appends, "syncs": w.syncs}),
                        content_type="application/json")


def make_app(path: Path) -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)  # runlake's body limit is larger
    app[CACHE] = {}

    async def writer(app: web.Application) -> AsyncIterator[None]:
        app[WRITER] = GroupWriter(path, asyncio.get_running_loop())
        yield
        app[WRITER].close()

    app.cleanup_ctx.append(writer)
    app.router.add_post("/api/events", post_events)
    app.router.add_put("/cache/{key}", put_cache)
    app.router.add_get("/cache/{key}", get_cache)
    app.router.add_get("/stats", stats)
    return app


async def serve(path: Path, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"limit listening on http://{host}:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", type=Path, required=True, help="where the raw bodies are appended")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    asyncio.run(serve(args.file, args.host, args.port))


if __name__ == "__main__":
    main()
