"""Who is asking: API keys, roles and component limits (DESIGN §6).

`visible_components(request)` is the one question handlers ask: which
components may this request see? None means every component.
"""

from __future__ import annotations

from aiohttp import web


def visible_components(request: web.Request) -> frozenset[str] | None:
    """The components the request's key may see; None when it may see them all."""
    return None
