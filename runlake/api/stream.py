"""Live streams of the log (docs/stream.md): `GET /api/stream` (Server-Sent Events)
and `GET /api/stream/ws` (WebSocket), the same messages and filters.

A stream starts after a position (`after=<seq>`, the `Last-Event-ID` header, or the
log's end), catches up from the log (segments and tail, off the loop), says
`caught_up`, then turns live: the broadcaster (api/broadcast.py) offers it each
durable event once and each fold commit. Its own task writes its queue to the
client, heartbeats when idle, and ends with its resume position on shutdown, a
revoked key, or (`too_slow`) a queue the client let overflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import WSMsgType, hdrs, web
from msgspec import Meta

from runlake.api.access import API_KEY
from runlake.api.auth import forbidden, presented_key, visible_components
from runlake.api.broadcast import (
    BROADCASTER,
    BUSY_ROWS,
    Chunk,
    Folded,
    Follower,
    StreamFilter,
    encode_range,
)
from runlake.api.ingest_first import IngestFirst
from runlake.api.params import NoQuery, Text, bad_param
from runlake.api.state import AUTH, EVENT_LOG, SETTINGS
from runlake.errors import BadRequest, Overloaded
from runlake.events import EVENT_TYPES
from runlake.events.schema import SLUG_PATTERN

log = logging.getLogger("runlake.stream")

CATCH_UP_ROWS = 16_384  # events read from the log in one executor step while catching up
SEND_SLICE = 256  # messages sent (and timed) at once
KEY_CHECK_S = 1.0  # how often a stream re-checks its key (a revoked one closes it)
RETRY_AFTER_S = 1  # the 503's Retry-After is this plus up to RETRY_AFTER_JITTER_S
RETRY_AFTER_JITTER_S = 4
MAX_COMPONENTS = 50
MAX_TYPES = len(EVENT_TYPES)

EventTypeName = Literal[tuple(c.__struct_config__.tag for c in EVENT_TYPES)]  # type: ignore[valid-type]
Component = Annotated[str, Meta(pattern=SLUG_PATTERN)]


class StreamQuery(NoQuery):
    component: Annotated[list[Component], Meta(
        max_length=MAX_COMPONENTS, description="only these components (repeatable); "
        "intersected with the key's own")] = []
    run_id: Annotated[Text, Meta(description="only events of this run")] | None = None
    type: Annotated[list[EventTypeName], Meta(
        max_length=MAX_TYPES, description="only these event types (repeatable)")] = []
    batch_id: Annotated[Text, Meta(description="only events carrying this batch_id")] | None = None
    after: Annotated[str, Meta(
        pattern="^(end|[0-9]{1,18})$",
        description="start after this seq (exclusive), or `end` for live events only; the "
        "Last-Event-ID header wins over it; default: live only")] | None = None
    until: Annotated[Literal["caught_up"], Meta(
        description="end the stream once caught up, instead of following")] | None = None


# -- messages ---------------------------------------------------------------------

_json = msgspec.json.Encoder()


class Sink:
    """How a stream's messages reach its client: SSE frames or WebSocket messages."""

    async def send(self, messages: list[Any]) -> None:
        raise NotImplementedError

    def events(self, chunk: Chunk) -> list[Any]:
        raise NotImplementedError

    def control(self, kind: str, body: dict[str, Any], position: int | None = None) -> Any:
        raise NotImplementedError

    async def finish(self) -> None:
        raise NotImplementedError


class SseSink(Sink):
    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    async def send(self, messages: list[bytes]) -> None:
        if messages:
            await self.response.write(b"".join(messages))  # waits while the client is behind

    def events(self, chunk: Chunk) -> list[bytes]:
        return [chunk.sse()]

    def control(self, kind: str, body: dict[str, Any], position: int | None = None) -> bytes:
        head = b"" if position is None else b"id: %d\n" % position
        return head + b"event: %s\ndata: %s\n\n" % (kind.encode(), _json.encode(
            {"type": kind, **body}))

    async def finish(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.response.write_eof()


class WsSink(Sink):
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, messages: list[str]) -> None:
        for message in messages:
            await self.ws.send_str(message)  # waits while the client is behind

    def events(self, chunk: Chunk) -> list[str]:
        return chunk.ws()

    def control(self, kind: str, body: dict[str, Any], position: int | None = None) -> str:
        return _json.encode({"type": kind, **body}).decode()

    async def finish(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.close()


# -- opening ----------------------------------------------------------------------


def stream_filter(request: web.Request, query: StreamQuery) -> StreamFilter:
    """The query's filter, its components intersected with the key's (403 when none
    of those asked for are the key's)."""
    components: frozenset[str] | None = frozenset(query.component) or None
    visible = visible_components(request)
    if visible is not None:
        allowed = frozenset(visible)
        if components is not None and not components & allowed:
            raise forbidden(request, f"key {request[API_KEY].name!r} may not access "
                                     f"component(s) {', '.join(sorted(components))}")
        components = allowed if components is None else components & allowed
    return StreamFilter(components, query.run_id, frozenset(query.type) or None, query.batch_id)


def start_position(request: web.Request, query: StreamQuery, published: int) -> int:
    """The seq the stream starts after: Last-Event-ID, else `after`, else the end."""
    last_id = request.headers.get("Last-Event-ID")
    if last_id is not None and last_id.strip():
        raw, name = last_id.strip(), "Last-Event-ID"
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise BadRequest(f"header Last-Event-ID {raw[:40]!r} must be a seq (ASCII digits)",
                             [{"header": name, "message": "must be a seq (ASCII digits)"}])
    elif query.after is not None and query.after != "end":
        raw, name = query.after, "after"
    else:
        return published
    after = int(raw)
    last = request.app[EVENT_LOG].last_seq
    if after > last:
        message = f"is {after}, past the log's last seq {last}"
        if name == "after":
            raise bad_param("after", message)
        raise BadRequest(f"header Last-Event-ID {message}",
                         [{"header": name, "message": message}])
    return after


def _admit(request: web.Request) -> None:
    hub = request.app[BROADCASTER]
    if len(hub.streams) >= hub.max_streams:
        hub.refused += 1
        retry = RETRY_AFTER_S + random.randint(0, RETRY_AFTER_JITTER_S)
        raise Overloaded(f"the server has its limit of {hub.max_streams} live streams open "
                         f"(max_streams); retry in {retry} s",
                         headers={hdrs.RETRY_AFTER: str(retry)})


def _open(request: web.Request, query: StreamQuery) -> tuple[Follower, int]:
    """Check everything that can be refused, before the response starts."""
    stream = stream_filter(request, query)
    hub = request.app[BROADCASTER]
    after = start_position(request, query, hub.published)
    _admit(request)
    follower = Follower(stream, request.app[SETTINGS].stream_queue, after)
    hub.streams.add(follower)
    return follower, after


# -- the handlers -----------------------------------------------------------------

SSE_HEADERS = {
    hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
    hdrs.CACHE_CONTROL: "no-cache, no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each message on at once
    "X-Content-Type-Options": "nosniff",
}


async def sse_stream(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    follower, after = _open(request, query)
    hub = request.app[BROADCASTER]
    try:
        response = web.StreamResponse(headers=SSE_HEADERS)
        # No compression: a compressor buffers, and messages must go out as written.
        await response.prepare(request)
        sink = SseSink(response)
        retry = request.app[SETTINGS].stream_retry_ms
        # Jittered, so a restart does not bring every client back in the same second.
        await response.write(b"retry: %d\n\n" % random.randint(retry // 2, retry * 3 // 2))
        await follow(request, query, follower, after, sink)
        return response
    finally:
        hub.forget(follower)


async def ws_stream(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=False)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this route needs a WebSocket upgrade (GET with Upgrade: websocket); "
                         "for Server-Sent Events use /api/stream",
                         [{"header": "Upgrade", "message": "must be websocket"}])
    follower, after = _open(request, query)
    hub = request.app[BROADCASTER]
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(_read_until_closed(ws, follower))
        try:
            await follow(request, query, follower, after, WsSink(ws))
        finally:
            reader.cancel()
            # Collect it (its end or error is not left unretrieved) without swallowing
            # a cancellation of this handler itself.
            await asyncio.gather(reader, return_exceptions=True)
        return ws
    finally:
        hub.forget(follower)


async def _read_until_closed(ws: web.WebSocketResponse, follower: Follower) -> None:
    """Clients send nothing; reading notices their close frame."""
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
    follower.close("client")


async def follow(request: web.Request, query: StreamQuery, follower: Follower, after: int,
                 sink: Sink) -> None:
    """Catch up, say caught_up, then follow until the stream must end."""
    try:
        if await _catch_up(request, follower, after, sink) and query.until is None:
            await _live(request, follower, sink)
    except ConnectionError:  # the client went away; its next request resumes
        return
    except Exception:  # the response has begun: no error envelope can follow
        log.exception("stream to %s failed; closing it", request.remote)
        if request.transport is not None:
            request.transport.close()
        return
    await sink.finish()


async def _catch_up(request: web.Request, follower: Follower, after: int, sink: Sink) -> bool:
    hub = request.app[BROADCASTER]
    share = hub.share
    position = after
    # To the log's end, not the pump's: a client that was just acknowledged an
    # append sees it before caught_up. The pump's offers up to here are then skipped.
    while position < hub.log.last_seq and not follower.closing:
        if not share.may_run():  # ingest first (api/ingest_first.py)
            await share.turn(follower.wake, lambda: bool(follower.closing))
            continue
        end = min(hub.log.last_seq, position + (BUSY_ROWS if share.busy
                                                 else CATCH_UP_ROWS))
        async with hub.catch_up_slots:
            shown = await share.call(encode_range, hub.log, position + 1, end,
                                     follower.filter)
        if len(shown):
            await _send(share, sink, sink.events(shown))
        position = follower.written = end
    if follower.closing:
        await _closing(follower, sink)
        return False
    hub.follow(follower)  # on the loop, right after the check: nothing missed or repeated
    await sink.send([sink.control("caught_up", {"seq": position}, position)])
    return True


async def _live(request: web.Request, follower: Follower, sink: Sink) -> None:
    settings = request.app[SETTINGS]
    hub = request.app[BROADCASTER]
    check_key = _key_checker(request)
    beat_at = time.monotonic() + settings.stream_heartbeat_s
    key_at = time.monotonic() + KEY_CHECK_S
    while True:
        if follower.overflowed:
            hub.too_slow += 1
            log.info("stream to %s too slow: dropped at seq %d", request.remote, follower.written)
            await sink.send([sink.control("too_slow", {"resume": follower.written})])
            return
        if follower.closing:
            await _closing(follower, sink)
            return
        if follower.queue and hub.share.may_run():
            seen, batch = follower.seen, follower.take()
            out: list[Any] = []
            with hub.share.metered():
                for m in batch:
                    if isinstance(m, Chunk):
                        out += sink.events(m)
                    else:
                        out.append(_folded(sink, m))
            await _send(hub.share, sink, out)
            # Every match up to seen was in the batch, now in the connection's buffer
            # even when the send waited for the client and the queue overflowed meanwhile.
            follower.written = seen
            continue
        now = time.monotonic()
        if now >= beat_at:
            if not follower.queue:  # all of it is out (a queue held back is not)
                follower.written = follower.seen
            await sink.send([sink.control("heartbeat", {"seq": follower.written},
                                          follower.written)])
            beat_at = now + settings.stream_heartbeat_s
            continue
        if now >= key_at:
            key_at = now + KEY_CHECK_S
            if check_key is not None and not await check_key():
                follower.close("key_revoked")
            continue
        follower.wake.clear()
        if follower.queue:  # held back: ingest first (api/ingest_first.py)
            follower.held = True
            hub.share.park(follower.wake)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(follower.wake.wait(), min(beat_at, key_at) - now)
        finally:
            follower.held = False


async def _send(share: IngestFirst, sink: Sink, messages: list[Any]) -> None:
    """Send, counting the server's time for it against the fan-out's share; in slices,
    so the writes after a wait for the client's drain are counted too."""
    for at in range(0, len(messages), SEND_SLICE):
        await share.timed(sink.send(messages[at:at + SEND_SLICE]))


def _folded(sink: Sink, message: Folded) -> Any:
    runs = [{"component": c, "run_id": r, "status": s} for c, r, s, _ in message.runs]
    return sink.control("folded", {"seq": message.seq, "runs": runs})


async def _closing(follower: Follower, sink: Sink) -> None:
    if not follower.queue:
        follower.written = max(follower.written, follower.seen)
    await sink.send([sink.control("closed", {"reason": follower.closing,
                                             "resume": follower.written})])


def _key_checker(request: web.Request) -> Callable[[], Awaitable[bool]] | None:
    """A check that the stream's key is still valid; None when no key opened it."""
    secret = presented_key(request)
    if request.get(API_KEY) is None or secret is None:
        return None
    keyring = request.app[AUTH].keyring

    async def valid() -> bool:
        await keyring.refresh()
        return keyring.find(secret) is not None

    return valid
