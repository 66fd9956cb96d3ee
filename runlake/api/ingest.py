"""`POST /api/events` and `POST /api/{component}/events`: validate, append, acknowledge.

All-or-nothing per request (DESIGN §4): the whole body is decoded and checked
before anything is appended, and the 202 is sent only once the group commit
holding the events has been fsynced.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from aiohttp import hdrs, web

from runlake.api.auth import API_KEY, forbid_event, refused_event
from runlake.api.keys import ApiKey
from runlake.api.params import NoQuery
from runlake.api.responses import Accepted, json_response
from runlake.api.state import EVENT_LOG, SETTINGS
from runlake.errors import InvalidEvents, UnsupportedMediaType
from runlake.events import Event, decode_events

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})
# Decoding runs at ~1.5 M events/s: below this a body decodes in well under a
# millisecond and a thread hop would cost more than it saves.
INLINE_DECODE_BYTES = 64 * 1024


async def post_events(request: web.Request, query: NoQuery) -> web.Response:
    return await _ingest(request, component=None)


async def post_component_events(request: web.Request, query: NoQuery) -> web.Response:
    return await _ingest(request, component=request.match_info["component"])


async def _ingest(request: web.Request, component: str | None) -> web.Response:
    ndjson = _is_ndjson(request)
    settings = request.app[SETTINGS]
    body = await request.read()  # read (and size-checked) by the limits middleware already
    decode = partial(_decode_and_check, request.get(API_KEY), body, ndjson=ndjson,
                     component=component, max_events=settings.max_events)
    try:
        if len(body) > INLINE_DECODE_BYTES:
            events, refused = await asyncio.get_running_loop().run_in_executor(None, decode)
        else:
            events, refused = decode()
    except (UnicodeDecodeError, RecursionError) as e:
        # msgspec raises these rather than DecodeError for bad UTF-8 in a `type` tag
        # and for very deep nesting; they are bad input all the same.
        problem = "is not valid UTF-8" if isinstance(e, UnicodeDecodeError) else "nests too deeply"
        detail = {"line" if ndjson else "event": None, "field": None, "message": f"{problem}: {e}"}
        raise InvalidEvents(f"invalid events: the body {problem}", [detail]) from e
    if refused is not None:  # another component's event, or a non-admin delete
        raise forbid_event(request, refused)
    # Shielded: a cancelled handler (client gone, shutdown timeout) must not cancel
    # the log's future, whose events are committed regardless.
    first, last = await asyncio.shield(request.app[EVENT_LOG].append_async(events))
    return json_response(Accepted(len(events), first, last), status=202)


def _decode_and_check(key: ApiKey | None, body: bytes, **decode: Any
                      ) -> tuple[list[Event], dict[str, object] | None]:
    """The body's events, and the first one `key` may not append (if any)."""
    events = decode_events(body, **decode)
    return events, refused_event(key, events)


def _is_ndjson(request: web.Request) -> bool:
    """NDJSON or JSON by Content-Type; a missing Content-Type means JSON."""
    if hdrs.CONTENT_TYPE not in request.headers:
        return False
    media_type = request.content_type
    if media_type not in JSON_TYPES and media_type not in NDJSON_TYPES:
        accepted = ", ".join(sorted(JSON_TYPES | NDJSON_TYPES))
        raise UnsupportedMediaType(f"Content-Type {media_type!r} is not accepted; use {accepted}")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not accepted; send UTF-8")
    return media_type in NDJSON_TYPES
