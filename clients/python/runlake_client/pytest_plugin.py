"""The pytest plugin: one run per session, one `result` event per test as it finishes.

Off unless `--runlake[=URL]` is given or `RUNLAKE_URL` is set (`-p no:runlake` or
`--runlake-off` turns it off whatever the environment says). Under pytest-xdist only
the controller reports; under pytest-rerunfailures each attempt is a result with its
`attempt` (`--runlake-no-attempts` for a server older than log schema 2: then only
the last attempt is sent). Nothing the plugin does can change the session's outcome or
exit code: every hook swallows its own errors, and what the server cannot take is
spooled.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from typing import Any

import pytest

from .client import Client, Run

log = logging.getLogger("runlake_client")
MAX_MESSAGE_CHARS = 4000
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")
# CI run ids, first found wins; a CI re-run of the same job gets its attempt appended.
CI_RUN_IDS = (("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT"), ("CI_JOB_ID", None),
              ("BUILDKITE_JOB_ID", None), ("BUILD_TAG", None), ("CIRCLE_WORKFLOW_JOB_ID", None))
CI_COMMITS = ("GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "GIT_COMMIT", "CIRCLE_SHA1")
CI_BRANCHES = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME",
               "BUILDKITE_BRANCH", "GIT_BRANCH", "CIRCLE_BRANCH")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runlake", "report the session to runlake")
    group.addoption("--runlake", nargs="?", const="", default=None, metavar="URL",
                    help="report to runlake (URL default: RUNLAKE_URL or the local server)")
    group.addoption("--runlake-off", action="store_true", help="do not report, even with "
                    "RUNLAKE_URL set")
    group.addoption("--runlake-component", default="test", help="component (default: test)")
    group.addoption("--runlake-run-id", help="run id (default: the CI job's, or a new one)")
    group.addoption("--runlake-model", help="the run's model")
    group.addoption("--runlake-hardware", help="the run's hardware")
    group.addoption("--runlake-batch", help="the run's batch id")
    group.addoption("--runlake-tag", action="append", default=[], metavar="KEY=VALUE",
                    help="a tag for the run (repeatable)")
    group.addoption("--runlake-no-attempts", action="store_true",
                    help="for a server older than log schema 2: send only each test's last "
                         "attempt, without `attempt`, `file` and `worker`")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    url = config.getoption("runlake")
    if config.getoption("runlake_off") or (url is None and not os.environ.get("RUNLAKE_URL")):
        return
    try:
        reporter = Reporter(config, url or None)
    except Exception as e:  # a bad setting must not stop the tests
        log.warning("runlake-client: the pytest plugin is off: %r", e)
        return
    config.pluginmanager.register(reporter, "runlake-reporter")


def ci_run_id() -> str:
    for var, attempt in CI_RUN_IDS:
        if os.environ.get(var):
            suffix = os.environ.get(attempt or "", "")
            return os.environ[var] + (f"-{suffix}" if suffix else "")
    return uuid.uuid4().hex


def git_facts(cwd: str) -> dict[str, str]:
    """commit and branch: the CI's variables, else git's own answer (if git is there)."""
    facts: dict[str, str] = {}
    for key, names in (("commit", CI_COMMITS), ("branch", CI_BRANCHES)):
        value = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if value is None:
            args = ["rev-parse", "HEAD"] if key == "commit" else ["branch", "--show-current"]
            try:
                value = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                       timeout=5).stdout.strip() or None
            except (OSError, subprocess.SubprocessError):
                value = None
        if value:
            facts[key] = value
    return facts


class Reporter:
    def __init__(self, config: pytest.Config, url: str | None) -> None:
        self.config = config
        self.client = Client(url, component=config.getoption("runlake_component"))
        self.run: Run = self.client.run(config.getoption("runlake_run_id") or ci_run_id())
        self.attempts_supported = not config.getoption("runlake_no_attempts")
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.attempts: dict[str, int] = {}
        self.phases: dict[str, list[Any]] = {}
        self.started = time.monotonic()

    def _safe(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # the plugin never breaks the session
            log.warning("runlake-client: %s failed: %r", what, e)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._safe("session start", self._start, session)

    def _start(self, session: pytest.Session) -> None:
        c = self.config
        self.run.set(model=c.getoption("runlake_model"),
                     hardware=c.getoption("runlake_hardware"),
                     batch_id=c.getoption("runlake_batch"),
                     name=" ".join(c.invocation_params.args)[:256] or "pytest")
        for key, value in git_facts(str(c.rootpath)).items():
            self.run.tag(key, value)
        for pair in c.getoption("runlake_tag"):
            key, _, value = pair.partition("=")
            self.run.tag(key, value)
        self.run.start()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._safe("result", self._report, report)

    def _report(self, report: pytest.TestReport) -> None:
        phases = self.phases.setdefault(report.nodeid, [])
        phases.append(report)
        if report.when != "teardown":  # an attempt ends with its teardown, a rerun's too
            return
        del self.phases[report.nodeid]
        attempt = self.attempts.get(report.nodeid, 0) + 1
        self.attempts[report.nodeid] = attempt
        outcome, message = outcome_of(phases)
        final = outcome != "rerun"
        if outcome == "rerun":
            outcome = "failed"
        if final:
            self.counts[outcome] += 1
        extra: dict[str, Any] = {}
        if self.attempts_supported:
            extra["attempt"] = attempt
            extra["file"] = report.location[0][:1024]
            worker = getattr(getattr(report, "node", None), "gateway", None)
            if worker is not None:
                extra["worker"] = worker.id
        elif not final:
            return  # without `attempt`, an earlier attempt would count as a second test
        duration = sum(r.duration for r in phases)
        self.run.result(report.nodeid[:1024], outcome, duration_s=max(duration, 0.0),
                        message=message, **extra)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._safe("session finish", self._finish, int(exitstatus))

    def _finish(self, exitstatus: int) -> None:
        for phases in self.phases.values():  # interrupted mid-test: report what ran
            outcome, message = outcome_of(phases)
            outcome = "failed" if outcome == "rerun" else outcome
            self.counts[outcome] += 1
            self.run.result(phases[0].nodeid[:1024], outcome, message=message)
        self.phases.clear()
        self.run.metric("tests_total", sum(self.counts.values()))
        for outcome, n in self.counts.items():
            self.run.metric(f"tests_{outcome}", n)
        self.run.metric("session_duration_s", time.monotonic() - self.started, unit="s")
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.run.cancel("interrupted")
        elif exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            self.run.complete()
        else:
            self.run.fail(f"pytest exit status {exitstatus}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._safe("close", self.client.close)


def outcome_of(phases: list[Any]) -> tuple[str, str | None]:
    """One test's outcome from its setup/call/teardown reports (pytest's own rules)."""
    message = None
    outcome = "passed"
    for r in phases:
        xfail = hasattr(r, "wasxfail")
        if r.outcome == "rerun":
            outcome, message = "rerun", _message(r)
        elif r.failed:
            if r.when == "call":  # a strict xfail that passed fails too, as in JUnit
                outcome, message = "failed", _message(r)
            elif outcome in ("passed", "xpassed", "xfailed", "skipped") or r.when == "setup":
                outcome, message = "error", _message(r)
        elif r.skipped:
            outcome = "xfailed" if xfail else "skipped"
            message = r.wasxfail if xfail else _message(r)
        elif r.when == "call" and r.passed and xfail:
            outcome = "xpassed"
    return outcome, (message[:MAX_MESSAGE_CHARS] if message else None)


def _message(report: Any) -> str | None:
    if report.longrepr is None:
        return None
    if isinstance(report.longrepr, tuple):  # skip: (path, line, reason)
        return str(report.longrepr[2])
    return str(report.longreprtext)
