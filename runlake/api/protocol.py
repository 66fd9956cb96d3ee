"""The HTTP protocol runlake serves with: aiohttp's, with aiohttp's own refusals enveloped.

aiohttp answers a request it cannot parse (a NUL in a header, a URL or header
line over its limit, too many headers, a malformed request line) itself, before
any middleware sees it, in `RequestHandler.handle_error`: an ERROR with a
traceback in the log and a plain-text 400. That is a bad client, not a broken
server, so `Protocol.handle_error` logs one WARNING line instead, counts it
(`runlake_http_bad_requests_total` in /metrics) and answers the error envelope
with the status that says what was wrong: 414 (URL too long), 431 (a header
line too long, or too many headers) or 400. The connection still closes: after
a parse error the rest of the stream cannot be trusted.

`Runner` is the AppRunner that `runlake serve` and the test servers run the app
with. It makes the server build `Protocol`s, passes the line limits below, and
turns on aiohttp's `handler_cancellation`: a request whose client has gone away
is cancelled instead of running on for nobody (an append that was already
submitted still commits whole or not at all, docs/limits.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from runlake.api.metrics import HttpMetrics
from runlake.api.responses import error_response
from runlake.api.state import HTTP_METRICS

log = logging.getLogger("runlake.api")

# aiohttp's LineTooLong carries only the limit it broke, so the two limits differ
# by design: that is how a too-long URL (414) is told from a too-long header (431).
MAX_URL_BYTES = 8190  # aiohttp's default request-line limit (checked on the URL)
MAX_HEADER_LINE_BYTES = 8192  # a header's name, and its value (aiohttp's max_field_size)
MAX_HEADERS = 128  # aiohttp's default
TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message (both parsers)
REASON_CHARS = 200  # of aiohttp's message, in the log line
_QUOTED = re.compile(r"bytearray\(|b?['\"]")  # where an echo of the request begins


def rejection(exc: HttpProcessingError) -> tuple[int, str, str]:
    """(status, code, message) for a request aiohttp could not parse."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_URL_BYTES:
            return 414, "uri_too_long", f"the request URL is longer than {MAX_URL_BYTES} bytes"
        if limit == MAX_HEADER_LINE_BYTES:
            return 431, "headers_too_large", (
                f"a request header's name or value is longer than {MAX_HEADER_LINE_BYTES} bytes")
    if exc.message == TOO_MANY_HEADERS:
        return 431, "headers_too_large", f"the request has more than {MAX_HEADERS} headers"
    return 400, "bad_request", f"malformed HTTP request: {reason(exc)}"


def reason(exc: BaseException) -> str:
    """aiohttp's message without the request bytes it echoes (on the lines after the
    first, or quoted on it): they may hold anything the client sent, such as a key."""
    cause = exc if isinstance(exc, HttpProcessingError) else exc.__cause__
    if not isinstance(cause, HttpProcessingError):  # a body error wraps aiohttp's
        return type(exc).__name__
    text = (cause.message or type(cause).__name__).split("\n", 1)[0]
    quoted = _QUOTED.search(text)
    text = (text[:quoted.start()] if quoted else text).rstrip(" :.")
    return text[:REASON_CHARS] or type(cause).__name__


def count_refusal(metrics: HttpMetrics, remote: str | None, status: int,
                  exc: BaseException) -> None:
    """Count a request aiohttp could not parse and log it in one line (no traceback:
    the client's mistake, not the server's)."""
    metrics.bad_request(status)
    log.warning("refused a request aiohttp could not parse: remote=%s status=%d error=%s: %s",
                remote, status, type(exc).__name__, reason(exc))


class Protocol(RequestHandler):
    """aiohttp's RequestHandler; only its own error answers differ (module docstring)."""

    __slots__ = ("_metrics",)

    def __init__(self, manager: Server, *, metrics: HttpMetrics, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._metrics = metrics  # kept: the manager is dropped when the connection goes

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            status, code, text = rejection(exc)
            count_refusal(self._metrics, request.remote, status, exc)
        else:
            # An exception that escaped the middleware (a bug), or aiohttp's 504:
            # logged with its traceback, as aiohttp does.
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            code = "internal_error" if status == 500 else f"http_{status}"
            text = "internal server error" if status == 500 else HTTPStatus(status).phrase
        if request.writer.output_size > 0:  # as aiohttp: the answer has begun already
            raise ConnectionError("the response has begun; the error cannot be sent")
        response = error_response(status, code, text)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # After answering, aiohttp reads what is left of the body; a body it cannot
        # decode raises again there: the client's error, answered already (a routed
        # request's body is read, so answered 400 and counted, in api/limits.py).
        if isinstance(kw.get("exc_info"), RequestPayloadError):
            return
        super().log_exception(*args, **kw)


class _Server(Server):
    """aiohttp's low-level server, building a `Protocol` per connection."""

    def __init__(self, made: Server, metrics: HttpMetrics) -> None:
        # `made` is what AppRunner built; this one is the same but for the protocol.
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation,
                         loop=asyncio.get_running_loop(), **made._kwargs)
        self._metrics = metrics

    def __call__(self) -> Protocol:
        return Protocol(self, loop=self._loop, metrics=self._metrics, **self._kwargs)


class Runner(web.AppRunner):
    """The AppRunner for runlake's app (module docstring); other arguments as AppRunner's."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("handler_cancellation", True)
        super().__init__(app, max_line_size=MAX_URL_BYTES,
                         max_field_size=MAX_HEADER_LINE_BYTES, max_headers=MAX_HEADERS, **kwargs)

    async def _make_server(self) -> Server:
        return _Server(await super()._make_server(), self.app[HTTP_METRICS])
