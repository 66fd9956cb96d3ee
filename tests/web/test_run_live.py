"""A run's page while the run is posted to, in a real browser over the real stream: the
new status, steps, metric values and logs appear in place, without reading again what
cannot have changed (a long metric's buckets) and without losing what the reader did
(an open section, a typed filter, the focus). The browser waits for the DOM
(Playwright's expect, generous timeout), never a sleep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from helpers.server import ThreadedServer, serve_in_thread
from playwright.sync_api import Browser, Page, expect

from web.browser import Console, new_page
from web.lake import _iso, now_utc

LIVE = 15_000  # ms: a guard for a loaded machine; the page refreshes within a second
RUN = {"component": "live", "run_id": "r 1/ü"}  # characters a selector or URL must escape
LONG = 3000  # points: more than a chart draws, so its buckets are a read worth saving
LOSS = [0.9, 0.5, 0.3]


def first_events() -> list[dict[str, Any]]:
    t = now_utc() - timedelta(minutes=10)
    evs: list[dict[str, Any]] = [
        {**RUN, "type": "run", "model": "m1", "hardware": "h1", "ts": _iso(t)},
        {**RUN, "type": "status", "status": "running", "ts": _iso(t)},
        {**RUN, "type": "step", "step": "train", "status": "running", "progress": 0.2,
         "ts": _iso(t)},
        {**RUN, "type": "log", "level": "info", "message": "started", "ts": _iso(t)}]
    evs += [{**RUN, "type": "metric", "name": "loss", "value": v, "step": s,
             "ts": _iso(t + timedelta(seconds=s))} for s, v in enumerate(LOSS)]
    evs += [{**RUN, "type": "metric", "name": "long", "value": float(s % 13), "step": s,
             "ts": _iso(t)} for s in range(LONG)]
    return evs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with serve_in_thread(tmp_path_factory.mktemp("runlive")) as server:
        post(server, first_events())
        yield server


def post(server: ThreadedServer, evs: list[dict[str, Any]]) -> None:
    reply = server.run(server.client.post_events(evs))
    assert reply.status == 202, reply.body
    last = msgspec.json.decode(reply.body)["last_seq"]
    assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200


def open_live(browser: Browser, console: Console, url: str) -> Page:
    page = new_page(browser, console)
    page.goto(url)
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    return page


def test_run_page_refreshes_what_changed_and_keeps_the_readers_state(
        server: ThreadedServer, browser: Browser, console: Console) -> None:
    page = open_live(browser, console, server.client.url +
                     f"/run/{RUN['component']}/{quote(RUN['run_id'], safe='')}")
    long_chart = page.locator("figure[data-metric=long]")
    expect(long_chart).to_have_attribute("data-points", str(LONG))
    # The reader opens the raw events, types a metric filter and stays in the field.
    page.locator("summary", has_text="events (the first 100)").click()
    expect(page.get_by_test_id("raw-events")).to_contain_text('"type":"run"')
    page.get_by_label("Find a metric").fill("lo")
    long_chart.evaluate("f => { f.dataset.mark = 'kept'; }")
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url))

    t = now_utc() + timedelta(seconds=5)
    late = [{**RUN, "type": "metric", "name": "loss", "value": 0.125, "step": len(LOSS),
             "ts": _iso(t)},
            {**RUN, "type": "metric", "name": "lozenge", "value": 7.0, "ts": _iso(t)},
            {**RUN, "type": "metric", "name": "zeta", "value": 1.0, "ts": _iso(t)},
            {**RUN, "type": "step", "step": "train", "status": "completed", "progress": 1.0,
             "ts": _iso(t)},
            {**RUN, "type": "step", "step": "eval", "status": "running", "ts": _iso(t)},
            {**RUN, "type": "log", "level": "warning", "message": "posted live", "ts": _iso(t)},
            {**RUN, "type": "status", "status": "completed", "ts": _iso(t)}]
    post(server, late)

    expect(page.locator("dd[data-field=status]")).to_have_text("completed", timeout=LIVE)
    expect(page.locator("dd[data-field=events]")).to_have_text(
        str(len(first_events()) + len(late)), timeout=LIVE)
    expect(page.locator("tr[data-step=train] [data-field=status]")).to_have_text("completed")
    expect(page.locator("tr[data-step=eval] [data-field=status]")).to_have_text("running")
    loss = page.locator("tr[data-metric=loss]")
    expect(loss.locator("[data-field=count]")).to_have_text(str(len(LOSS) + 1))
    expect(loss.locator("[data-field=last]")).to_have_text("0.125")
    expect(page.locator("figure[data-metric=loss]")).to_have_attribute(
        "data-points", str(len(LOSS) + 1), timeout=LIVE)  # its chart read again
    expect(page.locator("tr[data-metric=lozenge]")).to_be_visible()  # new, matches "lo"
    expect(page.locator("tr[data-metric=zeta]")).to_be_hidden()  # new, filtered out
    expect(page.get_by_test_id("logs-table")).to_contain_text("posted live")

    # What the reader did is still there; the long metric's chart was neither read nor
    # drawn again (its count and last did not change).
    expect(page.locator("details[data-part=raw-events]")).to_have_attribute("open", "")
    expect(page.get_by_label("Find a metric")).to_have_value("lo")
    expect(page.get_by_label("Find a metric")).to_be_focused()
    expect(long_chart).to_have_attribute("data-mark", "kept")
    buckets = [u for u in reads if "/metrics/buckets" in u]
    assert not [u for u in buckets if "name=long" in u], buckets
    assert [u for u in buckets if "name=loss" in u], reads
    page.context.close()
