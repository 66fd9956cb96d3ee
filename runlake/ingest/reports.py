"""Test reports (JUnit XML, pytest report-log) to events: the one entry point that
`runlake ingest`, the watched folder and the HTTP routes share (issue 20)."""

from __future__ import annotations

from runlake.events.schema import Event
from runlake.ingest import junit, reportlog
from runlake.ingest.testreport import MAX_REPORT_BYTES, RunAttributes, bad_file, sniff, to_events

KINDS = ("junit", "reportlog")

__all__ = ["KINDS", "MAX_REPORT_BYTES", "RunAttributes", "load_report", "sniff"]


def load_report(data: bytes, name: str, attrs: RunAttributes, max_events: int,
                kind: str | None = None) -> list[Event]:
    """The validated events of one report file (one run), or InvalidEvents naming
    the line and reason; nothing is appended here. `kind` None: detected by content."""
    if len(data) > MAX_REPORT_BYTES:
        raise bad_file(name, f"is {len(data)} bytes; a test report may hold at most "
                       f"{MAX_REPORT_BYTES}")
    found = sniff(data)
    kind = kind or found
    if kind is None or found != kind:
        expected = "JUnit XML" if kind == "junit" else (
            "a pytest report-log (JSON lines with $report_type)" if kind == "reportlog"
            else "JUnit XML or a pytest report-log")
        raise bad_file(name, f"is not {expected}")
    report = (junit.parse if kind == "junit" else reportlog.parse)(data, name)
    return to_events(report, attrs, data, name, max_events)
