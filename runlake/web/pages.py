"""The dashboard's pages (docs/dashboard.md): one HTML shell per page, filled in the
browser by `static/app.js` from the public API, so everything a page shows is one
API call away for a script.

Pages are `open` routes: they hold no data. When auth is on, a page asked for
without a valid sign-in cookie redirects to the sign-in page; every API call the
page makes is checked again by the API's own auth (api/auth.py).
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import msgspec
from aiohttp import web

from runlake.api.access import CSRF_COOKIE, KEY_COOKIE
from runlake.api.auth import cookie_key, csrf_ok, same_origin
from runlake.api.keys import ApiKey
from runlake.api.state import AUTH, PAGE_ROUTES, SETTINGS

HERE = Path(__file__).parent
STATIC = HERE / "static"
SHELL = (HERE / "templates" / "shell.html").read_text()
SIGNIN = (HERE / "templates" / "signin.html").read_text()
COOKIE_MAX_AGE = 7 * 24 * 3600  # a week; signing out or revoking the key ends it sooner
# Routes the pages use only where the server has them (issues 17, 18, 20 add them):
# the shell lists those present, so the script neither fetches OpenAPI nor probes (a
# probe's 404 would show in the browser's console).
OPTIONAL_ROUTES = ("/api/stream", "/api/{component}/db/facets", "/api/{component}/db/tests",
                   "/api/{component}/db/test/{name}")


@dataclass(frozen=True)
class Page:
    """One page: its URL (aiohttp pattern), the name app.js renders it by, its title."""

    path: str
    name: str
    title: str
    in_nav: bool = True


PAGES: tuple[Page, ...] = (
    Page("/", "home", "Home"),
    Page("/runs", "runs", "Runs"),
    Page("/run/{component}/{run_id}", "run", "Run", in_nav=False),
    Page("/models", "models", "Models × hardware"),
    Page("/model/{model:.+}", "model", "Model", in_nav=False),
    Page("/performance", "performance", "Performance"),
    Page("/batches", "batches", "Batches"),
    Page("/search", "search", "Search"),
    Page("/compare", "compare", "Compare"),
    Page("/tests", "tests", "Tests"),
    Page("/test/{component}/{name:.+}", "test", "Test", in_nav=False),
)


class Session(msgspec.Struct):
    """What the page's script needs to know about who is signed in (never the key)."""

    auth: bool
    name: str | None = None
    role: str | None = None
    components: list[str] | None = None
    csrf: str | None = None
    routes: list[str] = []  # the OPTIONAL_ROUTES this server has


def add_pages(app: web.Application) -> None:
    """Register every page, sign-in/out and the static files; mark them open for auth."""
    routes = [app.router.add_get(page.path, _page_handler(page)) for page in PAGES]
    routes += [app.router.add_get("/signin", signin_page),
               app.router.add_post("/signin", sign_in),
               app.router.add_post("/signout", sign_out)]
    static = app.router.add_static("/static/", STATIC, append_version=False)
    # Every route of those resources: add_get's implicit HEAD routes are pages too.
    resources = {r.resource for r in routes if r.resource is not None} | {static}
    app[PAGE_ROUTES] = frozenset(route for res in resources for route in res)


def signed_in_key(request: web.Request) -> ApiKey | None:
    secret = cookie_key(request)
    return request.app[AUTH].keyring.find(secret) if secret is not None else None


def _page_handler(page: Page) -> web.Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        auth = request.app[AUTH]
        await auth.keyring.refresh()
        session = Session(auth=auth.enabled)
        if auth.enabled:
            key = signed_in_key(request)
            if key is None:
                raise web.HTTPSeeOther("/signin?next=" + quote(request.path_qs, safe=""))
            session = Session(True, key.name, key.role,
                              sorted(key.components) if key.components else None,
                              request.cookies.get(CSRF_COOKIE))
        session.routes = optional_routes(request.app)
        return _html(_render(page, session))
    return handle


def optional_routes(app: web.Application) -> list[str]:
    served = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    return [path for path in OPTIONAL_ROUTES if path in served]


def _render(page: Page, session: Session) -> str:
    nav = "\n".join(
        f'<li><a href="{p.path}"{" aria-current=page" if p is page else ""}>'
        f"{html.escape(p.title)}</a></li>" for p in PAGES if p.in_nav)
    # </ cannot end the script element early: msgspec escapes no "<", so do it here.
    data = msgspec.json.encode(session).decode().replace("<", "\\u003c")
    account = ""
    if session.auth:
        who, role, csrf = (html.escape(v or "") for v in (session.name, session.role,
                                                           session.csrf))
        account = (f'<form method="post" action="/signout" class="account">'
                   f'<span>{who} ({role})</span>'
                   f'<input type="hidden" name="csrf" value="{csrf}">'
                   f'<button type="submit">Sign out</button></form>')
    return (SHELL.replace("{{title}}", html.escape(page.title))
            .replace("{{page}}", page.name).replace("{{nav}}", nav)
            .replace("{{account}}", account).replace("{{session}}", data))


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "img-src 'self' data:; frame-ancestors 'none'",
                                 "X-Content-Type-Options": "nosniff"})


def _signin_html(next_url: str, message: str = "", status: int = 200) -> web.Response:
    error = f'<p role="alert" class="error">{html.escape(message)}</p>' if message else ""
    return _html(SIGNIN.replace("{{next}}", html.escape(next_url))
                 .replace("{{error}}", error), status)


def _local(next_url: str) -> str:
    """`next_url` if it is a path on this server, else `/` (no open redirect)."""
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or not next_url.startswith("/") or next_url.startswith("//") \
            or "\\" in next_url:
        return "/"
    return next_url


async def signin_page(request: web.Request) -> web.StreamResponse:
    next_url = _local(request.query.get("next", "/"))
    auth = request.app[AUTH]
    await auth.keyring.refresh()
    if not auth.enabled:
        raise web.HTTPSeeOther(next_url)  # nothing to sign in to
    return _signin_html(next_url)


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    next_url = _local(str(form.get("next", "/")))
    auth = request.app[AUTH]
    await auth.keyring.refresh()
    if not auth.enabled:
        raise web.HTTPSeeOther(next_url)
    if not same_origin(request):
        return _signin_html(next_url, "sign-in must come from this server's own page", 403)
    secret = str(form.get("key", "")).strip()
    if not secret:
        return _signin_html(next_url, "enter an API key", 400)
    if auth.keyring.find(secret) is None:
        auth.failed(request, "unknown", "dashboard sign-in with an unknown or revoked key")
        return _signin_html(next_url, "that API key is not valid (unknown or revoked)", 401)
    response = _redirect(next_url)
    common = {"path": "/", "samesite": "Strict", "secure": cookie_secure(request),
              "max_age": COOKIE_MAX_AGE}
    response.set_cookie(KEY_COOKIE, secret, httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), **common)
    return response


def cookie_secure(request: web.Request) -> bool:
    """The sign-in cookies' `Secure` flag. `request.secure` alone is false behind a
    TLS-terminating proxy (the proxy speaks plain HTTP to us), and trusting a client's
    `X-Forwarded-Proto` would need a list of proxy addresses; the operator who put the
    proxy there says `always` instead (docs/security.md "Dashboard")."""
    mode = request.app[SETTINGS].cookie_secure
    return request.secure if mode == "auto" else mode == "always"


async def sign_out(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if cookie_key(request) is not None and not (
            same_origin(request) and csrf_ok(request, str(form.get("csrf", "")))):
        return _signin_html("/", "sign-out needs the page's CSRF token", 403)
    response = _redirect("/signin")
    secure = cookie_secure(request)
    response.del_cookie(KEY_COOKIE, path="/", secure=secure)
    response.del_cookie(CSRF_COOKIE, path="/", secure=secure)
    return response


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
