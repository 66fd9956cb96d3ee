"""Event wire format (DESIGN §1) as msgspec Structs, and the rules they cannot state.

Each event type is a Struct tagged on `type` with unknown fields forbidden, so a
typo in a field name is an error rather than silently lost data. Decoding bodies
is `decode.py`'s; every source of events then passes `check_rules`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
import msgspec.inspect as mi
from msgspec import Meta

from runlake.errors import Problem
from runlake.events.problems import read_error
from runlake.events.problems import split_error as split_error  # the API's export reads it

# Python's "$" also matches before a final newline ("test\n"); (?!\n) rules that out
# and, unlike \Z, means the same in the JSON Schema (ECMA-262) of the OpenAPI document.
SLUG_PATTERN = r"^[a-z][a-z0-9_-]{0,63}(?!\n)$"
_SLUG = re.compile(SLUG_PATTERN)
# Identifiers (ids, keys, names that URLs and filters select by) hold no control
# character: C0 (U+0000-U+001F), DEL and C1 (U+0080-U+009F). A NUL made a run no URL
# could reach; newlines and C1's NEL split log lines, and C1's CSI drives terminals.
# The pattern is what the OpenAPI document states; check_rules enforces it, because
# Meta(pattern=...) runs a Python regex per value (BENCHMARKS.md, session 8).
_PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]"
IDENTIFIER_PATTERN = rf"^{_PRINTABLE}*(?!\n)$"
# Ids starting with "@" are reserved for the ids the server derives from `seq`.
EVENT_ID_PATTERN = rf"^[^@\x00-\x1f\x7f-\x9f]{_PRINTABLE}*(?!\n)$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
Slug = Annotated[str, Meta(pattern=SLUG_PATTERN)]
Identifier = Annotated[str, Meta(min_length=1, max_length=256, extra={"identifier": True},
                                 extra_json_schema={"pattern": IDENTIFIER_PATTERN})]
RunId = Identifier
# (msgspec's own "^[^@]" is what its JSON Schema shows for an id; the vectorized
# Parquet check runs the whole EVENT_ID_PATTERN.)
EventId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^@]",
                              extra={"identifier": True},
                              extra_json_schema={"pattern": EVENT_ID_PATTERN})]
TestName = Annotated[str, Meta(min_length=1, max_length=1024, extra={"identifier": True},
                               extra_json_schema={"pattern": IDENTIFIER_PATTERN})]
Short = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=16_384)]
Uri = Annotated[str, Meta(min_length=1, max_length=4096)]
# |value| <= 1e100 keeps every sum, mean and histogram of the performance report
# finite: a sum of up to 1e200 such values is at most 1e300 < 1.8e308 (float64 max).
MAX_METRIC_VALUE = 1e100
MetricValue = Annotated[float, Meta(ge=-MAX_METRIC_VALUE, le=MAX_METRIC_VALUE)]
NonNegInt = Annotated[int, Meta(ge=0, le=2**62)]
MAX_ATTEMPT = 1000
Attempt = Annotated[int, Meta(ge=1, le=MAX_ATTEMPT)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, Meta(ge=0.0, le=1e9)]  # ~31 years; sums of 1e299 stay finite
EpochSeconds = Annotated[float, Meta(ge=0.0, le=4_102_444_800.0)]  # 1970 .. 2100
AwareDatetime = Annotated[datetime, Meta(tz=True)]
Timestamp = AwareDatetime | EpochSeconds
# Event times must be years 1-9999 once converted to UTC: what Python's datetime,
# and so pyarrow's to_pylist() and DuckDB's results in Python, can hold. msgspec
# cannot bound a datetime, so check_rules does (an offset moves it at most a day).
TS_MIN = datetime(1, 1, 1, tzinfo=UTC)
TS_MAX = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
_EDGE_YEARS = frozenset((1, 9999))
# What a failed pattern means, for the messages (msgspec would quote the regex).
PATTERN_MEANINGS = {
    SLUG_PATTERN: "is not a slug: a lowercase letter, then up to 63 of a-z, 0-9, _ and -",
    r"^[^@]": "starts with @, which is reserved for the ids the server derives",
}

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
    model: Identifier | None = None
    hardware: Identifier | None = None
    batch_id: Identifier | None = None
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
    step: Identifier
    status: StepStatus
    progress: Fraction | None = None
    message: Text | None = None


class MetricEvent(Event, tag="metric"):
    """`metric`: one measured point; `step` is an iteration number."""

    run_id: RunId
    name: Identifier
    value: MetricValue
    unit: Short | None = None
    step: NonNegInt | None = None


class TagEvent(Event, tag="tag"):
    """`tag`: a key/value label on a run; the latest value wins."""

    run_id: RunId
    key: Identifier
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
    test: TestName
    outcome: Outcome
    duration_s: Seconds | None = None
    message: Text | None = None
    # Added in log schema version 2 (issue 20), last and optional (msgspec's
    # schema-evolution rules): the attempt within the run (a rerun is 2, 3, ...;
    # absent means 1), where the test lives, and the worker (xdist) that ran it.
    attempt: Attempt | None = None
    file: TestName | None = None
    classname: TestName | None = None
    worker: Identifier | None = None


class BatchEvent(Event, tag="batch"):
    """`batch`: declares a batch of runs and how many it will hold."""

    batch_id: Identifier
    description: Text | None = None
    expected_count: NonNegInt | None = None


class DeleteEvent(Event, tag="delete"):
    """`delete`: removes a run, or a batch and its runs, from every table and view."""

    run_id: RunId | None = None
    batch_id: Identifier | None = None


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

def _allowed() -> dict[tuple[str, str], list[str]]:
    """{(type, field): accepted values, in declared order} of every enum field."""
    out = {}
    for cls in EVENT_TYPES:
        tag = cls.__struct_config__.tag
        for f in msgspec.structs.fields(cls):
            for kind in (f.type, *get_args(f.type)):  # Literal, or Literal | None
                if get_origin(kind) is Literal:
                    out[tag, f.name] = [str(v) for v in get_args(kind)]
    return out


ALLOWED = _allowed()


def _identifiers() -> dict[type[Event], tuple[str, ...]]:
    """{event class: its identifier fields}, read from the structs' metadata."""
    out = {}
    for cls in EVENT_TYPES:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        out[cls] = tuple(
            f.name for f in info.fields
            if any(isinstance(k, mi.Metadata) and (k.extra or {}).get("identifier")
                   for k in (f.type.types if isinstance(f.type, mi.UnionType) else (f.type,)))
        )
    return out


IDENTIFIERS = _identifiers()
_IDENTIFIER_VALUES = {cls: operator.attrgetter(*names) for cls, names in IDENTIFIERS.items()}
_ENUM_MESSAGES = ("Invalid enum value", "Invalid value")


def allowed_values(tag: object, field: str | None) -> list[str] | None:
    """The values enum field `field` of events of type `tag` accepts (`type`: every
    type name), or None if it is no enum field or the type is not known."""
    if field == "type":
        return list(TYPE_NAMES)
    return ALLOWED.get((tag, field)) if isinstance(tag, str) and field else None


def problem_of(e: msgspec.DecodeError, where: str, pos: int | None, tag: object = None
               ) -> Problem:
    """The Problem a msgspec error describes, for the event at `pos` (`where`:
    "event" or "line") of type `tag`; an enum field's problem lists its values."""
    reading = read_error(e, PATTERN_MEANINGS)
    allowed = allowed_values(tag, reading.field)
    message = reading.reason
    if allowed is not None and message.startswith(_ENUM_MESSAGES):
        message = f"{message}; expected one of {', '.join(allowed)}"
    return problem(where, pos, reading.field, message, allowed)


def problem(where: str, pos: int | None, field: str | None, message: str,
            allowed: list[str] | None = None) -> Problem:
    """A Problem at position `pos` of kind `where` ("event" or "line")."""
    p = Problem(field=field, message=message)
    if where == "line":
        p.line = pos
    else:
        p.event = pos
    if allowed is not None:
        p.allowed = allowed
    return p


_params_encoder = msgspec.json.Encoder()


def check_rules(
    events: list[Event], component: str | None, where: str, positions: Sequence[int],
    *, controls: bool = True,
) -> list[Problem]:
    """Rules msgspec's types cannot state (or not cheaply): implied component, delete
    targets, params, the range of `ts`, no control characters in identifiers (skipped
    with `controls=False`, for a body that cannot hold any).

    Every source of events (JSON, NDJSON, Parquet files) must pass these.
    Set and list comprehensions keep the common all-good case cheap.
    """
    if component is not None and not _SLUG.match(component):
        message = f"{component!r} {PATTERN_MEANINGS[SLUG_PATTERN]}"
        return [problem(where, None, "component", message)]
    problems = []
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
                problems.append(problem(where, pos, "component", "required field is missing"))
            elif component is not None and ev.component != component:
                msg = f"is {ev.component!r} but the URL names component {component!r}"
                problems.append(problem(where, pos, "component", msg))
    # Only a year 1 or 9999 can leave the range once converted to UTC.
    if not _EDGE_YEARS.isdisjoint({ev.ts.year for ev in events if ev.ts.__class__ is datetime}):
        for pos, ev in zip(positions, events, strict=True):
            if ev.ts.__class__ is datetime and not TS_MIN <= ev.ts <= TS_MAX:  # type: ignore[operator]
                problems.append(problem(where, pos, "ts", ts_problem(ev.ts.isoformat())))  # type: ignore[union-attr]
    if controls:
        problems += _control_problems(events, where, positions)
    special = [
        (pos, ev)
        for pos, ev in zip(positions, events, strict=True)
        if ev.__class__ is DeleteEvent or (ev.__class__ is RunEvent and ev.params is not None)  # type: ignore[attr-defined]
    ]
    for pos, ev in special:
        if isinstance(ev, RunEvent):
            params = _params_problem(ev.params)  # type: ignore[arg-type]
            if params:
                problems.append(problem(where, pos, "params", params))
        elif isinstance(ev, DeleteEvent) and (ev.run_id is None) == (ev.batch_id is None):
            msg = "a delete names exactly one of run_id, batch_id"
            problems.append(problem(where, pos, "run_id", msg))
    return problems


def _control_problems(events: list[Event], where: str, positions: Sequence[int]
                      ) -> list[Problem]:
    """A problem per identifier holding a control character. One regex over all the
    identifiers joined decides the common case: none."""
    values = _IDENTIFIER_VALUES
    joined = " ".join([v for ev in events for v in values[ev.__class__](ev) if v is not None])
    if _CONTROL.search(joined) is None:
        return []
    problems = []
    for pos, ev in zip(positions, events, strict=True):
        for name in IDENTIFIERS[ev.__class__]:
            value = getattr(ev, name)
            if value is not None and (m := _CONTROL.search(value)) is not None:
                message = (f"contains the control character U+{ord(m.group()):04X} at "
                           f"{m.start()}; identifiers may not hold U+0000-U+001F or "
                           "U+007F-U+009F")
                problems.append(problem(where, pos, name, message))
    return problems


def ts_problem(given: str) -> str:
    return (f"is {given}, outside years 1-9999 once converted to UTC "
            "(0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)")


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
