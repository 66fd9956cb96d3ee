"""Decoding events from JSON and NDJSON bodies: the one entry point for requests and
files. The decoders are built once at import and reused.

`validate` returns the events and every problem as data; `decode_events` raises
them as one InvalidEvents. A file's problems (`unit="file"`) name the line where
each JSON event starts as well as its index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from runlake.errors import Problem
from runlake.events.problems import element_lines, invalid, line_of_byte, read_error
from runlake.events.schema import (
    MAX_PARAMS_DEPTH,
    AnyEvent,
    Event,
    check_rules,
    problem,
    problem_of,
)

MAX_EVENTS_DEFAULT = 100_000

_one = msgspec.json.Decoder(AnyEvent)
_many = msgspec.json.Decoder(list[AnyEvent])
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class _Tagged(msgspec.Struct):
    """Just an event's `type`, to say which values its enum fields accept."""

    type: object = None


_tag = msgspec.json.Decoder(_Tagged)
_MAYBE_CONTROL = re.compile(rb"\\[bfnrtu]|\x7f|\xc2[\x80-\x9f]")


def decode_events(
    body: bytes,
    *,
    ndjson: bool = False,
    component: str | None = None,
    max_events: int = MAX_EVENTS_DEFAULT,
) -> list[Event]:
    """Decode one event, a JSON array of events, or NDJSON bytes.

    Returns every event, or raises `InvalidEvents` whose problems name each bad
    event: `event` (0-based, JSON) or `line` (1-based, NDJSON), plus `field`,
    `message` and, for enum fields, `allowed`. `component`, when given, is implied
    for events that leave it out and must match those that state it.
    """
    events, problems = validate(body, ndjson=ndjson, component=component,
                                max_events=max_events)
    if problems:
        raise invalid("invalid events", problems)
    return events


def validate(
    body: bytes,
    *,
    ndjson: bool = False,
    component: str | None = None,
    max_events: int = MAX_EVENTS_DEFAULT,
    unit: str = "request",
) -> tuple[list[Event], list[Problem]]:
    """The events of `body` and every problem found (none: all are good).

    `unit` is "request" or "file": what limits and empty bodies are worded for, and
    for a file, JSON problems also name the `line` where their event starts.
    """
    where = "line" if ndjson else "event"
    decode = _decode_ndjson if ndjson else _decode_json
    try:
        events, positions, problems = decode(body, max_events, unit)
    except RecursionError:  # msgspec lets this through; say where, as for any bad event
        pos, field = _too_deep(body, ndjson)
        message = f"nests deeper than {MAX_PARAMS_DEPTH} levels (too deep to decode)"
        events, positions, problems = [], [], [problem(where, pos, field, message)]
    except UnicodeDecodeError as e:  # msgspec lets this through
        events, positions = [], []
        problems = [problem(where, None, None, f"not valid UTF-8: {e}")]
    # A control character reaches a string only through an escape, a DEL or a C1
    # (UTF-8 C2 80-9F): a body without any cannot hold one.
    controls = (b"\\" in body or b"\x7f" in body or b"\xc2" in body) and (
        _MAYBE_CONTROL.search(body) is not None)  # `in` runs at memchr's speed
    problems += check_rules(events, component, where, positions, controls=controls)
    if problems and unit == "file" and not ndjson:
        starts = element_lines(body, [p.event for p in problems if isinstance(p.event, int)])
        for p in problems:
            if isinstance(p.event, int) and not isinstance(p.line, int):
                p.line = starts.get(p.event)
            elif p.line is msgspec.UNSET:
                p.line = None
    return events, problems


Decoded = tuple[list[Event], Sequence[int], list[Problem]]


def _decode_json(body: bytes, max_events: int, unit: str) -> Decoded:
    """Events, the index of each, and the problems."""
    stripped = body.lstrip()
    if not stripped:
        return [], [], [problem("event", None, None, _empty(unit))]
    if stripped[:1] != b"[":
        try:
            return [_decode_one(body)], [0], []
        except msgspec.DecodeError as e:
            return [], [], [_problem(e, "event", 0, body, unit)]
    try:
        events = _many.decode(body)
    except msgspec.DecodeError:
        pass
    else:
        if not events:
            return [], [], [problem("event", None, None, _no_events(unit))]
        if len(events) > max_events:
            return [], [], [_too_many(len(events), max_events, "event", unit)]
        return events, range(len(events)), []
    # Slow path, only for bad input: decode each element to report every bad one.
    try:
        raws = _raw_list.decode(body)
    except msgspec.DecodeError as e:
        return [], [], [_problem(e, "event", None, body, unit)]
    if len(raws) > max_events:
        return [], [], [_too_many(len(raws), max_events, "event", unit)]
    events, positions, problems = [], [], []
    for i, raw in enumerate(raws):
        try:
            events.append(_decode_one(raw))
            positions.append(i)
        except msgspec.DecodeError as e:
            problems.append(_problem(e, "event", i, raw))
    return events, positions, problems


def _decode_ndjson(body: bytes, max_events: int, unit: str) -> Decoded:
    """Events, the line number of each, and the problems."""
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
    problems: list[Problem] = []
    decode = _decode_one
    for n, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(decode(line))
            positions.append(n)
        except msgspec.DecodeError as e:
            problems.append(_problem(e, "line", n, line))
        if len(events) + len(problems) > max_events:
            return [], [], [_too_many(max_events, max_events, "line", unit, "more than ")]
    if not events and not problems:
        problems.append(problem("line", None, None, _no_events(unit)))
    return events, positions, problems


_generic = msgspec.json.Decoder()


def _decode_one(raw: bytes) -> Event:
    """One event. An integer field given a number with a zero fraction (`"step": 3.0`,
    which JSON Schema counts as an integer and some encoders write) takes it as the
    integer; this retry runs only after the strict decode failed, off the fast path."""
    try:
        return _one.decode(raw)
    except msgspec.ValidationError as e:
        if "got `float`" not in str(e):
            raise
        fields = _generic.decode(raw)
        if not isinstance(fields, dict):
            raise
        whole = {k: int(v) for k, v in fields.items() if isinstance(v, float) and v.is_integer()}
        try:
            return _one.decode(msgspec.json.encode({**fields, **whole}))
        except msgspec.DecodeError:
            raise e from None


def _problem(e: msgspec.DecodeError, where: str, pos: int | None, raw: bytes,
             unit: str = "request") -> Problem:
    """The problem of one bad event (or, `pos` None, of a body that is no JSON array).
    Malformed JSON in a file names the line of the byte msgspec stopped at."""
    try:
        tag = _tag.decode(raw).type
    except msgspec.DecodeError:
        tag = None
    p = problem_of(e, where, pos, tag)
    byte = read_error(e).byte
    if byte is None:
        return p
    # Malformed JSON (NaN, Infinity, a missing brace): say which event and field the
    # byte msgspec stopped at lies in, as for any other problem.
    event, p.field = _locate(raw, byte, 1 if pos is not None or raw.lstrip()[:1] == b"{" else 2)
    if pos is None:
        p.event = event
        if unit == "file":
            p.line = line_of_byte(raw, byte)
    return p


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}\n,]')
_COLON = re.compile(rb"\s*:")
_string = msgspec.json.Decoder(str)


def _locate(data: bytes, byte: int, event_depth: int) -> tuple[int | None, str | None]:
    """(index of the event, field whose value) byte offset `byte` of `data` lies in;
    None where it lies outside any event or field. An event is an object at nesting
    depth `event_depth` (1: `data` is one event, 2: an array of them)."""
    depth, event, key = 0, -1, None
    for m in _TOKEN.finditer(data, 0, byte):
        token = m.group()
        if token[:1] == b'"':
            if depth == event_depth and _COLON.match(data, m.end()):
                key = _string.decode(token)
        elif token in (b"{", b"["):
            depth += 1
            if depth == event_depth:
                event, key = event + 1, None
        elif token in (b"}", b"]"):
            depth -= 1
        elif token == b"," and depth == event_depth:
            key = None
    if depth < event_depth:
        return None, None
    return event, key


def _empty(unit: str) -> str:
    return "request body is empty" if unit == "request" else "the file is empty"


def _no_events(unit: str) -> str:
    return "request body has no events" if unit == "request" else "the file has no events"


def _too_many(n: int, limit: int, where: str, unit: str, qualifier: str = "") -> Problem:
    return problem(where, None, None, f"{qualifier}{n} events; at most {limit} per {unit}")


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
        elif token in (b"}", b"]"):
            depth -= 1
    return None, None
