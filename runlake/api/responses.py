"""Response bodies as msgspec Structs (also the OpenAPI schemas), and JSON responses."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


class Accepted(msgspec.Struct):
    """The events of one request are durable in the log, numbered first_seq..last_seq."""

    accepted: int
    first_seq: int
    last_seq: int


class ErrorInfo(msgspec.Struct):
    code: str
    message: str
    details: list[dict[str, Any]]


class ErrorResponse(msgspec.Struct):
    """Every error, whatever its status (DESIGN §4)."""

    error: ErrorInfo


class Health(msgspec.Struct):
    status: Literal["ok"] = "ok"


ReadyStatus = Literal["ready", "lagging", "not_running"]


class Readiness(msgspec.Struct):
    """How far the fold is behind the log. `ready` when it runs and is at most
    `max_lag_seconds` behind; `lagging` when further; `not_running` when the fold
    thread has stopped (lag then only grows)."""

    status: ReadyStatus
    last_seq: int
    folded_seq: int
    lag_events: int
    lag_seconds: float
    max_lag_seconds: float


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers,
        content_type="application/json",
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorResponse(ErrorInfo(code, message, details or []))
    return json_response(body, status, headers)
