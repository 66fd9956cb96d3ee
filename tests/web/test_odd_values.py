"""Facet values and run ids holding any character (spaces, quotes, commas, unicode) in a
real browser against a real server: each facet checkbox has its own id, so a label
ticks its own box; a ticked value goes to the URL and to the API filter exactly as
listed; the compare page splits `run=component/run_id` at the first slash and reports a
value without one instead of inventing a component for it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import msgspec
import pytest
from helpers.server import serve_in_thread
from playwright.sync_api import Browser, Page, expect

from web.browser import Console, new_page
from web.lake import _iso, now_utc

# Values that differ only in characters an id would have to drop ("a b", "a_b", "a.b";
# "ü", "é"), a quote of each kind, and a comma (the API splits values on commas:
# "x,y" must not filter by "x" and "y").
MODELS = ["a b", "a_b", "a.b", "ü", "é", 'say "hi"', "it's", "x,y", "x", "y"]
ODD_IDS = ["x/y z", "ü+'&\"#?%"]  # a slash (the compare split), URL-special characters


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    now = now_utc()
    evs: list[dict[str, Any]] = []
    for i, model in enumerate(MODELS):
        for k in range(1 + i % 2):  # 1 or 2 runs per model
            evs.append({"type": "run", "component": "odd", "run_id": f"r{i}-{k}",
                        "model": model, "params": {"i": i},
                        "ts": _iso(now - timedelta(minutes=i + k))})
    for j, run_id in enumerate(ODD_IDS):
        evs.append({"type": "run", "component": "odd", "run_id": run_id, "model": "x",
                    "params": {"i": 100 + j}, "ts": _iso(now - timedelta(hours=1))})
    with serve_in_thread(tmp_path_factory.mktemp("odd")) as server:
        reply = server.run(server.client.post_events(evs))
        assert reply.status == 202, reply.body
        last = msgspec.json.decode(reply.body)["last_seq"]
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield server.client.url


def runs_of(models: set[str]) -> set[str]:
    """The run ids the fixture gave one of `models`, computed from its own loop."""
    out = {f"r{i}-{k}" for i, m in enumerate(MODELS) if m in models for k in range(1 + i % 2)}
    return out | ({*ODD_IDS} if "x" in models else set())


def shown_runs(page: Page) -> set[str]:
    return set(page.locator("[data-testid=runs-table] tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.run)"))


def open_runs(browser: Browser, console: Console, url: str) -> Page:
    page = new_page(browser, console)
    page.goto(url + "/runs?component=odd&limit=100")
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    return page


def test_facet_boxes_have_unique_ids_and_their_labels_tick_them(
        url: str, browser: Browser, console: Console) -> None:
    page = open_runs(browser, console, url)
    boxes = page.locator("[data-facet=model] input[type=checkbox]")
    expect(boxes).to_have_count(len(MODELS))
    # Every id on the page is unique, and each value's label is bound to its own box.
    ids = page.locator("[id]").evaluate_all("els => els.map(e => e.id)")
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    bound = page.locator("[data-facet=model] label").evaluate_all(
        "ls => ls.map(l => [l.firstChild.textContent, l.control && l.control.value])")
    assert sorted(map(tuple, bound)) == sorted((m, m) for m in MODELS)

    chosen = ["a.b", "é", 'say "hi"', "x,y"]
    for model in chosen:  # click the label, not the box
        page.locator("[data-facet=model] label").filter(
            has_text=re.compile("^" + re.escape(model) + r" \(")).click()
    checked = page.locator("[data-facet=model] input:checked").evaluate_all(
        "bs => bs.map(b => b.value)")
    assert sorted(checked) == sorted(chosen)
    page.get_by_role("button", name="Apply filters").click()
    # Applying loads a new page: wait for it (its URL holds the filter) before reading it.
    expect(page).to_have_url(re.compile(r"[?&]model="))
    expected = runs_of(set(chosen))
    expect(page.get_by_test_id("page-info")).to_have_text(f"1–{len(expected)} of {len(expected)}")
    expect(page.locator("[data-facet=model] input:checked")).to_have_count(len(chosen))
    assert sorted(parse_qs(urlsplit(page.url).query)["model"]) == sorted(chosen)
    assert shown_runs(page) == expected
    page.context.close()


def test_a_comma_in_a_value_filters_by_that_one_value(url: str, browser: Browser,
                                                      console: Console) -> None:
    page = open_runs(browser, console, url)
    page.goto(url + "/runs?" + urlencode({"component": "odd", "limit": "100", "model": "x,y"}))
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expected = runs_of({"x,y"})
    expect(page.get_by_test_id("page-info")).to_have_text(f"1–{len(expected)} of {len(expected)}")
    assert shown_runs(page) == expected
    box = page.locator("[data-facet=model] input:checked")
    expect(box).to_have_count(1)
    expect(box).to_have_value("x,y")
    page.context.close()


def test_compare_splits_at_the_first_slash_and_reports_a_bad_value(
        url: str, browser: Browser, console: Console) -> None:
    page = new_page(browser, console)
    refs = [f"odd/{i}" for i in ODD_IDS]
    page.goto(url + "/compare?" + urlencode([("run", r) for r in [*refs, "no-slash", refs[0]]]))
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_test_id("compare-bad")).to_contain_text("no-slash")
    tables = page.locator("main section table")
    expect(tables).to_have_count(3)  # attributes, params that differ, metrics
    for k in range(3):  # each table heads its columns with the runs: once, in order, whole
        expect(tables.nth(k).locator("thead th a")).to_have_text(refs)
    heads = tables.first.locator("thead th a")
    expect(page.locator("tr[data-param=i] td")).to_have_text(["100", "101"])
    heads.first.click()  # the link to the run's own page holds its id whole too
    expect(page.locator("h1")).to_have_text(f"Run {ODD_IDS[0]}")
    page.context.close()
