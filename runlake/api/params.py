"""Reading and checking request parameters: path segments and query strings.

Every check raises `BadRequest` naming the parameter, so handlers stay short and
a bad parameter can never reach a query.
"""

from __future__ import annotations

import re

from aiohttp import web

from runlake.errors import BadRequest

# The event schema's component slug (DESIGN §1).
SLUG = re.compile(r"[a-z][a-z0-9_-]{0,63}")
MAX_PARAM_CHARS = 1024  # a query-string value


def bad_param(name: str, message: str) -> BadRequest:
    """The 400 for query parameter `name`."""
    return BadRequest(f"query parameter {name!r} {message}",
                      [{"parameter": name, "message": message}])


def path_component(request: web.Request) -> str:
    """The `{component}` path segment, which must be a slug."""
    component = request.match_info["component"]
    if not SLUG.fullmatch(component):
        raise BadRequest(
            f"component {component!r} in the URL is not a valid slug",
            [{"parameter": "component", "message": f"must match ^{SLUG.pattern}$"}],
        )
    return component
