"""The one error hierarchy. The API renders these as the DESIGN §4 envelope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


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


class Problem(msgspec.Struct, kw_only=True):
    """One thing wrong with one event (or with a whole request or file): the data
    behind each `details` entry of InvalidEvents.

    `line` (1-based: an NDJSON line, the line where a file's JSON event starts, a
    Parquet row) and `event` (0-based index in a JSON array) are left out where the
    source has no such position, and null for a problem with the whole body or file.
    `allowed` lists the accepted values of an enum field (`type`, `status`, …).
    """

    line: int | None | UnsetType = UNSET
    event: int | None | UnsetType = UNSET
    field: str | None = None
    message: str
    allowed: list[str] | UnsetType = UNSET


MAX_PROBLEMS = 1000  # listed in an error; `total` counts them all


class InvalidEvents(BadRequest):
    """One or more events broke the schema. Built from `problems` (the first
    MAX_PROBLEMS kept, and encoded as `details`) and their `total` count; a
    problem may also be given as a mapping in the details' shape."""

    code = "invalid_events"

    def __init__(self, message: str, problems: Sequence[Problem | Mapping[str, Any]] = (), *,
                 total: int | None = None) -> None:
        kept = [p if isinstance(p, Problem) else msgspec.convert(p, Problem)
                for p in problems[:MAX_PROBLEMS]]
        super().__init__(message, msgspec.to_builtins(kept))
        self.problems = kept
        self.total = max(1, len(problems)) if total is None else total


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


class QueryTimeout(Unprocessable):
    """A read ran past its time budget (`read_budget_s`) and was interrupted: the
    message names the budget and how to ask for less."""

    code = "query_timeout"


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
