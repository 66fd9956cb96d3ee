"""Benchmark: test-report import and per-test reads (issue 20).

    python bench/test_reports.py [--cases 10000] [--events 1000000] [--reps 5] [--quick]

1. import: a 10 000-case JUnit XML file (pytest dialect, a tenth failing with a
   traceback and captured output, a twentieth retried) and a report-log of 10 000
   tests (setup/call/teardown lines), each turned into validated events by
   `runlake.ingest.reports.load_report`: test cases/s, beside the limit measured in the
   same run on the same bytes: a plain `xml.etree.ElementTree.fromstring` of the XML,
   a plain `json.loads` of each report-log line.
2. reads: a log of `--events` `runlake demo` events (its test component's results) is
   folded into a fresh database (`replay.build`, untimed); then p50/p99 over `--reps`
   x 20 calls of the `tests` list (default sort, and by flakiness) and of one test's
   detail with its history strip, each beside the runs list on the same database.

Not `bench/test_*.py` for pytest: bench/ is no test path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fold import make_log

from runlake.events import EventLog
from runlake.ingest.replay import build
from runlake.ingest.reports import RunAttributes, load_report
from runlake.views import queries as q
from runlake.views import test_queries as tq
from runlake.views.db import Database


def junit_file(cases: int) -> bytes:
    out = ['<?xml version="1.0" encoding="utf-8"?><testsuites name="bench">',
           f'<testsuite name="pytest" tests="{cases}" time="123.4" '
           'timestamp="2026-03-01T00:00:00+00:00">']
    for i in range(cases):
        cls, name = f"tests.test_mod{i // 100}", f"test_case_{i}"
        if i % 20 == 0:  # a rerun attempt first (pytest-rerunfailures writes it bare)
            out.append(f'<testcase classname="{cls}" name="{name}" time="0.010"/>')
        if i % 10 == 0:
            out.append(f'<testcase classname="{cls}" name="{name}" time="0.012">'
                       '<failure message="AssertionError: 1 != 2">def test():\n'
                       '&gt;   assert 1 == 2\nE   AssertionError</failure>'
                       f'<system-out>captured line {i}\n' + "x" * 200 + '</system-out>'
                       '</testcase>')
        else:
            out.append(f'<testcase classname="{cls}" name="{name}" time="0.003"/>')
    out.append("</testsuite></testsuites>")
    return "".join(out).encode()


def reportlog_file(tests: int) -> bytes:
    lines = [json.dumps({"pytest_version": "9.2.0", "$report_type": "SessionStart"})]
    t = 1_780_000_000.0
    for i in range(tests):
        node = f"tests/test_mod{i // 100}.py::test_case_{i}"
        for when in ("setup", "call", "teardown"):
            failed = when == "call" and i % 10 == 0
            lines.append(json.dumps({
                "nodeid": node, "location": [f"tests/test_mod{i // 100}.py", i, node],
                "keywords": {node: 1}, "outcome": "failed" if failed else "passed",
                "longrepr": {"reprcrash": {"path": "x.py", "lineno": 3,
                                           "message": "AssertionError"}} if failed else None,
                "when": when, "user_properties": [], "sections": [], "duration": 0.001,
                "start": t, "stop": t + 0.001, "$report_type": "TestReport",
                "worker_id": f"gw{i % 2}"}))
            t += 0.001
    lines.append(json.dumps({"exitstatus": 1, "$report_type": "SessionFinish"}))
    return ("\n".join(lines) + "\n").encode()


def best(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def import_figures(cases: int, reps: int) -> list[tuple[str, float, float]]:
    xml, log = junit_file(cases), reportlog_file(cases)
    attrs = RunAttributes(run_id="bench")
    rows = []
    for name, data, kind, limit in (
        ("junit", xml, "junit", lambda: ET.fromstring(xml)),
        ("report-log", log, "reportlog",
         lambda: [json.loads(line) for line in log.splitlines() if line]),
    ):
        ours = best(lambda d=data, k=kind: load_report(d, "bench", attrs, 10**6, k), reps)
        plain = best(limit, reps)
        rows.append((name, cases / ours, cases / plain))
    return rows


def latencies(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def read_figures(events: int, reps: int, workdir: Path) -> list[tuple[str, float, float]]:
    log_dir = workdir / "log"
    make_log(log_dir, events)
    with EventLog(log_dir, readonly=True) as event_log:
        build(event_log, workdir / "db.duckdb")
    db = Database(workdir / "db.duckdb").open()
    try:
        cur = db.connection.cursor()
        tests, _ = tq.list_tests(cur, "test", window=30, limit=1)
        assert tests["items"], "the demo log has test results"
        name = tests["items"][0]["test"]
        n = reps * 20
        return [
            ("runs list (reference)", *latencies(lambda: q.list_runs(cur, "test"), n)),
            ("tests list", *latencies(lambda: tq.list_tests(cur, "test", window=30), n)),
            ("tests by flakiness", *latencies(
                lambda: tq.list_tests(cur, "test", window=30, sort="-flakiness"), n)),
            ("test detail + history", *latencies(
                lambda: tq.get_test(cur, "test", name, window=30, history=30), n)),
        ]
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 k events, 3 reps")
    args = parser.parse_args()
    if args.quick:
        args.events, args.reps = 100_000, 3
    print(f"import of {args.cases} test cases (best of {args.reps})")
    print(f"{'file':<12} {'runlake cases/s':>16} {'limit cases/s':>14} {'ratio':>6}")
    for name, ours, plain in import_figures(args.cases, args.reps):
        print(f"{name:<12} {ours:>16,.0f} {plain:>14,.0f} {ours / plain:>6.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = read_figures(args.events, args.reps, Path(tmp))
    print(f"\nreads at {args.events:,} events (in-process, ms)")
    print(f"{'read':<24} {'p50':>8} {'p99':>8}")
    for name, p50, p99 in rows:
        print(f"{name:<24} {p50:>8.2f} {p99:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
