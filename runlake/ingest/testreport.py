"""Test reports as events (issue 20): what the JUnit XML and pytest report-log importers
share. A parser (`junit.py`, `reportlog.py`) turns a file into a `Report`; `to_events`
turns that into one run's events, validated by the same decoder as any request.

One file is one run (docs/tests.md). Event ids derive from the SHA-256 of the file's
content and the run attributes, so importing the same file twice adds nothing (the fold
keeps the first event of each id), as the inbox does for event files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from runlake.errors import InvalidEvents, Problem
from runlake.events.decode import validate
from runlake.events.problems import invalid
from runlake.events.schema import Event

# A report larger than this is refused whole, before it is parsed (a 100 MB
# <system-out> among them); the HTTP routes' body limit may be tighter.
MAX_REPORT_BYTES = 64 * 1024 * 1024
# What a result keeps of a failure's text and of a test's captured output: the head
# of the failure (where the assertion is), the tail of the output (where it ended).
MAX_FAILURE_CHARS = 8192
MAX_OUTPUT_CHARS = 2048
KEY_DIGITS = 24
_LEADING = re.compile(rb"^(?:\xef\xbb\xbf)?\s*")


@dataclass
class Case:
    """One attempt of one test."""

    test: str
    outcome: str
    attempt: int = 1
    duration_s: float | None = None
    message: str | None = None
    file: str | None = None
    classname: str | None = None
    worker: str | None = None
    ts: float | None = None  # epoch seconds; None: the run's start
    line: int | None = None  # where in the file, for error messages


@dataclass
class Report:
    """A parsed report: one run. `status` None: derived from the last attempts."""

    source: str  # "junit" or "reportlog"
    cases: list[Case] = field(default_factory=list)
    name: str | None = None
    started: float | None = None
    duration_s: float | None = None
    status: str | None = None
    finished: bool = True  # False: a report-log without SessionFinish (still running)


@dataclass(frozen=True)
class RunAttributes:
    """What the caller says about the run (CLI flags, query parameters)."""

    component: str = "test"
    run_id: str | None = None
    model: str | None = None
    hardware: str | None = None
    batch_id: str | None = None
    name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def canonical(self) -> bytes:
        return msgspec.json.encode([self.component, self.run_id, self.model, self.hardware,
                                    self.batch_id, self.name, sorted(self.tags)])


def sniff(data: bytes) -> str | None:
    """'junit' for XML, 'reportlog' for JSON lines with `$report_type`, else None:
    by content, whatever the file's name."""
    head = data[:4096]
    m = _LEADING.match(head)
    start = head[m.end():] if m else head
    if start[:1] == b"<":
        return "junit"
    if start[:1] == b"{":
        first = start.split(b"\n", 1)[0]
        if b'"$report_type"' in first:
            return "reportlog"
    return None


def bad_file(name: str, reason: str, line: int | None = None, field_: str | None = None,
             allowed: list[str] | None = None) -> InvalidEvents:
    """The whole file rejected: `reason`, at `line` when known."""
    p = Problem(line=line, field=field_, message=reason)
    if allowed is not None:
        p.allowed = allowed
    where = f" (line {line})" if line is not None else ""
    return InvalidEvents(f"{name}: {reason}{where}", [p])


def bounded(text: str | None, limit: int, *, tail: bool = False) -> str | None:
    """`text` cut to `limit` characters, saying how much was left out."""
    if not text:
        return None
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if tail:
        return f"[... {cut} characters left out]\n" + text[-limit:]
    return text[:limit] + f"\n[... {cut} characters left out]"


def final_outcomes(cases: list[Case]) -> dict[str, str]:
    """{test: the outcome of its last attempt}."""
    last: dict[str, tuple[int, str]] = {}
    for c in cases:
        if c.test not in last or c.attempt >= last[c.test][0]:
            last[c.test] = (c.attempt, c.outcome)
    return {t: o for t, (_, o) in last.items()}


def to_events(report: Report, attrs: RunAttributes, content: bytes, name: str,
              max_events: int) -> list[Event]:
    """The run's events: `run`, `status` running, its tags, every attempt's `result`,
    then the final `status`; validated whole, problems named by the file's line."""
    if not report.cases:
        raise bad_file(name, "the report holds no test cases")
    key = hashlib.sha256(content + b"\0" + attrs.canonical()).hexdigest()[:KEY_DIGITS]
    run_id = attrs.run_id or f"{report.source}-{hashlib.sha256(content).hexdigest()[:16]}"
    base = {"component": attrs.component, "run_id": run_id}
    start = report.started
    wires: list[dict[str, object]] = []
    lines: list[int | None] = []

    def add(ev: dict[str, object], line: int | None = None, ts: float | None = None) -> None:
        ev.update(base)
        if ts is not None:
            ev["ts"] = ts
        ev["id"] = f"{key}:{len(wires) + 1}"
        wires.append(ev)
        lines.append(line)

    run: dict[str, object] = {"type": "run", "params": {"source": report.source}}
    for attr in ("model", "hardware", "batch_id"):
        if (value := getattr(attrs, attr)) is not None:
            run[attr] = value
    run_name = attrs.name or report.name
    if run_name:
        run["name"] = run_name[:256]
    add(run, ts=start)
    add({"type": "status", "status": "running"}, ts=start)
    for k, v in attrs.tags:
        add({"type": "tag", "key": k, "value": v}, ts=start)
    for c in report.cases:
        ev: dict[str, object] = {"type": "result", "test": c.test, "outcome": c.outcome}
        if c.attempt != 1:
            ev["attempt"] = c.attempt
        for attr in ("duration_s", "message", "file", "classname", "worker"):
            if (value := getattr(c, attr)) is not None:
                ev[attr] = value
        add(ev, c.line, c.ts if c.ts is not None else start)
    if len(wires) + 1 > max_events:
        raise bad_file(name, f"{len(report.cases)} test cases; at most {max_events} events "
                       "per file")
    if report.finished:
        status = report.status or ("failed" if any(
            o in ("failed", "error") for o in final_outcomes(report.cases).values())
            else "completed")
        end = (start + report.duration_s if start is not None and report.duration_s is not None
               else start)
        add({"type": "status", "status": status}, ts=end)
    events, problems = validate(msgspec.json.encode(wires), max_events=max_events)
    if problems:
        for p in problems:  # name the file's line, not the generated event's index
            if isinstance(p.event, int):
                p.line = lines[p.event]
            p.event = msgspec.UNSET
        raise invalid(f"{name}: invalid test report", problems)
    return events


def epoch(text: str) -> float:
    """An ISO 8601 time as epoch seconds; without an offset it is UTC. ValueError if
    it is none."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()
