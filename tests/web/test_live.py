"""Live pages in a real browser over the real stream (GET /api/stream): a run posted
while the runs page is open appears at the top without a reload; a shown run's status
changes in its row, in place (the row is not redrawn); home's feed lists runs changing
status; a running run's page follows it. The browser waits for the DOM (Playwright's
expect, generous timeout), never a sleep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from helpers.server import ThreadedServer, serve_in_thread
from playwright.sync_api import Browser, Page, expect

from runlake.web.pages import OPTIONAL_ROUTES, optional_routes
from web.browser import Console, new_page
from web.lake import Run, _iso, events, make_runs, now_utc

LIVE = 15_000  # ms: a guard for a loaded machine; the page redraws within a second


class Lake:
    def __init__(self, server: ThreadedServer, runs: list[Run]) -> None:
        self.server = server
        self.url = server.client.url
        self.runs = runs

    def post(self, evs: list[dict[str, Any]]) -> int:
        reply = self.server.run(self.server.client.post_events(evs))
        assert reply.status == 202, reply.body
        return int(msgspec.json.decode(reply.body)["last_seq"])


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    now = now_utc()
    runs = make_runs(now)
    with serve_in_thread(tmp_path_factory.mktemp("live")) as server:
        lake = Lake(server, runs)
        last = lake.post(events(runs, now))
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield lake


def open_live(browser: Browser, console: Console, url: str) -> Page:
    """A page drawn and following the stream (its `caught_up` came): what is posted
    from now on reaches it."""
    page = new_page(browser, console)
    page.goto(url)
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    return page


def run_ids(page: Page) -> list[str]:
    return page.locator("[data-testid=runs-table] tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.run)")


def test_the_shell_lists_every_optional_route_of_the_real_server(lake: Lake) -> None:
    app = lake.server.client.app
    assert app is not None
    assert optional_routes(app) == list(OPTIONAL_ROUTES)


def test_runs_page_shows_new_runs_and_status_changes_live(lake: Lake, browser: Browser,
                                                          console: Console) -> None:
    alpha = sorted((r for r in lake.runs if r.component == "alpha"), key=lambda r: r.created)
    page = open_live(browser, console, lake.url + "/runs?component=alpha")
    assert run_ids(page)[0] == alpha[-1].run_id
    total = len(alpha)
    expect(page.get_by_test_id("page-info")).to_contain_text(f"of {total}")

    # A new run, newer than every other: at the top, no reload.
    page.evaluate("window.notReloaded = true")
    t = now_utc() + timedelta(seconds=5)
    lake.post([{"type": "run", "component": "alpha", "run_id": "fresh", "model": "m1",
                "hardware": "h1", "ts": _iso(t)},
               {"type": "status", "component": "alpha", "run_id": "fresh",
                "status": "running", "ts": _iso(t)}])
    expect(page.locator("[data-testid=runs-table] tbody tr").first).to_have_attribute(
        "data-run", "fresh", timeout=LIVE)
    expect(page.get_by_test_id("page-info")).to_contain_text(f"of {total + 1}")
    expect(page.locator("tr[data-run=fresh] td[data-field=status]")).to_have_text("running")
    assert page.evaluate("window.notReloaded") is True

    # A status change of a shown run: its row changes in place (the marked row stays).
    target = alpha[-2]
    assert target.status != "failed"
    row = page.locator(f"tr[data-run={target.run_id}]")
    row.evaluate("r => { r.dataset.mark = 'kept'; }")
    lake.post([{"type": "status", "component": "alpha", "run_id": target.run_id,
                "status": "failed", "error": "live", "ts": _iso(t + timedelta(seconds=1))}])
    expect(row.locator("td[data-field=status]")).to_have_text("failed", timeout=LIVE)
    expect(row).to_have_attribute("data-mark", "kept")
    assert run_ids(page)[0] == "fresh"
    page.context.close()


def test_home_feed_lists_runs_changing_status(lake: Lake, browser: Browser,
                                              console: Console) -> None:
    page = open_live(browser, console, lake.url + "/")
    runs_before = int(page.get_by_test_id("total-runs").inner_text())
    t = now_utc() + timedelta(seconds=10)
    lake.post([{"type": "status", "component": "beta", "run_id": "b01", "status": "cancelled",
                "ts": _iso(t)},
               {"type": "run", "component": "beta", "run_id": "b-new", "model": "m1",
                "ts": _iso(t)}])
    feed = page.get_by_test_id("live-feed")
    expect(feed.locator("li[data-run='beta/b01']")).to_have_attribute(
        "data-status", "cancelled", timeout=LIVE)
    expect(feed.locator("li[data-run='beta/b-new']")).to_have_attribute("data-status", "pending")
    expect(page.get_by_test_id("total-runs")).to_have_text(str(runs_before + 1), timeout=LIVE)
    page.context.close()


def test_run_detail_follows_a_running_run(lake: Lake, browser: Browser,
                                          console: Console) -> None:
    running = next(r for r in lake.runs if r.component == "alpha" and r.status == "running")
    page = open_live(browser, console, f"{lake.url}/run/alpha/{running.run_id}")
    expect(page.locator("dd[data-field=status]")).to_have_text("running")
    t = now_utc() + timedelta(seconds=20)
    lake.post([{"type": "metric", "component": "alpha", "run_id": running.run_id,
                "name": "late", "value": 42.0, "ts": _iso(t)},
               {"type": "status", "component": "alpha", "run_id": running.run_id,
                "status": "completed", "ts": _iso(t)}])
    expect(page.locator("dd[data-field=status]")).to_have_text("completed", timeout=LIVE)
    expect(page.locator("tr[data-metric=late] [data-field=last]")).to_have_text("42")
    page.context.close()


def test_batches_page_follows_progress(lake: Lake, browser: Browser, console: Console) -> None:
    page = open_live(browser, console, lake.url + "/batches?component=alpha")
    finished = page.locator("tr[data-batch=b1] [data-field=finished]")
    before = int(finished.inner_text())
    t = now_utc() + timedelta(seconds=30)
    base = {"component": "alpha", "run_id": "late-in-b1"}
    lake.post([{**base, "type": "run", "batch_id": "b1", "ts": _iso(t)},
               {**base, "type": "status", "status": "completed", "ts": _iso(t)}])
    expect(finished).to_have_text(str(before + 1), timeout=LIVE)
    expected = 5  # the batch event's expected_count (web/lake.py)
    expect(page.locator("tr[data-batch=b1] [data-field=progress]")).to_have_text(
        f"{100 * (before + 1) / expected:.1f}%")
    page.context.close()
