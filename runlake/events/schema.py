"""Event wire format (DESIGN §1) as msgspec Structs, and the one decode entry point.

Each event type is a Struct tagged on `type` with unknown fields forbidden, so a
typo in a field name is an error rather than silently lost data. The decoders are
built once at import and reused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runlake.errors import InvalidEvents

# Python's "$" also matches before a final newline ("test\n"); (?!\n) rules that out
# and, unlike \Z, means the same in the JSON Schema (ECMA-262) of the OpenAPI document.
SLUG_PATTERN = r"^[a-z][a-z0-9_-]{0,63}(?!\n)$"
_SLUG = re.compile(SLUG_PATTERN)
Slug = Annotated[str, Meta(pattern=SLUG_PATTERN)]
RunId = Annotated[str, Meta(min_length=1, max_length=256)]
# Ids starting with "@" are reserved for the ids the server derives from `seq`.
EventId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^@]")]
Short = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=16_384)]
Uri = Annotated[str, Meta(min_length=1, max_length=4096)]
Finite = Annotated[float, Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]
NonNegInt = Annotated[int, Meta(ge=0, le=2**62)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
EpochSeconds = Annotated[float, Meta(ge=0.0, le=4_102_444_800.0)]  # 1970 .. 2100
AwareDatetime = Annotated[datetime, Meta(tz=True)]
Timestamp = AwareDatetime | EpochSeconds

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
StepStatus = Literal["pending", "running", "completed", "failed", "skipped"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
Outcome = Literal["passed", "failed", "skipped", "error", "xfailed", "xpassed"]

RUN_STATUSES: tuple[str, ...] = RunStatus.__args__  # type: ignore[attr-defined]
TERMINAL_STATUSES = ("completed", "failed", "cancelled")

MAX_PARAMS_BYTES = 16_384
MAX_PARAMS_DEPTH = 8


class Event(
    msgspec.Struct,
    forbid_unknown_fields=True,
    tag_field="type",
    kw_only=True,
    omit_defaults=True,
):
    """Fields common to every event. `component` may be left out only where the
    URL implies it (`POST /api/{component}/events`)."""

    component: Slug | None = None
    id: EventId | None = None
    ts: Timestamp | None = None


class RunEvent(Event, tag="run"):
    """`run`: sets run attributes; an attribute left out keeps its previous value."""

    run_id: RunId
    model: Short | None = None
    hardware: Short | None = None
    batch_id: Short | None = None
    name: Short | None = None
    params: dict[str, Any] | None = None


class StatusEvent(Event, tag="status"):
    """`status`: the run's lifecycle status; `error` says why a run failed."""

    run_id: RunId
    status: RunStatus
    error: Text | None = None


class StepEvent(Event, tag="step"):
    """`step`: the state of one named step of a run."""

    run_id: RunId
    step: Short
    status: StepStatus
    progress: Fraction | None = None
    message: Text | None = None


class MetricEvent(Event, tag="metric"):
    """`metric`: one measured point; `step` is an iteration number."""

    run_id: RunId
    name: Short
    value: Finite
    unit: Short | None = None
    step: NonNegInt | None = None


class TagEvent(Event, tag="tag"):
    """`tag`: a key/value label on a run; the latest value wins."""

    run_id: RunId
    key: Short
    value: Annotated[str, Meta(max_length=1024)]


class LogEvent(Event, tag="log"):
    """`log`: one log line of a run."""

    run_id: RunId
    level: LogLevel
    message: Text


class ArtifactEvent(Event, tag="artifact"):
    """`artifact`: a file or object a run produced."""

    run_id: RunId
    name: Short
    uri: Uri | None = None
    size_bytes: NonNegInt | None = None
    media_type: Short | None = None


class ResultEvent(Event, tag="result"):
    """`result`: the outcome of one test case of a test run."""

    run_id: RunId
    test: Annotated[str, Meta(min_length=1, max_length=1024)]
    outcome: Outcome
    duration_s: Annotated[float, Meta(ge=0.0, le=1e9)] | None = None
    message: Text | None = None


class BatchEvent(Event, tag="batch"):
    """`batch`: declares a batch of runs and how many it will hold."""

    batch_id: Short
    description: Text | None = None
    expected_count: NonNegInt | None = None


class DeleteEvent(Event, tag="delete"):
    """`delete`: removes a run, or a batch and its runs, from every table and view."""

    run_id: RunId | None = None
    batch_id: Short | None = None


AnyEvent = (
    RunEvent
    | StatusEvent
    | StepEvent
    | MetricEvent
    | TagEvent
    | LogEvent
    | ArtifactEvent
    | ResultEvent
    | BatchEvent
    | DeleteEvent
)
EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__  # type: ignore[attr-defined]
TYPE_NAMES: tuple[str, ...] = tuple(t.__struct_config__.tag for t in EVENT_TYPES)  # type: ignore[misc]

_one = msgspec.json.Decoder(AnyEvent)
_many = msgspec.json.Decoder(list[AnyEvent])
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_params_encoder = msgspec.json.Encoder()

MAX_EVENTS_DEFAULT = 100_000


def decode_events(
    body: bytes,
    *,
    ndjson: bool = False,
    component: str | None = None,
    max_events: int = MAX_EVENTS_DEFAULT,
) -> list[Event]:
    """Decode one event, a JSON array of events, or NDJSON bytes.

    Returns every event, or raises `InvalidEvents` whose details list each bad
    event: `{"event": i}` (0-based, JSON) or `{"line": n}` (1-based, NDJSON),
    plus `field` and `message`. `component`, when given, is implied for events
    that leave it out and must match those that state it.
    """
    where = "line" if ndjson else "event"
    decode = _decode_ndjson if ndjson else _decode_json
    try:
        events, positions, errors = decode(body, max_events)
    except RecursionError as e:  # msgspec lets this through; say where, as for any bad event
        pos, field = _too_deep(body, ndjson)
        message = f"nests deeper than {MAX_PARAMS_DEPTH} levels (too deep to decode)"
        error = _err(pos, field, message, where)
        raise InvalidEvents(_summary([error]), [error]) from e
    except UnicodeDecodeError as e:  # msgspec lets this through
        raise InvalidEvents(f"invalid events: body is not valid JSON: {e}",
                            [{where: None, "field": None, "message": str(e)}]) from e
    errors += check_rules(events, component, where, positions)
    if errors:
        errors.sort(key=lambda e: e[where] if e[where] is not None else -1)
        raise InvalidEvents(_summary(errors), errors[:1000])
    return events


Decoded = tuple[list[Event], Sequence[int], list[dict[str, Any]]]


def _decode_json(body: bytes, max_events: int) -> Decoded:
    """Events, the index of each, and the errors."""
    stripped = body.lstrip()
    if not stripped:
        return [], [], [_err(None, None, "request body is empty", "event")]
    if stripped[:1] != b"[":
        try:
            return [_one.decode(body)], [0], []
        except msgspec.DecodeError as e:
            return [], [], [_err(0, *split_error(e), "event")]
    try:
        events = _many.decode(body)
    except msgspec.DecodeError:
        pass
    else:
        if not events:
            return [], [], [_err(None, None, "request body has no events", "event")]
        if len(events) > max_events:
            return [], [], [_too_many(len(events), max_events, "event")]
        return events, range(len(events)), []
    # Slow path, only for bad input: decode each element to report every bad one.
    try:
        raws = _raw_list.decode(body)
    except msgspec.DecodeError as e:
        return [], [], [_err(None, *split_error(e), "event")]
    if len(raws) > max_events:
        return [], [], [_too_many(len(raws), max_events, "event")]
    events, positions, errors = [], [], []
    for i, raw in enumerate(raws):
        try:
            events.append(_one.decode(raw))
            positions.append(i)
        except msgspec.DecodeError as e:
            errors.append(_err(i, *split_error(e), "event"))
    return events, positions, errors


def _decode_ndjson(body: bytes, max_events: int) -> Decoded:
    """Events, the line number of each, and the errors."""
    # Fast path: well-formed NDJSON with no blank lines decodes as one JSON array.
    # The newline stays in ("\n,"), so a raw newline inside a string is still an error.
    body = body.strip()
    n_lines = body.count(b"\n") + 1
    if n_lines <= max_events and body[:1] == b"{":
        try:
            events = _many.decode(b"[" + body.replace(b"\n", b"\n,") + b"]")
        except msgspec.DecodeError:
            pass
        else:
            if len(events) == n_lines:
                return events, range(1, n_lines + 1), []
    events: list[Event] = []
    positions: list[int] = []
    errors: list[dict[str, Any]] = []
    decode = _one.decode
    for n, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(decode(line))
            positions.append(n)
        except msgspec.DecodeError as e:
            errors.append(_err(n, *split_error(e), "line"))
        if len(events) + len(errors) > max_events:
            n = len(events) + len(errors)
            return [], [], [_too_many(n, max_events, "line", "more than")]
    if not events and not errors:
        errors.append(_err(None, None, "request body has no events", "line"))
    return events, positions, errors


def check_rules(
    events: list[Event], component: str | None, where: str, positions: Sequence[int]
) -> list[dict[str, Any]]:
    """Rules msgspec's types cannot state: implied component, delete targets, params.

    Every source of events (JSON, NDJSON, Parquet files) must pass these.
    Set and list comprehensions keep the common all-good case cheap.
    """
    if component is not None and not _SLUG.match(component):
        return [_err(None, "component", f"{component!r} is not a component slug", where)]
    errors = []
    components = {ev.component for ev in events}
    if component is not None and None in components:
        for ev in events:
            if ev.component is None:
                ev.component = component
        components.discard(None)
        components.add(component)
    if None in components or (component is not None and components != {component}):
        for pos, ev in zip(positions, events, strict=True):
            if ev.component is None:
                errors.append(_err(pos, "component", "required field is missing", where))
            elif component is not None and ev.component != component:
                msg = f"is {ev.component!r} but the URL names component {component!r}"
                errors.append(_err(pos, "component", msg, where))
    special = [
        (pos, ev)
        for pos, ev in zip(positions, events, strict=True)
        if ev.__class__ is DeleteEvent or (ev.__class__ is RunEvent and ev.params is not None)  # type: ignore[attr-defined]
    ]
    for pos, ev in special:
        if isinstance(ev, RunEvent):
            problem = _params_problem(ev.params)  # type: ignore[arg-type]
            if problem:
                errors.append(_err(pos, "params", problem, where))
        elif isinstance(ev, DeleteEvent) and (ev.run_id is None) == (ev.batch_id is None):
            msg = "a delete names exactly one of run_id, batch_id"
            errors.append(_err(pos, "run_id", msg, where))
    return errors


def _params_problem(params: dict[str, Any]) -> str | None:
    if len(_params_encoder.encode(params)) > MAX_PARAMS_BYTES:
        return f"is larger than {MAX_PARAMS_BYTES} bytes of JSON"
    if _depth(params) > MAX_PARAMS_DEPTH:
        return f"is nested deeper than {MAX_PARAMS_DEPTH} levels"
    return None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}\n]')


def _too_deep(body: bytes, ndjson: bool) -> tuple[int | None, str | None]:
    """Where a body nests too deeply for the decoder: (event index, or NDJSON line,
    and the event's field), found by a scan that does not recurse; (None, None) if
    no event nests deeper than params may."""
    event_depth = 1 if ndjson or body.lstrip()[:1] == b"{" else 2
    depth, event, line, key = 0, -1, 1, None
    for m in _TOKEN.finditer(body):
        token = m.group()
        if token[:1] == b'"':
            if depth == event_depth:  # a field name, or a value (never followed by { or [)
                key = token[1:-1].decode(errors="replace")
        elif token == b"\n":
            line += 1
        elif token in (b"{", b"["):
            depth += 1
            event += depth == event_depth
            if depth > event_depth + MAX_PARAMS_DEPTH:
                return (line if ndjson else event), key
        else:
            depth -= 1
    return None, None


_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?(?P<path>[^`]*)`$")
_FIELD = re.compile(r"field `(?P<field>[^`]+)`")


def split_error(e: msgspec.DecodeError) -> tuple[str | None, str]:
    """Turn msgspec's 'reason - at `$.a.b`' into (field path, reason)."""
    msg = str(e)
    m = _AT.search(msg)
    if m:
        return (m["path"] or None), msg[: m.start()]
    m = _FIELD.search(msg)
    if m:
        return m["field"], msg
    if msg.startswith("Object missing required field `type`") or "`type`" in msg:
        return "type", msg
    return None, msg


def _err(pos: int | None, field: str | None, message: str, where: str) -> dict[str, Any]:
    entry: dict[str, Any] = {where: pos, "field": field, "message": message}
    if field == "type" and "Invalid value" in message:
        entry["message"] = f"{message}; expected one of {', '.join(TYPE_NAMES)}"
    return entry


def _too_many(n: int, limit: int, where: str, qualifier: str = "") -> dict[str, Any]:
    count = f"{qualifier} {limit}" if qualifier else str(n)
    return {where: None, "field": None, "message": f"{count} events; at most {limit} per request"}


def _summary(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    where = "line" if "line" in first else "event"
    pos = first.get(where)
    head = f"{where} {pos}" if pos is not None else ""
    field = f" field {first['field']!r}:" if first.get("field") else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid events: {head}{field} {first['message']}{more}".replace(":  ", ": ")
