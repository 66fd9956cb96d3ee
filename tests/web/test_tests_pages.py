"""The tests pages in a real browser: flaky and failing top lists, a test's page with its
history strip, reached from a run's results. Every figure is computed here in plain
Python from a hand-made history (docs/tests.md's definitions), never read from the API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.server import serve_in_thread
from playwright.sync_api import Browser, expect

from web.browser import Console, new_page
from web.lake import _iso, now_utc

FAIL = {"failed", "error"}
# run -> (commit, [(test, [outcome of attempt 1, 2, …])])
HISTORY: dict[str, tuple[str, list[tuple[str, list[str]]]]] = {
    "run1": ("c1", [("t_flaky", ["failed", "passed"]), ("t_fail", ["failed"]),
                    ("t_ok", ["passed"]), ("tests/a.py::t[1]", ["passed"])]),
    "run2": ("c1", [("t_flaky", ["passed"]), ("t_fail", ["failed"]), ("t_ok", ["passed"])]),
    "run3": ("c2", [("t_flaky", ["error", "error"]), ("t_fail", ["passed"]),
                    ("t_ok", ["passed"])]),
    "run4": ("c3", [("t_flaky", ["failed", "failed", "passed"]), ("t_fail", ["error"]),
                    ("t_ok", ["skipped"])]),
}


def history_events() -> list[dict[str, Any]]:
    t = now_utc() - timedelta(hours=1)
    evs: list[dict[str, Any]] = []
    for n, (run, (commit, tests)) in enumerate(HISTORY.items()):
        base = {"component": "ci", "run_id": run}
        start = t + timedelta(minutes=10 * n)
        evs += [{**base, "type": "run", "model": "m", "ts": _iso(start)},
                {**base, "type": "tag", "key": "commit", "value": commit, "ts": _iso(start)}]
        k = 0
        for test, outcomes in tests:
            for attempt, outcome in enumerate(outcomes, 1):
                k += 1
                evs.append({**base, "type": "result", "test": test, "outcome": outcome,
                            "attempt": attempt, "ts": _iso(start + timedelta(seconds=k))})
        last = {o[-1] for _, o in tests}
        evs.append({**base, "type": "status", "status": "failed" if last & FAIL else "completed",
                    "ts": _iso(start + timedelta(minutes=1))})
    return evs


def attempts(test: str) -> list[tuple[str, int, str]]:
    """(run, attempt, outcome) of every attempt, oldest first (the events' order)."""
    return [(run, a, o) for run, (_, tests) in HISTORY.items() for name, outs in tests
            if name == test for a, o in enumerate(outs, 1)]


def figures(test: str) -> dict[str, Any]:
    runs = [(run, commit, outs) for run, (commit, tests) in HISTORY.items()
            for name, outs in tests if name == test]
    lasts = [outs[-1] for _, _, outs in runs]
    counted = [o for o in lasts if o in {"passed"} | FAIL]
    pass_rate = lasts.count("passed") / len(counted) if counted else None
    mixed = lambda outs: "passed" in outs and bool(set(outs) & FAIL)  # noqa: E731
    commits: dict[str, list[str]] = {}
    for _, commit, outs in runs:
        commits.setdefault(commit, []).extend(outs)
    states = ["P" if o == "passed" else "F" for _, _, o in attempts(test)
              if o in {"passed"} | FAIL][-30:]
    flips = sum(a != b for a, b in zip(states, states[1:], strict=False))
    return {"runs": len(runs), "pass_rate": pass_rate,
            "flaky_runs": sum(mixed(outs) for _, _, outs in runs),
            "flaky_commits": sum(mixed(outs) for outs in commits.values()),
            "score": flips / (len(states) - 1) if len(states) > 1 else None,
            "failing": attempts(test)[-1][2] in FAIL, "attempts": len(attempts(test))}


def rate(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


TESTS = sorted({name for _, tests in HISTORY.values() for name, _ in tests})


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_in_thread(tmp_path_factory.mktemp("tests")) as server:
        reply = server.run(server.client.post_events(history_events()))
        assert reply.status == 202, reply.body
        last = msgspec.json.decode(reply.body)["last_seq"]
        assert server.run(server.client.get(f"/api/ci/db/tests?min_seq={last}")).status == 200
        yield server.client.url


def test_flaky_and_failing_lists(url: str, browser: Browser, console: Console,
                                 screenshots: Path) -> None:
    page = new_page(browser, console)
    page.goto(url + "/tests?component=ci")
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    flaky = [t for t in TESTS if figures(t)["flaky_runs"] or figures(t)["flaky_commits"]]
    failing = [t for t in TESTS if figures(t)["failing"]]
    assert flaky == ["t_flaky"] and failing == ["t_fail"]  # the history says so
    for testid, names in (("flaky-tests", flaky), ("failing-tests", failing)):
        rows = page.get_by_test_id(testid).locator("tbody tr")
        expect(rows).to_have_count(len(names))
        for name in names:
            f = figures(name)
            row = page.get_by_test_id(testid).locator(f"tr[data-test='{name}']")
            expect(row.locator("[data-field=runs]")).to_have_text(str(f["runs"]))
            expect(row.locator("[data-field=pass_rate]")).to_have_text(rate(f["pass_rate"]))
            expect(row.locator("[data-field=flaky_runs]")).to_have_text(str(f["flaky_runs"]))
            expect(row.locator("[data-field=flaky_commits]")).to_have_text(
                str(f["flaky_commits"]))
            expect(row.locator("[data-field=flakiness]")).to_have_text(rate(f["score"]))
    page.screenshot(path=str(screenshots / "tests.png"), full_page=True)
    page.context.close()


def test_a_tests_page_and_its_history_strip(url: str, browser: Browser, console: Console,
                                            screenshots: Path) -> None:
    page = new_page(browser, console)
    page.goto(url + "/run/ci/run4")
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    # One results row per attempt: each links to the test.
    page.get_by_test_id("results-table").get_by_role("link", name="t_flaky").first.click()
    expect(page).to_have_url(url + "/test/ci/t_flaky")
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("h1")).to_have_text("Test t_flaky")
    f = figures("t_flaky")
    expect(page.get_by_test_id("test-runs")).to_have_text(str(f["runs"]))
    expect(page.get_by_test_id("test-pass-rate")).to_have_text(rate(f["pass_rate"]))
    expect(page.get_by_test_id("test-flaky-runs")).to_have_text(str(f["flaky_runs"]))
    expect(page.get_by_test_id("test-flaky-commits")).to_have_text(str(f["flaky_commits"]))
    expect(page.get_by_test_id("test-flakiness")).to_have_text(rate(f["score"]))
    expect(page.get_by_test_id("test-attempts")).to_have_text(str(f["attempts"]))
    cells = page.get_by_test_id("history-strip").locator("li")
    expect(cells).to_have_count(f["attempts"])
    shown = cells.evaluate_all(
        "ls => ls.map(l => [l.dataset.run, Number(l.dataset.attempt), l.dataset.outcome])")
    assert [tuple(x) for x in shown] == attempts("t_flaky")  # oldest first
    page.screenshot(path=str(screenshots / "test.png"), full_page=True)

    # The last N only: the strip follows ?history=.
    page.get_by_label("Results shown").fill("3")
    page.get_by_role("button", name="Show").click()
    expect(cells).to_have_count(3)
    assert "history=3" in page.url
    assert [tuple(x) for x in cells.evaluate_all(
        "ls => ls.map(l => [l.dataset.run, Number(l.dataset.attempt), l.dataset.outcome])")] \
        == attempts("t_flaky")[-3:]

    # A name with slashes and brackets links to its own page.
    page.goto(url + "/run/ci/run1")
    page.get_by_test_id("results-table").get_by_role("link", name="tests/a.py::t[1]").click()
    expect(page.locator("h1")).to_have_text("Test tests/a.py::t[1]")
    expect(page.get_by_test_id("history-strip").locator("li")).to_have_count(1)
    page.context.close()
