"""A pytest report-log (`pytest --report-log=FILE`, pytest-reportlog) as a `Report`
(issue 20).

JSON lines, each with `$report_type`: `SessionStart`, `TestReport` (one per phase,
`when` = setup/call/teardown, of one attempt of `nodeid`), `CollectReport`,
`SessionFinish` (`exitstatus`), and others (warnings) that are ignored. An attempt is
a test's phases with one `rerun` number (pytest-rerunfailures; attempt = rerun + 1),
or without it, each new `setup` of the same node id. Its outcome:

- setup failed (or rerun) -> `error`; setup skipped -> `skipped` (`xfailed` with
  `wasxfail`);
- else the call's: passed -> `passed` (`xpassed` with `wasxfail`), skipped -> `skipped`
  (`xfailed` with `wasxfail`), failed or rerun -> `failed`;
- a failed teardown turns a pass into an `error`.

The session's `exitstatus` is the run's status (0 and 5, no tests, completed; 2,
interrupted, cancelled; any other failed); without `SessionFinish` the run is left
running. Its start and end are the earliest `start` and latest `stop` of its reports.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from runlake.ingest.testreport import MAX_FAILURE_CHARS, Case, Report, bad_file, bounded

PHASES = ("setup", "call", "teardown")
OUTCOMES = ("passed", "failed", "skipped", "rerun")
_decode = msgspec.json.Decoder(dict[str, Any])
_COLLECT_TEST = "<collection>"


def parse(data: bytes, name: str) -> Report:
    """The report in `data`, or InvalidEvents naming the line and reason."""
    report = Report("reportlog", finished=False)
    attempts: dict[tuple[str, int], dict[str, Any]] = {}  # (nodeid, attempt) -> phases
    setups: dict[str, int] = {}
    starts: list[float] = []
    stops: list[float] = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            d = _decode.decode(raw)
        except msgspec.DecodeError as e:
            raise bad_file(name, f"not a JSON object: {e}", n) from None
        kind = d.get("$report_type")
        if not isinstance(kind, str):
            raise bad_file(name, "has no $report_type: not a pytest report-log line", n,
                           "$report_type")
        if kind == "TestReport":
            rep = _test_report(d, name, n)
            node = rep["nodeid"]
            if "rerun" in d:
                attempt = _int(d, "rerun", name, n) + 1
            else:
                if rep["when"] == "setup":
                    setups[node] = setups.get(node, 0) + 1
                attempt = max(1, setups.get(node, 1))
            phases = attempts.setdefault((node, attempt), {"line": n})
            phases[rep["when"]] = rep
            for key, into in (("start", starts), ("stop", stops)):
                if (v := _time(d, key, name, n)) is not None:
                    into.append(v)
        elif kind == "CollectReport":
            if d.get("outcome") == "failed":
                node = d.get("nodeid") or _COLLECT_TEST
                if not isinstance(node, str):
                    raise bad_file(name, "nodeid is not a string", n, "nodeid")
                report.cases.append(Case(node, "error", line=n,
                                         message=_longrepr(d.get("longrepr"))))
        elif kind == "SessionFinish":
            status = d.get("exitstatus")
            if not isinstance(status, int) or isinstance(status, bool):
                raise bad_file(name, "exitstatus is not an integer", n, "exitstatus")
            report.finished = True
            report.status = ("completed" if status in (0, 5) else
                             "cancelled" if status == 2 else "failed")
    for (node, attempt), phases in attempts.items():
        report.cases.append(_case(node, attempt, phases))
    if starts:
        report.started = min(starts)
        if stops:
            report.duration_s = max(0.0, max(stops) - report.started)
    return report


def _test_report(d: dict[str, Any], name: str, n: int) -> dict[str, Any]:
    node = d.get("nodeid")
    if not isinstance(node, str) or not node:
        raise bad_file(name, "a TestReport needs a nodeid (a non-empty string)", n, "nodeid")
    for key, allowed in (("when", PHASES), ("outcome", OUTCOMES)):
        if d.get(key) not in allowed:
            raise bad_file(name, f"{key} is {d.get(key)!r}; expected one of "
                           f"{', '.join(allowed)}", n, key, list(allowed))
    duration = d.get("duration")
    if duration is not None and (not isinstance(duration, int | float)
                                 or isinstance(duration, bool)
                                 or not math.isfinite(duration) or duration < 0):
        raise bad_file(name, f"duration is {duration!r}; expected seconds >= 0", n, "duration")
    worker = d.get("worker_id")
    location = d.get("location")
    return {"nodeid": node, "when": d["when"], "outcome": d["outcome"],
            "duration": duration, "wasxfail": "wasxfail" in d,
            "longrepr": d.get("longrepr"), "start": d.get("start"),
            "worker": worker if isinstance(worker, str) and worker else None,
            "file": location[0] if isinstance(location, list) and location
            and isinstance(location[0], str) else None}


def _int(d: dict[str, Any], key: str, name: str, n: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1000:
        raise bad_file(name, f"{key} is {v!r}; expected an integer 0-999", n, key)
    return v


def _time(d: dict[str, Any], key: str, name: str, n: int) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
            or not 0 <= v <= 4_102_444_800):
        raise bad_file(name, f"{key} is {v!r}; expected epoch seconds", n, key)
    return float(v)


def _case(node: str, attempt: int, phases: dict[str, Any]) -> Case:
    setup, call, teardown = (phases.get(w) for w in PHASES)
    first = setup or call or teardown
    outcome, message = "error", "incomplete: no call report (the session ended mid-test?)"
    if setup is not None and setup["outcome"] in ("failed", "rerun"):
        outcome, message = "error", _longrepr(setup["longrepr"])
    elif setup is not None and setup["outcome"] == "skipped":
        outcome = "xfailed" if setup["wasxfail"] else "skipped"
        message = _longrepr(setup["longrepr"])
    elif call is not None:
        o = call["outcome"]
        outcome = {"passed": "xpassed" if call["wasxfail"] else "passed",
                   "skipped": "xfailed" if call["wasxfail"] else "skipped"}.get(o, "failed")
        message = _longrepr(call["longrepr"])
    if (teardown is not None and teardown["outcome"] in ("failed", "rerun")
            and outcome in ("passed", "xpassed")):
        outcome, message = "error", _longrepr(teardown["longrepr"])
    durations = [p["duration"] for p in (setup, call, teardown)
                 if p is not None and p["duration"] is not None]
    start = first["start"] if first is not None else None
    return Case(node, outcome, attempt, sum(durations) if durations else None, message,
                file=first["file"] if first else None,
                worker=first["worker"] if first else None,
                ts=float(start) if isinstance(start, int | float) else None,
                line=phases["line"])


def _longrepr(value: Any) -> str | None:
    """A report's longrepr as text, bounded: a string as it is, a skip's
    [path, line, reason] as the reason, a failure's dict as its crash message, where,
    and the traceback's last lines."""
    if value is None:
        return None
    if isinstance(value, str):
        return bounded(value, MAX_FAILURE_CHARS)
    if isinstance(value, list) and len(value) == 3:
        return bounded(str(value[2]), MAX_FAILURE_CHARS)
    if isinstance(value, dict):
        crash = value.get("reprcrash") or {}
        parts = []
        if isinstance(crash, dict):
            parts.append(str(crash.get("message", "")))
            if crash.get("path"):
                parts.append(f"{crash.get('path')}:{crash.get('lineno')}")
        traceback = value.get("reprtraceback")
        entries = traceback.get("reprentries") if isinstance(traceback, dict) else None
        if isinstance(entries, list) and entries and isinstance(entries[-1], dict):
            data = entries[-1].get("data")
            lines = data.get("lines") if isinstance(data, dict) else None
            if isinstance(lines, list):
                parts.append("\n".join(str(x) for x in lines))
        return bounded("\n".join(p for p in parts if p), MAX_FAILURE_CHARS)
    return bounded(msgspec.json.encode(value).decode(), MAX_FAILURE_CHARS)
