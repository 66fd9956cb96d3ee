"""The pytest plugin on a sample suite, in real pytest subprocesses, checked against
pytest's own JUnit XML of the same session; and with the server down."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_helpers import all_items, free_port, get_json, log_seq
from helpers.server import ThreadedServer, serve_in_thread

SUITE = '''
import os
from pathlib import Path

import pytest


def test_pass():
    pass


@pytest.mark.parametrize("i", range(6))
def test_many(i):
    assert i >= 0


def test_fail():
    assert 1 == 2, "one is not two"


@pytest.mark.skip(reason="not today")
def test_skip():
    pass


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="maybe fixed")
def test_xpass():
    pass


@pytest.fixture
def broken():
    raise RuntimeError("setup broke")


def test_setup_error(broken):
    pass


@pytest.mark.flaky(reruns=2)
def test_flaky():
    marker = Path(os.environ["FLAKY_DIR"]) / "failed-once"
    if not marker.exists():
        marker.touch()
        assert False, "first attempt fails"
'''
# Outcomes of the last attempt of each test, as the suite above is written.
EXPECTED = {"test_pass": "passed", **{f"test_many[{i}]": "passed" for i in range(6)},
            "test_fail": "failed", "test_skip": "skipped", "test_xfail": "xfailed",
            "test_xpass": "xpassed", "test_setup_error": "error", "test_flaky": "passed"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with serve_in_thread(tmp_path_factory.mktemp("plugin-server")) as srv:
        yield srv


def run_suite(tmp_path: Path, name: str, *args: str,
              env: dict[str, str] | None = None) -> tuple[int, Path]:
    """pytest on a fresh copy of the sample suite; (exit code, its JUnit XML)."""
    suite = tmp_path / name
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")  # not runlake's own settings
    (suite / "test_sample.py").write_text(SUITE)
    (suite / "flaky").mkdir()
    junit = suite / "junit.xml"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNLAKE_", "PYTEST_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         *args], cwd=suite, capture_output=True, text=True, timeout=300,
        env={**base, "FLAKY_DIR": str(suite / "flaky"), **(env or {})})
    assert junit.exists(), proc.stdout + proc.stderr
    return proc.returncode, junit


def junit_outcomes(junit: Path) -> dict[str, str]:
    """Each test's final outcome as pytest's JUnit XML reports it."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).iter("testcase"):
        kinds = {child.tag: child for child in case}
        if "error" in kinds:
            outcome = "error"
        elif "failure" in kinds:
            outcome = "failed"
        elif "skipped" in kinds:
            xfail = kinds["skipped"].get("type") == "pytest.xfail"
            outcome = "xfailed" if xfail else "skipped"
        else:
            outcome = "passed"
        outcomes[case.get("name", "")] = outcome
    return outcomes


def test_plugin_results_match_junit_under_xdist_and_reruns(server: ThreadedServer,
                                                           tmp_path: Path) -> None:
    url = server.client.url
    code, junit = run_suite(tmp_path, "suite", "-n", "2", f"--runlake={url}",
                            "--runlake-run-id=session-1", "--runlake-model=m1",
                            "--runlake-tag=suite=sample",
                            env={"RUNLAKE_SPOOL_DIR": str(tmp_path / "spool")})
    assert code == 1
    plain, _ = run_suite(tmp_path, "plain", "-n", "2")
    assert code == plain

    seq = log_seq(url)
    results = all_items(url, "/api/test/db/run/session-1/results", min_seq=seq)
    last: dict[str, dict[str, object]] = {}
    for r in sorted(results, key=lambda r: r["attempt"]):
        last[r["test"].split("::")[-1]] = r
    ours = {name: str(r["outcome"]) for name, r in last.items()}
    assert ours == EXPECTED
    theirs = junit_outcomes(junit)
    # JUnit has no xpassed: a non-strict xpass is a pass there.
    assert {k: "passed" if v == "xpassed" else v for k, v in ours.items()} == theirs
    flaky = [(r["attempt"], r["outcome"]) for r in results if r["test"].endswith("test_flaky")]
    assert sorted(flaky) == [(1, "failed"), (2, "passed")]
    assert all(str(r["worker"]).startswith("gw") for r in results)
    assert {r["file"] for r in results} == {"test_sample.py"}

    run = get_json(url, "/api/test/db/run/session-1", min_seq=seq)
    assert run["status"] == "failed" and run["model"] == "m1"
    assert run["tags"]["suite"] == "sample"
    counts = Counter(EXPECTED.values())
    summary = {k: run["results"][k] for k in ("total", *counts)}
    assert summary == {"total": len(EXPECTED), **counts}
    assert run["results"]["retried"] == 1 and run["results"]["flaky"] == 1
    metrics = {m["name"]: m["last"] for m in run["metrics"]}
    assert metrics["tests_total"] == len(EXPECTED)
    assert {k: metrics[f"tests_{k}"] for k in counts} == dict(counts)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("failures", -1)) == counts["failed"]
    assert int(suite.get("errors", -1)) == counts["error"]
    assert int(suite.get("skipped", -1)) == counts["skipped"] + counts["xfailed"]


def test_server_down_same_exit_code_and_results_spooled(server: ThreadedServer,
                                                        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    down = f"http://127.0.0.1:{free_port()}"
    env = {"RUNLAKE_URL": down, "RUNLAKE_SPOOL_DIR": str(spool), "RUNLAKE_EXIT_FLUSH_S": "2"}
    code, junit = run_suite(tmp_path, "down", "--runlake-run-id=session-down",
                            "--runlake-no-attempts", env=env)  # as for an older server
    plain, _ = run_suite(tmp_path, "plain", "-p", "no:runlake")
    assert code == plain == 1
    assert junit_outcomes(junit) == {k: "passed" if v == "xpassed" else v
                                     for k, v in EXPECTED.items()}
    assert list(spool.glob("*.rlspool"))

    url = server.client.url
    sync = subprocess.run([sys.executable, "-m", "runlake_client.cli", "sync", str(spool),
                           "--url", url], capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert not list(spool.glob("*.rlspool"))
    run = get_json(url, "/api/test/db/run/session-down", min_seq=log_seq(url))
    assert run["status"] == "failed" and run["results"]["total"] == len(EXPECTED)
    results = all_items(url, "/api/test/db/run/session-down/results")
    assert len(results) == len(EXPECTED)  # the last attempts only, without attempt fields
    assert {(r["attempt"], r["worker"], r["file"]) for r in results} == {(1, None, None)}


def test_runlake_url_alone_is_enough_and_off_wins(tmp_path: Path) -> None:
    """RUNLAKE_URL switches the plugin on; `-p no:runlake` (what runlake's own suite
    sets) or `--runlake-off` keeps it off: nothing is spooled then."""
    spool = tmp_path / "spool"
    env = {"RUNLAKE_URL": f"http://127.0.0.1:{free_port()}", "RUNLAKE_SPOOL_DIR": str(spool),
           "RUNLAKE_EXIT_FLUSH_S": "0"}
    run_suite(tmp_path, "off1", "-p", "no:runlake", env=env)
    run_suite(tmp_path, "off2", "--runlake-off", env=env)
    assert not list(spool.glob("*.rlspool"))
    run_suite(tmp_path, "on", env=env)
    assert list(spool.glob("*.rlspool"))
