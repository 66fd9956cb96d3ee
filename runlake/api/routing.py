"""Route declarations: what a route is. Imports no handler, so the route table
(routes.py), the middlewares, auth and the OpenAPI builder share these types
without an import cycle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from runlake.api.params import NoQuery

# A handler gets the request and its parsed query Struct (`Route.query`).
Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
# Who may call a route (docs/security.md): open to all, or the key role it needs;
# admin keys may call every route.
RouteRole = Literal["open", "ingest", "read", "admin"]


@dataclass(frozen=True)
class Body:
    """A request body: a description and a msgspec type per accepted media type;
    `required=False` when the route also works without one."""

    description: str
    media: tuple[tuple[str, Any], ...]
    required: bool = True


@dataclass(frozen=True)
class Route:
    """One route. `query` is the Struct its query string parses into (params.py);
    `response` is the msgspec type of the success body (None: plain text in
    `media_type`); `same_body` lists other statuses with that body; `errors` lists
    statuses answered with the error envelope. `role` is the one place a route's
    access is decided; left out, it is the strictest. `max_body_bytes` is a tighter
    body limit than the server's, enforced (413) before a declared body is read; an
    `always_admitted` route is answered even when the server is at its limit of
    concurrent requests."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    status: int = 200
    response: Any = None
    media_type: str = "application/json"
    other_media: tuple[str, ...] = ()  # the success body in other media types too
    body: Body | None = None
    query: type[NoQuery] = NoQuery
    same_body: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()
    role: RouteRole = "admin"
    max_body_bytes: int | None = None
    always_admitted: bool = False
    waits_for_min_seq: bool = True  # False: the handler decides (an events export needs no fold)
    response_description: str | None = None  # OpenAPI's for the success body; None: the phrase
