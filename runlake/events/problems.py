"""Validation problems as data: msgspec's errors read into `Problem`s, the one-line
summary an `InvalidEvents` carries, and the lines where a JSON file's events start.

msgspec reports a bad value as text ("Invalid enum value 'done' - at `$.status`",
"JSON is malformed: … (byte 65)"); this module is the one place that reads that text.
Everything after works on `Problem` fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from runlake.errors import InvalidEvents, Problem

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
# The name runs to the last backtick: a field may be named "" or hold a backtick.
_NAMED = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<field>.*)`$",
                    re.DOTALL)
_BYTE = re.compile(r"\(byte (?P<byte>\d+)\)")
_INDEX = re.compile(r"^(?:\[\d+\])+")  # a leading array index: the event's own position
# msgspec quotes a failed pattern as repr() would.
_REGEX = re.compile(r"^Expected `str` matching regex (?P<pattern>.*)$", re.DOTALL)


class Reading(msgspec.Struct, frozen=True):
    """What one msgspec error says: the field path (None: not one field's), the
    reason, and the byte offset of malformed JSON (None: not known)."""

    field: str | None
    reason: str
    byte: int | None = None


def read_error(e: msgspec.DecodeError, patterns: dict[str, str] | None = None) -> Reading:
    """Read msgspec's 'reason - at `$.a.b`' text. An unknown or missing field is named
    with its path ("params" → "params.colour"); a pattern's regex is replaced by
    what `patterns` says it means, where it says."""
    msg = str(e)
    path = ""
    if (m := _AT.search(msg)) is not None:
        path, msg = _INDEX.sub("", m["path"]).lstrip("."), msg[: m.start()]
    field: str | None = path or None
    if (named := _NAMED.match(msg)) is not None:
        field = f"{path}.{named['field']}" if path else named["field"]
    if patterns and (rx := _REGEX.match(msg)) is not None:
        msg = {repr(k): v for k, v in patterns.items()}.get(rx["pattern"], msg)
    byte = _BYTE.search(msg)
    return Reading(field, msg, int(byte["byte"]) if byte else None)


def split_error(e: msgspec.DecodeError) -> tuple[str | None, str]:
    """(field path, reason) of a msgspec error."""
    reading = read_error(e)
    return reading.field, reading.reason


def summary(head: str, problems: Sequence[Problem], total: int, position: str = "") -> str:
    """'<head>: line 3 field 'value': <message> (and 4 more)' for the first problem.
    `position` names the problem's place ("row" for Parquet); by default "line"
    where a line is known, else "event"."""
    first = problems[0]
    place = []
    for word, value in ((position or "line", first.line), ("event", first.event)):
        if isinstance(value, int):
            place.append(f"{word} {value}")
            break
    if first.field:
        place.append(f"field {first.field!r}")
    more = f" (and {total - 1} more)" if total > 1 else ""
    return ": ".join([head, " ".join(place), first.message + more] if place
                     else [head, first.message + more])


def invalid(head: str, problems: list[Problem], position: str = "") -> InvalidEvents:
    """The InvalidEvents for `problems` (all of them: they are counted here)."""
    problems.sort(key=_order)
    return InvalidEvents(summary(head, problems, len(problems), position), problems,
                         total=len(problems))


def _order(p: Problem) -> tuple[int, int]:
    """File order; a problem with the whole body or file comes first."""
    return tuple(v if isinstance(v, int) else -1 for v in (p.line, p.event))  # type: ignore[return-value]


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def element_lines(data: bytes, wanted: Sequence[int]) -> dict[int, int]:
    """The 1-based line where each wanted element of a JSON array (or the one object)
    starts."""
    if not wanted:
        return {}
    stripped = data.lstrip()
    if stripped[:1] != b"[":
        return {0: data.count(b"\n", 0, len(data) - len(stripped)) + 1}
    try:
        raws = _raw_list.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return {}
    want, out, pos = set(wanted), {}, 0
    for i, raw in enumerate(raws[: max(want) + 1]):
        text = bytes(raw)
        # Elements appear in order with only commas and blanks between them, so the
        # first match at or after the previous element's end is this element.
        pos = data.find(text, pos)
        if i in want:
            out[i] = data.count(b"\n", 0, pos) + 1
        pos += len(text)
    return out


def line_of_byte(data: bytes, byte: int) -> int:
    return data.count(b"\n", 0, byte) + 1
