"""Request limits that protect the server itself (DESIGN §6, docs/limits.md).

Two middlewares, both inside the error middleware so their refusals get the
error envelope:

- `concurrency_limit`: at most `max_concurrent_requests` requests in flight;
  more get 503 with `Retry-After` at once instead of queueing. One client (its
  API key when it sends a valid one, else its address) may hold at most
  `max_requests_per_client` of them (default half): more get 429, so a client
  trickling bodies cannot take every slot from the others. Routes marked
  `always_admitted` in the route table (the operations routes: `/healthz`,
  `/readyz`, `/metrics`, `/api/openapi.json`) are exempt, so monitoring still
  sees a server at its limit.
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

from runlake.api.auth import presented_key
from runlake.api.protocol import count_refusal, reason
from runlake.api.state import AUTH, HTTP_METRICS, SETTINGS, matched_route, routed
from runlake.errors import BadRequest, Overloaded, PayloadTooLarge, RequestTimeout, RunlakeError
from runlake.settings import Settings

RETRY_AFTER_S = 1


class ClientOverShare(RunlakeError):
    """One client has `max_requests_per_client` requests in flight already."""

    status = 429
    code = "too_many_requests"
    fault = False  # the client is told to retry; counted, not logged as a failure


def client_share(settings: Settings) -> int:
    """The most requests one client may have in flight."""
    return settings.max_requests_per_client or max(1, settings.max_concurrent_requests // 2)


def client_of(request: web.Request) -> str:
    """Who the request is from, for its share: the key's name when it presents a valid
    key (clients behind one proxy or NAT differ by key), else its address. An unknown
    key counts as its address, so made-up keys cannot buy more shares."""
    secret = presented_key(request)
    if secret is not None and (key := request.app[AUTH].keyring.find(secret)) is not None:
        return f"key {key.name!r}"
    return f"address {request.remote}"


def concurrency_limit(limit: int) -> Middleware:
    """A middleware admitting at most `limit` requests at a time (the rest get 503),
    and at most `client_share` of them from one client (the rest get 429)."""
    by_client: dict[str, int] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = matched_route(request)
        if route is not None and route.always_admitted:
            return await handler(request)
        metrics = request.app[HTTP_METRICS]
        client = client_of(request)
        held = by_client.get(client, 0)
        retry = {hdrs.RETRY_AFTER: str(RETRY_AFTER_S)}
        if held >= client_share(request.app[SETTINGS]):
            metrics.refused["client_share"] += 1
            raise ClientOverShare(
                f"{client} already has {held} requests in flight, its share "
                f"(max_requests_per_client) of the server's {limit}; "
                f"retry in {RETRY_AFTER_S} s", headers=retry)
        if metrics.in_flight >= limit:
            metrics.refused["overloaded"] += 1
            raise Overloaded(
                f"the server is handling its limit of {limit} concurrent requests; "
                f"retry in {RETRY_AFTER_S} s", headers=retry)
        metrics.in_flight += 1
        by_client[client] = held + 1
        try:
            return await handler(request)
        finally:
            metrics.in_flight -= 1
            if (left := by_client[client] - 1) > 0:
                by_client[client] = left
            else:
                del by_client[client]  # the map holds only clients with requests in flight

    return middleware


@web.middleware
async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the body of a routed request within `read_timeout_s`, else answer 408;
    a body over the route's limit gets 413, one aiohttp cannot decode (a bad
    Content-Encoding) 400, counted and logged as aiohttp's other refusals."""
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
        except web.RequestPayloadError as e:  # e.g. a Content-Encoding that does not decode
            count_refusal(request.app[HTTP_METRICS], request.remote, 400, e)
            raise BadRequest(f"the request body could not be read: {reason(e)}",
                             close=True) from None
        if len(body) > limit:  # a chunked body, read up to the server's limit
            raise _too_large(len(body), limit)
    return await handler(request)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is {size} bytes; the limit is {limit}")
