"""Importing test reports (issue 20): JUnit XML and pytest report-log files made by the
real tools (pytest --junitxml / --report-log, with pytest-rerunfailures and
pytest-xdist), and hand-written Surefire, Jenkins and go-junit-report samples, through
the HTTP routes, `runlake ingest` and the watched folder. Expected counts come from the
files themselves (their <testsuite> attributes, or a count with xml.etree) or from the
other report of the same pytest session, never from runlake's code."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from runlake.errors import InvalidEvents
from runlake.ingest.files import load_file
from runlake.ingest.testreport import MAX_REPORT_BYTES
from tests.helpers.server import Client

DATA = Path(__file__).parent / "data" / "junit"
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")

# A test module whose tests pass, fail, flake (fail on their first attempt only),
# skip, xfail, xpass and error in setup: what the real pytest writes reports about.
SUBJECT = '''
import os, pytest
HERE = os.path.dirname(__file__)

def test_pass(): pass
def test_fail(): assert 1 == 2, "nope"
def test_flaky(request):
    mark = os.path.join(HERE, "ran-" + request.node.name)
    first = not os.path.exists(mark)
    open(mark, "a").close()
    assert not first, "first attempt fails"
@pytest.mark.skip(reason="not here")
def test_skip(): pass
@pytest.mark.xfail(reason="known")
def test_xfail(): assert 0
@pytest.mark.xfail
def test_xpass(): pass
@pytest.fixture
def broken(): raise RuntimeError("setup boom")
def test_setup_error(broken): pass
@pytest.mark.parametrize("n", [1, 2, 3])
def test_param(n): assert n < 3
'''
N_TESTS = 10
# With reruns: test_flaky passes on its 2nd attempt; test_fail, test_setup_error and
# test_param[3] fail every attempt.
RETRIED_WITH_RERUNS = 4
FLAKY_WITH_RERUNS = 1


def run_pytest(tmp: Path, *flags: str) -> tuple[bytes, bytes]:
    """A real pytest session over SUBJECT: (JUnit XML, report-log)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "test_subject.py").write_text(SUBJECT)
    (tmp / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--junitxml={tmp / 'junit.xml'}", f"--report-log={tmp / 'report.jsonl'}",
         *flags, "test_subject.py"],
        cwd=tmp, env=env, capture_output=True, check=False, timeout=300)
    return (tmp / "junit.xml").read_bytes(), (tmp / "report.jsonl").read_bytes()


def junit_counts(xml: bytes) -> dict[str, int]:
    """{tests, failures, errors, skipped} summed over the <testsuite>s that hold test
    cases, as the file states them."""
    root = ET.fromstring(xml)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for s in suites:
        if s.find("testcase") is None:
            continue
        for k in out:
            out[k] += int(s.get(k, "0"))
    return out


def etree_count(xml: bytes) -> dict[str, int]:
    """An independent count with xml.etree: each (classname, name) once, by its last
    <testcase> element; a Surefire flaky test passed."""
    last: dict[tuple[str, str], ET.Element] = {}
    for tc in ET.fromstring(xml).iter("testcase"):
        last[tc.get("classname", ""), tc.get("name", "")] = tc
    out = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for tc in last.values():
        out["tests"] += 1
        for tag, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            if tc.find(tag) is not None:
                out[key] += 1
                break
    return out


async def post(client: Client, kind: str, body: bytes, **attrs: str) -> Any:
    query = "&".join(f"{k}={quote(v)}" for k, v in attrs.items())
    ctype = "application/xml" if kind == "junit" else "application/x-ndjson"
    return await client.request("POST", f"/api/test/{kind}?{query}", data=body,
                                content_type=ctype)


async def summary(client: Client, run_id: str, last: int) -> dict[str, int]:
    reply = await client.get(f"/api/test/db/run/{quote(run_id, safe='')}?min_seq={last}")
    assert reply.status == 200, reply.body
    return reply.json()["results"]


def check_against_junit(results: dict[str, int], counts: dict[str, int]) -> None:
    assert results["total"] == counts["tests"]
    assert results["failed"] == counts["failures"]
    assert results["error"] == counts["errors"]
    assert results["skipped"] + results["xfailed"] == counts["skipped"]


@pytest.mark.parametrize("flags", [(), ("--reruns", "2"), ("-n", "2"),
                                   ("--reruns", "2", "-n", "2")],
                         ids=["plain", "reruns", "xdist", "reruns+xdist"])
def test_real_pytest_reports(tmp_path: Path, make_server: Any, flags: tuple[str, ...]) -> None:
    xml, reportlog = run_pytest(tmp_path / "session", *flags)
    counts = junit_counts(xml)
    assert counts["tests"] == N_TESTS

    async def main() -> None:
        async with make_server() as client:
            got = {}
            for kind, body in (("junit", xml), ("reportlog", reportlog)):
                reply = await post(client, kind, body, run_id=kind, tag="commit:abc")
                assert reply.status == 202, reply.body
                got[kind] = await summary(client, kind, reply.json()["last_seq"])
            # Both reports of one session agree with the XML's own attributes.
            check_against_junit(got["junit"], counts)
            check_against_junit(got["reportlog"], counts)
            assert got["reportlog"]["xfailed"] == 1 and got["reportlog"]["xpassed"] == 1
            reruns = "--reruns" in flags
            for kind in ("junit", "reportlog"):
                assert got[kind]["retried"] == (RETRIED_WITH_RERUNS if reruns else 0), kind
                assert got[kind]["flaky"] == (FLAKY_WITH_RERUNS if reruns else 0), kind
            # The report-log names the xdist worker of each attempt.
            page = (await client.get("/api/test/db/run/reportlog/results?limit=1000")).json()
            workers = {r["worker"] for r in page["items"]}
            assert workers == ({"gw0", "gw1"} if "-n" in flags else {None}) or (
                "-n" in flags and workers <= {"gw0", "gw1"} and None not in workers)
            # The same report again adds nothing.
            before = await summary(client, "junit", 0)
            reply = await post(client, "junit", xml, run_id="junit", tag="commit:abc")
            assert reply.status == 202
            assert await summary(client, "junit", reply.json()["last_seq"]) == before
            total = (await client.get("/api/test/db/run/junit/results?limit=1000")).json()
            assert total["total"] == len(ET.fromstring(xml).findall(".//testcase"))

    asyncio.run(main())


@pytest.mark.parametrize("name", ["surefire.xml", "jenkins.xml", "go-junit-report.xml"])
def test_hand_written_dialects(make_server: Any, name: str) -> None:
    xml = (DATA / name).read_bytes()
    counts = etree_count(xml)
    if name != "go-junit-report.xml":  # go-junit-report writes no skipped attribute
        assert junit_counts(xml) == counts, "the sample's attributes match its cases"

    async def main() -> None:
        async with make_server() as client:
            reply = await post(client, "junit", xml, run_id=name)
            assert reply.status == 202, reply.body
            results = await summary(client, name, reply.json()["last_seq"])
            check_against_junit(results, counts)
            attempts = (await client.get(
                f"/api/test/db/run/{name}/results?limit=1000")).json()["items"]
            if name == "surefire.xml":
                # divides: flakyFailure, flakyError, then a pass; multiplies: failure and
                # two rerunFailures; connects: error and a rerunError.
                by_test: dict[str, list[tuple[int, str]]] = {}
                for r in attempts:
                    by_test.setdefault(r["test"].rsplit(".", 1)[1], []).append(
                        (r["attempt"], r["outcome"]))
                assert sorted(by_test["divides"]) == [(1, "failed"), (2, "error"), (3, "passed")]
                assert sorted(by_test["multiplies"]) == [(1, "failed"), (2, "failed"),
                                                          (3, "failed")]
                assert sorted(by_test["connects"]) == [(1, "error"), (2, "error")]
                assert results["retried"] == 3 and results["flaky"] == 1
            if name == "jenkins.xml":  # nested suites; "1,200.25" style times
                durations = {r["test"]: r["duration_s"] for r in attempts}
                assert durations["api.orders.list"] == 600.25
                run = (await client.get("/api/test/db/run/jenkins.xml")).json()
                assert run["duration_s"] == pytest.approx(1234.5)
            if name == "go-junit-report.xml":
                assert any(r["test"] == "example.com/net.[build failed]"
                           and r["outcome"] == "error" for r in attempts)

    asyncio.run(main())


# -- hostile and malformed files ---------------------------------------------------

SAMPLE = (DATA / "jenkins.xml").read_bytes()
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<testsuite name="&lol4;"><testcase name="t"/></testsuite>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE t [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuite name="s"><testcase name="t"><failure>&xxe;</failure></testcase></testsuite>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite SYSTEM "http://127.0.0.1:9/junit.dtd">
<testsuite name="s"><testcase name="t"/></testsuite>"""


def _case(attrs: str = "", inner: str = "", suite: str = "") -> bytes:
    return (f'<testsuite name="s" {suite}><testcase classname="c" name="t" {attrs}>'
            f"{inner}</testcase></testsuite>").encode()


REPORT_LINE = (b'{"$report_type": "TestReport", "nodeid": "a.py::t", "when": "call", '
               b'"outcome": "passed", "duration": 0.5}')
# (id, route, body, a fragment the error message must hold)
HOSTILE = [
    ("not-xml", "junit", b"hello, world\n", "is not JUnit XML"),
    ("empty", "junit", b"", "is not JUnit XML"),
    ("truncated", "junit", SAMPLE[: len(SAMPLE) // 2], "not well-formed XML"),
    ("mismatched-tags", "junit", b"<testsuite><testcase name='t'></testsuite>",
     "not well-formed XML"),
    ("billion-laughs", "junit", LAUGHS, "refused"),
    ("external-entity", "junit", XXE, "refused"),
    ("external-dtd", "junit", EXTERNAL_DTD, "refused"),
    ("wrong-root", "junit", b"<html><body>hi</body></html>", "root element is <html>"),
    ("negative-time", "junit", _case('time="-1.5"'), "negative"),
    ("nan-time", "junit", _case('time="NaN"'), "not a number"),
    ("word-time", "junit", _case('time="fast"'), "not a number"),
    ("bad-timestamp", "junit", _case(suite='timestamp="yesterday"'), "not an ISO 8601"),
    ("no-name", "junit", b'<testsuite><testcase classname="c"/></testsuite>', "has no name"),
    ("no-cases", "junit", b"<testsuites><testsuite name='s'/></testsuites>", "no test cases"),
    ("name-too-long", "junit", _case().replace(b'name="t"', b'name="' + b"t" * 1100 + b'"'),
     "test"),
    ("reportlog-as-junit", "junit", REPORT_LINE + b"\n", "is not JUnit XML"),
    ("xml-as-reportlog", "reportlog", SAMPLE, "is not a pytest report-log"),
    ("reportlog-bad-json", "reportlog", REPORT_LINE + b"\n{not json\n", "line 2"),
    ("reportlog-no-type", "reportlog", REPORT_LINE + b'\n{"nodeid": "x"}\n', "$report_type"),
    ("reportlog-bad-outcome", "reportlog",
     REPORT_LINE.replace(b'"passed"', b'"sideways"'), "passed, failed, skipped, rerun"),
    ("reportlog-negative-duration", "reportlog", REPORT_LINE.replace(b"0.5", b"-2"),
     "duration"),
    ("reportlog-no-nodeid", "reportlog", REPORT_LINE.replace(b'"nodeid": "a.py::t", ', b""),
     "nodeid"),
    ("suites-nested-3000-deep", "junit",
     b"<testsuite>" * 3000 + b'<testcase name="t"/>' + b"</testsuite>" * 3000,
     "nests more than"),
]


def test_hostile_files_are_rejected_whole(make_server: Any) -> None:
    assert len(HOSTILE) >= 15

    async def main() -> None:
        async with make_server() as client:
            for name, kind, body, fragment in HOSTILE:
                before = client.event_log.last_seq
                reply = await post(client, kind, body, run_id=name)
                assert reply.status == 400, (name, reply.status, reply.body[:300])
                error = reply.json()["error"]
                assert error["code"] == "invalid_events", name
                text = error["message"] + " " + " ".join(
                    d.get("message", "") for d in error["details"])
                assert fragment in text, (name, text)
                assert client.event_log.last_seq == before, f"{name}: something was appended"

    asyncio.run(main())


def test_a_report_over_the_routes_limit_is_a_413(make_server: Any) -> None:
    """The routes take 8 MiB (docs/tests.md): parsing holds ~25x a report's bytes."""
    case = b'<testcase classname="c" name="t%d"/>'
    body = b"<testsuite>" + b"".join(case % i for i in range(300_000)) + b"</testsuite>"
    assert len(body) > 8 * 1024 * 1024

    async def main() -> None:
        async with make_server() as client:
            before = client.event_log.last_seq
            reply = await client.request("POST", "/api/test/junit?run_id=big",
                                         data=io.BytesIO(body), content_type="application/xml")
            assert reply.status == 413, reply.body[:300]
            assert client.event_log.last_seq == before

    asyncio.run(main())


def test_an_odd_longrepr_is_kept_as_text(make_server: Any) -> None:
    """`longrepr` shapes pytest never writes (a traceback that is a string, entries
    whose data is not an object) are the client's to send: imported, not a 500."""
    odd = [{"reprtraceback": "x"}, {"reprtraceback": {"reprentries": [{"data": "y"}]}},
           {"reprcrash": "z", "reprtraceback": None}]

    async def main() -> None:
        async with make_server() as client:
            for i, longrepr in enumerate(odd):
                line = {"$report_type": "TestReport", "nodeid": f"a.py::t{i}",
                        "when": "call", "outcome": "failed", "duration": 0.1,
                        "longrepr": longrepr}
                reply = await post(client, "reportlog", json.dumps(line).encode() + b"\n",
                                   run_id=f"odd{i}")
                assert reply.status == 202, (longrepr, reply.body[:300])

    asyncio.run(main())


def test_a_report_line_names_the_bad_line(make_server: Any) -> None:
    body = REPORT_LINE + b"\n" + REPORT_LINE.replace(b"0.5", b"-2") + b"\n"

    async def main() -> None:
        async with make_server() as client:
            reply = await post(client, "reportlog", body)
            assert reply.status == 400
            assert reply.json()["error"]["details"][0]["line"] == 2
            assert reply.json()["error"]["details"][0]["field"] == "duration"

    asyncio.run(main())


def test_huge_system_out_is_refused_before_parsing(tmp_path: Path) -> None:
    """100 MB of <system-out>: made here, never committed."""
    path = tmp_path / "huge.xml"
    with open(path, "wb") as f:
        f.write(b'<testsuite name="s"><testcase name="t"><system-out>')
        chunk = b"x" * (1 << 20)
        for _ in range(100):
            f.write(chunk)
        f.write(b"</system-out></testcase></testsuite>")
    assert path.stat().st_size > MAX_REPORT_BYTES
    with pytest.raises(InvalidEvents, match="at most"):
        load_file(path)


def test_long_output_is_kept_bounded(tmp_path: Path) -> None:
    out = "line\n" * 100_000
    path = tmp_path / "long.xml"
    path.write_bytes(_case(inner=f"<failure message='m'>boom</failure>"
                                 f"<system-out>{out}</system-out>"))
    (event,) = [e for e in load_file(path) if e.__class__.__name__ == "ResultEvent"]
    assert event.outcome == "failed"  # type: ignore[attr-defined]
    assert len(event.message) < 16_384  # type: ignore[attr-defined]
    assert "left out" in event.message  # type: ignore[attr-defined]


# -- the command line and the watched folder ---------------------------------------


def test_cli_ingest_detects_reports_by_content(tmp_path: Path) -> None:
    xml, reportlog = run_pytest(tmp_path / "session")
    named_oddly = tmp_path / "pytest-output.txt"  # a report-log, whatever its name
    named_oddly.write_bytes(reportlog)
    xml_path = tmp_path / "junit.xml"
    xml_path.write_bytes(xml)
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "runlake", "ingest", "--data", str(data), "--run-id", "r1",
           "--tag", "commit:abc", str(xml_path), str(named_oddly)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "junit.xml:" in done.stdout and "pytest-output.txt:" in done.stdout
    again = subprocess.run(cmd[:-2] + [str(xml_path)], capture_output=True, text=True,
                           timeout=300, check=False)
    assert again.returncode == 0, again.stderr

    async def main() -> None:
        from tests.helpers.server import make_server

        async with make_server(tmp_path, data=data) as client:
            results = await summary(client, "r1", client.event_log.last_seq)
            # Two reports of one session into one run: each test once by its last
            # attempt in each (the JUnit file names tests otherwise than node ids).
            assert results["total"] == 2 * N_TESTS
            assert results["skipped"] + results["xfailed"] == 2 * junit_counts(xml)["skipped"]

    asyncio.run(main())


def test_watched_folder_takes_xml_and_reportlog(tmp_path: Path) -> None:
    xml, reportlog = run_pytest(tmp_path / "session")

    async def main() -> None:
        from tests.helpers.server import make_server

        async with make_server(tmp_path, inbox=True) as client:
            inbox = tmp_path / "data" / "inbox"
            inbox.mkdir(parents=True, exist_ok=True)
            (inbox / ".junit.xml.tmp").write_bytes(xml)
            os.rename(inbox / ".junit.xml.tmp", inbox / "junit.xml")
            (inbox / ".report.jsonl.tmp").write_bytes(reportlog)
            os.rename(inbox / ".report.jsonl.tmp", inbox / "report.jsonl")
            done = inbox / ".done"
            for _ in range(1200):
                if (done / "junit.xml").exists() and (done / "report.jsonl").exists():
                    break
                await asyncio.sleep(0.1)
            assert (done / "junit.xml").exists() and (done / "report.jsonl").exists(), (
                list(inbox.rglob("*")))
            last = client.event_log.last_seq
            runs = (await client.get(f"/api/test/db/runs?min_seq={last}&limit=10")).json()
            assert runs["total"] == 2
            for run in runs["items"]:
                results = await summary(client, run["run_id"], last)
                check_against_junit(results, junit_counts(xml))

    asyncio.run(main())


@pytest.mark.parametrize(("text", "seconds"), [
    ("0.012", 0.012), (".5", 0.5), ("12", 12.0), ("1,5", 1.5), ("1,234.5", 1234.5),
    ("1.234,5", 1234.5), ("1 234.5", 1234.5), ("1,234,567", 1234567.0), (" 2.5 ", 2.5),
    ("", None)])
def test_junit_times_in_any_locale(text: str, seconds: float | None) -> None:
    from runlake.ingest.junit import parse_time

    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["-1", "-0,5", "NaN", "inf", "1e3", "fast", "2000000000"])
def test_junit_times_refused(text: str) -> None:
    from runlake.ingest.junit import parse_time

    with pytest.raises(ValueError):
        parse_time(text)
