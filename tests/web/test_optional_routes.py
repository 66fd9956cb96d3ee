"""The shell names the optional routes (stream, facets, test history) a server has,
so the page's script uses them without probing (test_live.py checks the real server)."""

from __future__ import annotations

from aiohttp import web

from runlake.web.pages import OPTIONAL_ROUTES, optional_routes


async def _nothing(request: web.Request) -> web.Response:
    return web.Response()


def test_lists_only_the_optional_routes_served() -> None:
    app = web.Application()
    app.router.add_get("/api/stream", _nothing)
    app.router.add_get("/api/{component}/db/runs", _nothing)
    assert optional_routes(app) == ["/api/stream"]
    for path in OPTIONAL_ROUTES:
        app.router.add_get(path, _nothing)
    assert optional_routes(app) == list(OPTIONAL_ROUTES)
