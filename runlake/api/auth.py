"""Who is asking: API keys, roles and component limits (DESIGN §6, docs/security.md).

`authenticate` runs before every handler. A route's required role comes from its
`Route.role` in the route table and nowhere else: `open` routes skip auth; an
`ingest` route takes ingest or admin keys, a `read` route read or admin keys, an
`admin` route admin keys only. A key limited to components gets 403 for any
`{component}` in the URL outside its list; handlers that span components ask
`visible_components(request)` and show only those.

Auth is off only while no key exists and the server is bound to loopback; on any
other bind every request needs a key, even when the last one was revoked.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from runlake.api.access import API_KEY, CSRF_COOKIE, CSRF_HEADER, KEY_COOKIE, KEY_HEADER
from runlake.api.keys import ApiKey
from runlake.api.routing import RouteRole
from runlake.api.state import AUTH, PAGE_ROUTES, matched_route, routed
from runlake.errors import Forbidden, Unauthorized
from runlake.events import Event
from runlake.events.schema import DeleteEvent

HOW_TO_SEND = f"send it as {KEY_HEADER}: <key> or Authorization: Bearer <key>"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def route_role(request: web.Request) -> RouteRole | None:
    """The role the matched route needs; None when no route matched (404/405).

    A route registered outside the table needs admin: unknown means strictest.
    """
    if (route := matched_route(request)) is not None:
        return route.role
    if request.match_info.route in request.app.get(PAGE_ROUTES, ()):
        return "open"  # dashboard pages hold no data: each reads it from the API
    return "admin" if routed(request) else None


def visible_components(request: web.Request) -> list[str] | None:
    """The components the request's key may see, sorted; None when it may see them all."""
    key = request.get(API_KEY)
    if key is None or not key.components:
        return None
    return sorted(key.components)


def presented_key(request: web.Request) -> str | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer`, else from the
    dashboard's sign-in cookie."""
    key = header_key(request)
    return key if key is not None else cookie_key(request)


def header_key(request: web.Request) -> str | None:
    key = request.headers.get(KEY_HEADER)
    if key is None:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
        key = token if scheme.lower() == "bearer" else None
    key = key.strip() if key is not None else None
    return key or None


def cookie_key(request: web.Request) -> str | None:
    return request.cookies.get(KEY_COOKIE, "").strip() or None


def same_origin(request: web.Request) -> bool:
    """The request comes from one of this server's pages: its Origin, when the browser
    sends one, names this host. A WebSocket has no CORS and a same-*site* page on
    another port or subdomain still gets a SameSite=Strict cookie: this check is what
    keeps such a page from following the log with a signed-in user's key."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def csrf_ok(request: web.Request, token: str | None) -> bool:
    """Double submit: `token` (a header or form field) equals the CSRF cookie. A
    cross-site page can make the browser send the cookie but cannot read it."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    # As bytes: compare_digest raises on str holding non-ASCII (a header may).
    return bool(cookie) and token is not None and hmac.compare_digest(
        cookie.encode(errors="surrogateescape"), token.encode(errors="surrogateescape"))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    auth = request.app[AUTH]
    role = route_role(request)
    if role == "open":
        return await handler(request)
    await auth.keyring.refresh()
    if not auth.enabled:
        return await handler(request)
    # Unmatched routes need a key too: anonymous clients learn nothing of the URL map.
    secret = header_key(request)
    if secret is None and (secret := cookie_key(request)) is not None:
        if not same_origin(request):
            raise forbidden(request, "a request signed in by cookie must come from this "
                                     "server's own pages (its Origin is another site)")
        if request.method not in SAFE_METHODS \
                and not csrf_ok(request, request.headers.get(CSRF_HEADER)):
            # SameSite=Strict already keeps the cookie off cross-site requests; this is
            # the second lock, for browsers or proxies that do not honour it.
            raise forbidden(request, f"a request signed in by cookie needs the "
                                     f"{CSRF_HEADER} header, equal to the {CSRF_COOKIE} cookie")
    if secret is None:
        raise _unauthorized(request, "missing", f"this server needs an API key: {HOW_TO_SEND}")
    key = auth.keyring.find(secret)
    if key is None:
        raise _unauthorized(request, "unknown", "the API key is not valid (unknown or revoked)")
    request[API_KEY] = key
    if role is not None and not key.may(role):
        raise forbidden(request, f"key {key.name!r} has role {key.role!r}; "
                                 f"{request.method} {_canonical(request)} needs {role!r}")
    component = request.match_info.get("component")
    if component is not None and not key.may_access(component):
        raise forbidden(request, f"key {key.name!r} may not access component {component!r}")
    return await handler(request)


def refused_event(key: ApiKey | None, events: Sequence[Event]) -> dict[str, object] | None:
    """The first event `key` may not append, as an error detail; None if it may append
    them all. Each event's component must be one of the key's (checked over every
    event first), and deletes need admin, as the DELETE routes do. Pure, so it runs
    with the decode, off the event loop."""
    if key is None:
        return None
    if key.components:
        bad = next(((i, ev) for i, ev in enumerate(events)
                    if not key.may_access(ev.component)), None)
        if bad is not None:
            return {"event": bad[0], "field": "component",
                    "message": f"key {key.name!r} may not append to component "
                               f"{bad[1].component!r}"}
    if key.role != "admin":
        i = next((i for i, ev in enumerate(events) if ev.__class__ is DeleteEvent), None)
        if i is not None:
            return {"event": i, "field": "type",
                    "message": f"key {key.name!r} has role {key.role!r}; "
                               "delete events need 'admin'"}
    return None


def forbid_event(request: web.Request, refused: dict[str, object]) -> Forbidden:
    """The 403 for the event `refused_event` found."""
    return forbidden(request, f"event {refused['event']}: {refused['message']}", [refused])


def forbidden(request: web.Request, message: str,
              details: list[dict[str, object]] | None = None) -> Forbidden:
    request.app[AUTH].failed(request, "forbidden", message)
    return Forbidden(message, details)


def _unauthorized(request: web.Request, reason: str, message: str) -> Unauthorized:
    request.app[AUTH].failed(request, reason, message)
    # RFC 9110: a 401 names the scheme the client should use.
    return Unauthorized(message, headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="runlake"'})


def _canonical(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )
