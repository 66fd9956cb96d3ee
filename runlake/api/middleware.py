"""The one middleware: every error as the DESIGN §4 envelope, and request metrics.

Errors come from three places, all rendered alike: `RunlakeError`s raised by
handlers and the layers below (they carry status and code), aiohttp's own
`HTTPException`s (no route, wrong method, body over `client_max_size`), and
anything unexpected, which is a bug: logged with its traceback, answered 500.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from runlake.api.metrics import UNMATCHED
from runlake.api.responses import error_response
from runlake.api.state import HTTP_METRICS, SETTINGS
from runlake.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    RunlakeError,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)

log = logging.getLogger("runlake.api")

# Codes for aiohttp's exceptions; the same codes as our own classes where both exist.
_CODES: dict[int, str] = {
    cls.status: cls.code
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge,
                UnsupportedMediaType, Unprocessable, RequestTimeout)
} | {
    405: "method_not_allowed",
    411: "length_required",
    414: "uri_too_long",
    429: "too_many_requests",
    431: "headers_too_large",
}
CLIENT_CLOSED = 499  # nginx's status for "client went away", in metrics only


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    try:
        response = await handler(request)
    except RunlakeError as e:
        if e.status >= 500 and e.fault:
            log.error("%s %s failed: %s", request.method, request.path, e.message, exc_info=e)
        response = error_response(e.status, e.code, e.message, e.details, e.headers)
        if e.close:
            response.force_close()
    except web.HTTPException as e:
        if e.status < 400:  # redirects and the like pass through
            _observe(request, e.status, start)
            raise
        response = _render_http_exception(request, e)
    except asyncio.CancelledError:
        _observe(request, CLIENT_CLOSED, start)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal_error", "internal server error")
    _observe(request, response.status, start)
    return response


def _render_http_exception(request: web.Request, e: web.HTTPException) -> web.Response:
    code = _CODES.get(e.status, f"http_{e.status}")
    headers: dict[str, str] = {}
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
        headers[hdrs.ALLOW] = e.headers.get(hdrs.ALLOW, allowed)
    elif isinstance(e, web.HTTPNotFound):
        message = f"no route matches {request.path}"
    elif isinstance(e, web.HTTPRequestEntityTooLarge):
        limit = request.app[SETTINGS].max_body_bytes
        message = f"request body is larger than the limit of {limit} bytes"
    else:
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
    return error_response(e.status, code, message, headers=headers or None)


def _observe(request: web.Request, status: int, start: float) -> None:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED
    metrics = request.app[HTTP_METRICS]
    metrics.observe(route, request.method, status, time.perf_counter() - start)
