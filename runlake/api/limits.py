"""Request limits that protect the server itself (DESIGN §6, docs/limits.md).

Two middlewares, both inside the error middleware so their refusals get the
error envelope:

- `concurrency_limit`: at most `max_concurrent_requests` requests in flight;
  more get 503 with `Retry-After` at once instead of queueing (routes marked
  `always_admitted`, `/healthz`, are exempt, so a busy server still reads as alive).
- `read_body_in_time`: the whole request body must arrive within
  `read_timeout_s` of the headers, or the client gets 408 and the connection is
  closed. aiohttp has no body-read timeout of its own: a client trickling a byte
  at a time would hold its request open for ever (slowloris). The body is read
  here, before the handler, under one deadline for the whole body (a deadline
  per read would let a trickle live for ever); aiohttp keeps it, so the
  handler's own `request.read()` returns it at once.

Slow *headers* are aiohttp's side: a connection whose request headers are not
complete is idle for aiohttp, and `keepalive_timeout` (which `make_app` sets to
`read_timeout_s`) closes it, counted from the connection or its previous response.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from runlake.api.state import SETTINGS, matched_route, routed
from runlake.errors import Overloaded, PayloadTooLarge, RequestTimeout

RETRY_AFTER_S = 1


def concurrency_limit(limit: int) -> Middleware:
    """A middleware admitting at most `limit` requests at a time (the rest get 503)."""
    in_flight = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        route = matched_route(request)
        if route is not None and route.always_admitted:
            return await handler(request)
        if in_flight >= limit:
            raise Overloaded(
                f"the server is handling its limit of {limit} concurrent requests; "
                f"retry in {RETRY_AFTER_S} s",
                headers={hdrs.RETRY_AFTER: str(RETRY_AFTER_S)},
            )
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return middleware


@web.middleware
async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body of a routed request within `read_timeout_s`, else answer 408;
    a body over the route's limit gets 413."""
    if request.body_exists and routed(request):
        settings = request.app[SETTINGS]
        own = route.max_body_bytes if (route := matched_route(request)) is not None else None
        limit = settings.max_body_bytes if own is None else min(own, settings.max_body_bytes)
        declared = request.content_length
        if declared is not None and declared > limit:
            # Refuse before reading; aiohttp's client_max_size covers chunked bodies.
            raise _too_large(declared, limit)
        try:
            async with asyncio.timeout(settings.read_timeout_s):
                body = await request.read()
        except TimeoutError:
            # The rest of the body may still be on its way: this connection cannot
            # carry another request.
            raise RequestTimeout(
                f"the request body did not arrive within {settings.read_timeout_s:g} s "
                "(read_timeout_s)", close=True) from None
        if len(body) > limit:  # a chunked body, read up to the server's limit
            raise _too_large(len(body), limit)
    return await handler(request)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")
