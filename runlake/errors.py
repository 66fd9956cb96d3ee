"""The one error hierarchy. The API renders these as the DESIGN §4 envelope."""

from __future__ import annotations

from typing import Any


class RunlakeError(Exception):
    """Base class: carries an HTTP status, a stable code and optional details; over
    HTTP also `headers` for the response, and `close` when the connection must close
    after it (its request's body may still be arriving)."""

    status: int = 500
    code: str = "internal_error"
    # A 5xx that is the server's failure is logged with its traceback; a state the
    # client is told to retry (overloaded, fold not there yet) is only counted.
    fault: bool = True

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None, *,
                 headers: dict[str, str] | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers
        self.close = close

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(RunlakeError):
    status = 400
    code = "bad_request"


class InvalidEvents(BadRequest):
    """One or more events broke the schema; `details` names each event and field."""

    code = "invalid_events"


class Unauthorized(RunlakeError):
    status = 401
    code = "unauthorized"


class Forbidden(RunlakeError):
    status = 403
    code = "forbidden"


class NotFound(RunlakeError):
    status = 404
    code = "not_found"


class RequestTimeout(RunlakeError):
    """The request body did not arrive within the read timeout."""

    status = 408
    code = "request_timeout"


class Conflict(RunlakeError):
    status = 409
    code = "conflict"


class PayloadTooLarge(RunlakeError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RunlakeError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(RunlakeError):
    status = 422
    code = "unprocessable"


class Unavailable(RunlakeError):
    status = 503
    code = "unavailable"
    fault = False


class Overloaded(RunlakeError):
    """More requests in flight than `max_concurrent_requests`."""

    status = 503
    code = "overloaded"
    fault = False


class LogError(RunlakeError):
    """The event log could not be opened, written or read."""

    code = "log_error"


class LogLocked(LogError):
    code = "log_locked"
