"""JUnit XML as a `Report` (issue 20), in the dialects test runners write.

- pytest: `<testsuites><testsuite><testcase classname name time [file line]>`; with
  pytest-rerunfailures each attempt is its own `<testcase>`, and a failed attempt
  that was rerun carries no `<failure>`: a test's earlier duplicates without a child
  are failed attempts. An xfail is `<skipped type="pytest.xfail">`.
- Maven Surefire: `<flakyFailure>`/`<flakyError>` are failed attempts before the
  passing one; `<rerunFailure>`/`<rerunError>` are failed attempts after the first.
- Jenkins: `<testsuite>`s nested in `<testsuite>`s, walked to any depth.
- go-junit-report: the package is the classname; build errors come as invented cases.

Parsing is defusedxml's (no entity expansion, no external entities or DTD fetches);
the file is refused whole, with the line and reason, on any malformed input. Times may
be written with locale commas or thousands separators (`parse_time`).
"""

from __future__ import annotations

import math
import re
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from runlake.ingest.testreport import (
    MAX_FAILURE_CHARS,
    MAX_OUTPUT_CHARS,
    Case,
    Report,
    bad_file,
    bounded,
    epoch,
)

ROOTS = ("testsuites", "testsuite")
MAX_SECONDS = 1e9
MAX_SUITE_DEPTH = 64  # nested <testsuite>s; real reports nest two or three
_OUTCOME_CHILDREN = {"failure": "failed", "error": "error", "skipped": "skipped"}
_BEFORE = {"flakyFailure": "failed", "flakyError": "error"}  # attempts before the main one
_AFTER = {"rerunFailure": "failed", "rerunError": "error"}  # attempts after it
_PLAIN = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_NUMBER = re.compile(r"^[+-]?[0-9][0-9.,' \u00a0\u202f]*$")


class _Lines(TreeBuilder):
    """A TreeBuilder that remembers the line each element starts on."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[int, int] = {}
        self.expat: object = None

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        el = super().start(tag, attrs)
        self.lines[id(el)] = self.expat.CurrentLineNumber  # type: ignore[attr-defined]
        return el


def parse_time(text: str | None) -> float | None:
    """Seconds from a JUnit `time`: "1.5", "1,5" (a locale's decimal comma),
    "1,234.5" or "1.234,5" (thousands separators). With both separators the later
    one is the decimal point; a lone comma is a decimal comma; several commas (or
    spaces, apostrophes) group thousands. ValueError for anything else, a negative,
    a non-finite or an absurd (> 1e9 s) time."""
    if text is None or not text.strip():
        return None
    s = text.strip()
    if _PLAIN.match(s):  # the common case: "0.012"
        value = float(s)
        if value > MAX_SECONDS:
            raise ValueError(f"time {text!r} is more than {MAX_SECONDS:.0e} seconds")
        return value
    if not _NUMBER.match(s):
        raise ValueError(f"time {text!r} is not a number of seconds")
    s = re.sub(r"[' \u00a0\u202f]", "", s)
    if "," in s and "." in s:
        if s.rfind(",") > s.rfind("."):
            s = s.replace(".", "").replace(",", ".")
        else:
            s = s.replace(",", "")
    elif s.count(",") == 1:
        s = s.replace(",", ".")
    elif s.count(",") > 1:
        s = s.replace(",", "")
    elif s.count(".") > 1:
        s = s.replace(".", "")
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"time {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"time {text!r} is negative or not finite")
    if value > MAX_SECONDS:
        raise ValueError(f"time {text!r} is more than {MAX_SECONDS:.0e} seconds")
    return value


def parse(data: bytes, name: str) -> Report:
    """The report in `data`, or InvalidEvents naming the line and reason."""
    builder = _Lines()
    try:
        parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True,
                                  forbid_external=True)
        builder.expat = parser.parser
        parser.feed(data)
        root = parser.close()
    except ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else None
        raise bad_file(name, f"not well-formed XML: {e}", line) from None
    except DefusedXmlException as e:
        raise bad_file(name, f"refused: {e} (a DTD, entities and external references are not "
                       "allowed in a JUnit file)", _line_of(builder)) from None
    if root.tag not in ROOTS:
        raise bad_file(name, f"the root element is <{root.tag}>; expected <testsuites> or "
                       "<testsuite>", builder.lines.get(id(root)), "root", list(ROOTS))
    return _Walk(builder.lines, name).report(root)


def _line_of(builder: _Lines) -> int | None:
    try:
        return int(builder.expat.CurrentLineNumber)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


class _Walk:
    def __init__(self, lines: dict[int, int], name: str) -> None:
        self.lines, self.name = lines, name
        self.cases: list[Case] = []
        self.bare: set[int] = set()  # indexes of <testcase>s without a child
        self.starts: list[float] = []

    def line(self, el: Element) -> int | None:
        return self.lines.get(id(el))

    def time(self, el: Element, attr: str = "time") -> float | None:
        try:
            return parse_time(el.get(attr))
        except ValueError as e:
            raise bad_file(self.name, f"<{el.tag}> {attr}: {e}", self.line(el), attr) from None

    def report(self, root: Element) -> Report:
        report = Report("junit", name=root.get("name"))
        root_time = self.time(root)
        suites = [root] if root.tag == "testsuite" else [
            s for s in root if s.tag == "testsuite"]
        total = 0.0
        for suite in suites:
            self.suite(suite, None)
            total += self.time(suite) or 0.0
        if report.name is None and suites:
            report.name = suites[0].get("name")
        report.started = min(self.starts) if self.starts else None
        report.duration_s = root_time if root_time is not None else (total if suites else None)
        self._attempts()
        report.cases = self.cases
        return report

    def suite(self, suite: Element, started: float | None, depth: int = 1) -> None:
        if depth > MAX_SUITE_DEPTH:
            raise bad_file(self.name, f"<testsuite> nests more than {MAX_SUITE_DEPTH} deep",
                           self.line(suite), "testsuite")
        stamp = suite.get("timestamp")
        if stamp:
            try:
                started = epoch(stamp)
            except ValueError:
                raise bad_file(self.name, f"<testsuite> timestamp {stamp!r} is not an ISO "
                               "8601 time", self.line(suite), "timestamp") from None
            self.starts.append(started)
        self.time(suite)  # a bad time is a bad file even where nothing reads it
        for child in suite:
            if child.tag == "testcase":
                self.testcase(child, started)
            elif child.tag == "testsuite":  # Jenkins nests suites
                self.suite(child, started, depth + 1)

    def testcase(self, tc: Element, started: float | None) -> None:
        name = tc.get("name")
        if not name:
            raise bad_file(self.name, "<testcase> has no name", self.line(tc), "name")
        classname = tc.get("classname") or None
        test = f"{classname}.{name}" if classname else name
        common = {"file": tc.get("file") or None, "classname": classname, "ts": started,
                  "line": self.line(tc)}
        main, message = "passed", None
        before: list[Case] = []
        after: list[Case] = []
        out: list[str] = []
        for child in tc:
            tag = child.tag
            if tag in _OUTCOME_CHILDREN and main == "passed":
                main = _OUTCOME_CHILDREN[tag]
                if tag == "skipped" and child.get("type") == "pytest.xfail":
                    main = "xfailed"
                message = _text_of(child)
            elif tag in _BEFORE or tag in _AFTER:
                outcome = _BEFORE.get(tag) or _AFTER[tag]
                attempt = Case(test, outcome, duration_s=self.time(child),
                               message=_text_of(child), **common)  # type: ignore[arg-type]
                (before if tag in _BEFORE else after).append(attempt)
            elif tag in ("system-out", "system-err") and child.text and child.text.strip():
                out.append(f"--- {tag} ---\n{bounded(child.text, MAX_OUTPUT_CHARS, tail=True)}")
        text = "\n".join(filter(None, [message, *out])) or None
        self.cases.extend(before)
        if not len(tc):
            self.bare.add(len(self.cases))
        self.cases.append(Case(test, main, duration_s=self.time(tc), message=text,
                               **common))  # type: ignore[arg-type]
        self.cases.extend(after)

    def _attempts(self) -> None:
        """Number each test's attempts in file order. pytest-rerunfailures writes a
        rerun (failed) attempt as a bare <testcase>: any but a test's last is failed."""
        last: dict[str, int] = {}
        for i, c in enumerate(self.cases):
            last[c.test] = i
        seen: dict[str, int] = {}
        for i, c in enumerate(self.cases):
            seen[c.test] = seen.get(c.test, 0) + 1
            c.attempt = seen[c.test]
            if i in self.bare and i != last[c.test]:
                c.outcome = "failed"
                c.message = "rerun: a failed attempt (written without <failure>)"


def _text_of(el: Element) -> str | None:
    """An outcome element's message attribute and text (Surefire: its <stackTrace>),
    bounded."""
    parts = [el.get("message") or "", (el.text or "").strip()]
    for child in el:
        if child.tag == "stackTrace" and child.text:
            parts.append(child.text.strip())
    return bounded("\n".join(p for p in parts if p), MAX_FAILURE_CHARS)
