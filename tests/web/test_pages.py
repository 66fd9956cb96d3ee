"""Every dashboard page in a real browser against a real server (auth off): each shows
the figures computed here from the events the test sent; filters, sort, paging and
search change the runs table as the API says; no page logs a console error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from helpers.server import ThreadedServer, serve_in_thread
from playwright.sync_api import Browser, Page, expect

from web.browser import Console, new_page
from web.lake import (
    DETAIL_RUN,
    LONG_POINTS,
    LOSS,
    OUTCOMES,
    STATUSES,
    Run,
    by_status,
    detail_events,
    events,
    make_runs,
    now_utc,
    success_rate,
    tps_p50,
)


class Lake:
    def __init__(self, server: ThreadedServer, runs: list[Run]) -> None:
        self.server = server
        self.url = server.client.url
        self.runs = runs

    def api(self, path: str) -> Any:
        reply = self.server.run(self.server.client.get(path))
        assert reply.status == 200, reply.body
        return reply.json()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    now = now_utc()
    runs = make_runs(now)
    with serve_in_thread(tmp_path_factory.mktemp("lake")) as server:
        reply = server.run(server.client.post_events([*events(runs, now), *detail_events(now)]))
        assert reply.status == 202, reply.body
        last = msgspec.json.decode(reply.body)["last_seq"]
        # Every page reads after the fold has passed the events (min_seq waits for it).
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield Lake(server, runs)


def open_page(browser: Browser, console: Console, url: str) -> Page:
    page = new_page(browser, console)
    goto(page, url)
    return page


def goto(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("main .error")).to_have_count(0)


def shot(page: Page, screenshots: Path, name: str) -> None:
    """The first screen (as the README shows it) and the whole page."""
    page.screenshot(path=str(screenshots / f"{name}.png"))
    page.screenshot(path=str(screenshots / f"{name}-full.png"), full_page=True)


def run_ids(page: Page) -> list[str]:
    return page.locator("[data-testid=runs-table] tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.run)")


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def alpha(lake: Lake) -> list[Run]:
    return [r for r in lake.runs if r.component == "alpha"]


def test_home_shows_totals_per_component(lake: Lake, browser: Browser, console: Console,
                                         screenshots: Path) -> None:
    page = open_page(browser, console, lake.url + "/")
    expect(page.get_by_test_id("total-runs")).to_have_text(str(len(lake.runs)))
    expect(page.get_by_test_id("total-success-rate")).to_have_text(success_rate(lake.runs))
    counts = by_status(lake.runs)
    for s in STATUSES:
        expect(page.locator(f"[data-testid=total-by-status] [data-status={s}]")).to_have_text(
            str(counts[s]))
    for c in ("alpha", "beta"):
        mine = [r for r in lake.runs if r.component == c]
        row = page.locator(f"tr[data-component={c}]")
        expect(row.locator("[data-field=runs]")).to_have_text(str(len(mine)))
        expect(row.locator("[data-field=success_rate]")).to_have_text(success_rate(mine))
    shot(page, screenshots, "home")
    page.context.close()


def test_runs_filter_sort_page_search_columns(lake: Lake, browser: Browser, console: Console,
                                              screenshots: Path) -> None:
    runs = alpha(lake)
    newest_first = [r.run_id for r in sorted(runs, key=lambda r: r.created, reverse=True)]
    page = open_page(browser, console, lake.url + "/runs?component=alpha&limit=5")
    assert run_ids(page) == newest_first[:5]
    expect(page.get_by_test_id("page-info")).to_have_text(f"1–5 of {len(runs)}")
    shot(page, screenshots, "runs")

    page.get_by_role("link", name="Next →").click()
    expect(page.get_by_test_id("page-info")).to_have_text(f"6–10 of {len(runs)}")
    assert run_ids(page) == newest_first[5:10]
    assert "next=" in page.url and "offset" not in page.url  # keyset, in the URL: shareable
    page.get_by_role("link", name="Next →").click()
    expect(page.get_by_test_id("page-info")).to_have_text(f"11–12 of {len(runs)}")
    assert run_ids(page) == newest_first[10:]
    expect(page.get_by_role("link", name="Next →")).to_have_count(0)  # next: null
    page.get_by_role("link", name="← Previous").click()  # back by offset
    expect(page.get_by_test_id("page-info")).to_have_text(f"6–10 of {len(runs)}")
    assert run_ids(page) == newest_first[5:10] and "offset=5" in page.url
    page.get_by_role("link", name="← Previous").click()
    expect(page.get_by_test_id("page-info")).to_have_text(f"1–5 of {len(runs)}")
    assert run_ids(page) == newest_first[:5]

    page.locator("a[data-sort=run_id]").click()  # ascending by run id, back to page 1
    expect(page.get_by_test_id("page-info")).to_have_text(f"1–5 of {len(runs)}")
    assert run_ids(page) == sorted(r.run_id for r in runs)[:5]
    page.locator("a[data-sort=run_id]").click()  # again: descending
    expect(page.locator("th[aria-sort=descending]")).to_have_count(1)
    assert run_ids(page) == sorted((r.run_id for r in runs), reverse=True)[:5]

    page.get_by_role("link", name="Next →").click()  # a sort change leaves the keyset walk
    page.locator("a[data-sort=model]").click()
    expect(page.get_by_test_id("page-info")).to_have_text(f"1–5 of {len(runs)}")
    assert "next=" not in page.url

    # The status facet: each status with its runs; two ticked are OR'ed.
    facet = page.locator("[data-facet=status]")
    for s in STATUSES:
        n = sum(r.status == s for r in runs)
        expect(facet.locator(f"input[value={s}]")).to_have_count(1 if n else 0)
        if n:
            expect(facet.locator(f".facet-value:has(input[value={s}]) [data-field=runs]")
                   ).to_have_text(f"({n})")
    facet.locator("input[value=failed]").check()
    facet.locator("input[value=cancelled]").check()
    page.get_by_role("button", name="Apply filters").click()
    chosen = [r for r in runs if r.status in ("failed", "cancelled")]
    expect(page.get_by_test_id("page-info")).to_contain_text(f"of {len(chosen)}")
    assert set(run_ids(page)) == {r.run_id for r in chosen}
    assert sorted(query(page)["status"]) == ["cancelled", "failed"]
    # Other facets count under the status filter; the status facet keeps its values.
    for model in ("m1", "m2"):
        n = sum(r.model == model for r in chosen)
        label = page.locator(
            f"[data-facet=model] .facet-value:has(input[value={model}]) [data-field=runs]")
        expect(label).to_have_count(1 if n else 0)
        if n:
            expect(label).to_have_text(f"({n})")
    expect(facet.locator("input:checked")).to_have_count(2)
    expect(facet.locator("input")).to_have_count(len({r.status for r in runs}))

    # Param and tag facets, added by key: values of a param OR'ed; AND with a tag.
    goto(page, lake.url + "/runs?component=alpha")
    page.get_by_label("Add a facet").fill("param:lr")
    page.get_by_role("button", name="Add facet").click()
    expect(page.locator("[data-facet='param:lr'] input")).to_have_count(
        len({r.params["lr"] for r in runs}))
    for v in ("0.1", "0.2"):
        page.locator(f"[data-facet='param:lr'] input[value='{v}']").check()
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_test_id("page-info")).to_contain_text("of 2")
    assert sorted(run_ids(page)) == sorted(r.run_id for r in runs if r.params["lr"] in (0.1, 0.2))
    page.get_by_label("Add a facet").fill("tag:team")
    page.get_by_role("button", name="Add facet").click()
    team = page.locator("[data-facet='tag:team'] input[value='team:vision']")
    expect(page.locator("[data-facet='tag:team'] label [data-field=runs]")).to_have_text("(1)")
    team.check()
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_test_id("page-info")).to_have_text("1–1 of 1")
    assert run_ids(page) == [DETAIL_RUN]  # the one run tagged team:vision (lr 0.1)
    assert query(page)["tag"] == ["team:vision"]
    assert sorted(query(page)["param.lr"]) == ["0.1", "0.2"]

    goto(page, lake.url + "/runs?component=alpha")
    page.get_by_label("Search runs").fill("r1")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#f-q")).to_have_value("r1")
    expect(page.get_by_test_id("page-info")).to_contain_text("of 3")
    assert sorted(run_ids(page)) == sorted(r.run_id for r in runs if "r1" in r.run_id)

    page.locator("summary", has_text="Columns").click()
    page.get_by_label("duration_s").uncheck()
    page.get_by_label("batch_id").check()
    page.get_by_role("button", name="Show columns").click()
    headers = page.locator("[data-testid=runs-table] thead th")
    expect(headers).to_have_text(["run_id", "status", "model", "hardware", "batch_id",
                                  "created_at ▼"])
    page.context.close()


def test_run_detail(lake: Lake, browser: Browser, console: Console, screenshots: Path) -> None:
    run = next(r for r in lake.runs if r.run_id == DETAIL_RUN)
    page = open_page(browser, console, f"{lake.url}/run/alpha/{DETAIL_RUN}")
    expect(page.locator("h1")).to_have_text(f"Run {DETAIL_RUN}")
    expect(page.locator("dd[data-field=model]")).to_have_text(run.model)
    expect(page.locator("dd[data-field=status]")).to_have_text(run.status)
    loss = page.locator("tr[data-metric=loss]")
    expect(loss.locator("[data-field=last]")).to_have_text(f"{LOSS[-1]:.6g}")
    expect(loss.locator("[data-field=count]")).to_have_text(str(len(LOSS)))
    expect(page.locator("[data-testid=chart] canvas").first).to_be_visible()
    expect(page.locator("figure[data-testid=chart] figcaption", has_text="long")).to_have_text(
        f"long — {LONG_POINTS} points in 2000 buckets")
    expect(page.get_by_test_id("delete-run")).to_be_visible()  # auth off: all may delete
    expect(page.get_by_test_id("logs-table").locator("tbody tr")).to_have_count(7)
    expect(page.get_by_test_id("result-counts")).to_contain_text(
        f"passed {OUTCOMES.count('passed')}")
    expect(page.locator("ol.timeline li span")).to_have_text(["created", "running", run.status])
    page.locator("summary", has_text="events (the first 100)").click()  # read when opened
    expect(page.get_by_test_id("raw-events")).to_contain_text(
        '"type":"run","component":"alpha","run_id":"r01"')
    shot(page, screenshots, "run")

    page.get_by_label("Level").select_option("error")
    page.get_by_role("button", name="Filter logs").click()
    expect(page.get_by_test_id("logs-table").locator("tbody tr")).to_have_count(
        sum(i % 3 == 2 for i in range(7)))
    page.get_by_label("Outcome").select_option("passed")
    page.get_by_role("button", name="Filter results").click()
    expect(page.get_by_test_id("results-table").locator("tbody tr")).to_have_count(
        OUTCOMES.count("passed"))
    assert "log_level=error" in page.url and "outcome=passed" in page.url

    page.get_by_label(re.compile("Find a metric")).fill("tp")
    expect(page.locator("tr[data-metric=loss]")).to_be_hidden()
    expect(page.locator("tr[data-metric=tps]")).to_be_visible()
    page.context.close()


def test_models_batches_performance_search_compare_model(
        lake: Lake, browser: Browser, console: Console, screenshots: Path) -> None:
    runs = alpha(lake)
    page = open_page(browser, console, lake.url + "/models?component=alpha&metric=tps&days=30")
    for (model, hw), p50 in tps_p50(lake.runs).items():
        cell = page.locator(f"[data-testid=heatmap] td[data-model={model}][data-hardware={hw}]")
        expect(cell).to_have_text(f"{p50:g}")
    for (model, hw) in tps_p50(lake.runs):
        mine = [r for r in runs if (r.model, r.hardware) == (model, hw)]
        cell = page.locator(
            f"[data-testid=success-heatmap] td[data-model={model}][data-hardware={hw}]")
        expect(cell).to_have_text(f"{success_rate(mine)} of {len(mine)}")
    for model in ("m1", "m2"):
        expect(page.locator(f"tr[data-model={model}] [data-field=success_rate]")).to_have_text(
            success_rate([r for r in runs if r.model == model]))
    shot(page, screenshots, "models")

    goto(page, lake.url + "/batches?component=alpha")
    in_batch = [r for r in runs if r.batch_id == "b1"]
    finished = sum(r.status in ("completed", "failed", "cancelled") for r in in_batch)
    row = page.locator("tr[data-batch=b1]")
    expect(row.locator("[data-field=finished]")).to_have_text(str(finished))
    expect(row.locator("[data-field=progress]")).to_have_text(f"{100 * finished / 5:.1f}%")
    shot(page, screenshots, "batches")

    goto(page, lake.url + "/performance?component=alpha&metric=tps")
    rows = page.get_by_test_id("performance-table").locator("tbody tr")
    expect(rows).to_have_count(len(tps_p50(lake.runs)))
    shot(page, screenshots, "performance")

    goto(page, lake.url + "/search?query=m1")
    for c in ("alpha", "beta"):
        n = sum(r.component == c and r.model == "m1" for r in lake.runs)
        expect(page.get_by_role("heading", name=f"{c} ({n})")).to_be_visible()
    shot(page, screenshots, "search")

    goto(page, lake.url + "/compare?run=alpha/r01&run=alpha/r02")
    expect(page.locator("[data-testid=params-diff] tr[data-param]")).to_have_count(1)
    expect(page.locator("tr[data-param=lr] td")).to_have_text(["0.1", "0.2"])
    shot(page, screenshots, "compare")

    goto(page, lake.url + "/model/m1")
    m1 = [r for r in lake.runs if r.model == "m1"]
    expect(page.get_by_test_id("model-runs")).to_have_text(str(len(m1)))
    expect(page.get_by_test_id("model-success-rate")).to_have_text(success_rate(m1))
    shot(page, screenshots, "model")
    page.context.close()


def test_keyboard_reaches_the_navigation(lake: Lake, browser: Browser, console: Console) -> None:
    page = open_page(browser, console, lake.url + "/runs")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Home")
    page.context.close()
