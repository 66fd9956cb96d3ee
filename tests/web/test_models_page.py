"""The models × hardware page reads only what it draws: its p50 heatmap asks
`…/db/performance` with `trend=false`, so the daily trend (most of that answer's bytes,
which the heatmap does not draw) is left out. The route's default answer keeps the
trend (old clients); a bad `trend` is a 400 naming it. Real server, real browser."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from helpers.server import ThreadedServer, serve_in_thread
from playwright.sync_api import Browser, Response, expect

from web.browser import Console, new_page
from web.lake import _iso, now_utc

CELLS = {("m1", "h1"): [1.0, 2.0, 4.0], ("m1", "h2"): [3.0, 5.0],
         ("m2", "h1"): [7.0, 8.0, 9.0, 10.0]}
DAYS = 3  # points spread over this many days, so the trend has that many entries


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    now = now_utc()
    evs: list[dict[str, Any]] = []
    for (model, hw), values in CELLS.items():
        run = {"component": "perf", "run_id": f"{model}-{hw}"}
        evs.append({**run, "type": "run", "model": model, "hardware": hw, "ts": _iso(now)})
        evs += [{**run, "type": "metric", "name": "tps", "value": v,
                 "ts": _iso(now - timedelta(days=k % DAYS))} for k, v in enumerate(values)]
    with serve_in_thread(tmp_path_factory.mktemp("models")) as server:
        reply = server.run(server.client.post_events(evs))
        assert reply.status == 202, reply.body
        last = msgspec.json.decode(reply.body)["last_seq"]
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield server


def get(server: ThreadedServer, path: str) -> tuple[int, Any]:
    reply = server.run(server.client.get(path))
    return reply.status, reply.json()


def days_with_points(values: list[float]) -> int:
    return len({k % DAYS for k in range(len(values))})


def test_performance_leaves_out_the_trend_only_when_asked(server: ThreadedServer) -> None:
    base = "/api/perf/db/performance?metric=tps&days=30"
    status, default = get(server, base)
    assert status == 200
    status, with_trend = get(server, base + "&trend=true")
    assert status == 200 and with_trend == default
    status, without = get(server, base + "&trend=false")
    assert status == 200
    by_cell = {(i["model"], i["hardware"]): i for i in default["items"]}
    assert set(by_cell) == set(CELLS)
    for cell, values in CELLS.items():  # the default keeps its daily trend (old clients)
        trend = by_cell[cell]["trend"]
        assert len(trend) == days_with_points(values)
        assert sum(d["count"] for d in trend) == len(values)
    # Without the trend: the same items and figures, each trend empty.
    assert [{**i, "trend": []} for i in default["items"]] == without["items"]
    assert {k: v for k, v in without.items() if k != "items"} == \
        {k: v for k, v in default.items() if k != "items"}


def test_a_bad_trend_is_a_400_naming_it(server: ThreadedServer) -> None:
    status, body = get(server, "/api/perf/db/performance?metric=tps&trend=no")
    assert status == 400
    (detail,) = body["error"]["details"]
    assert detail["parameter"] == "trend" and detail["allowed"] == ["true", "false"]


def test_models_page_heatmap_reads_no_trend(server: ThreadedServer, browser: Browser,
                                            console: Console) -> None:
    page = new_page(browser, console)
    perf: list[Response] = []
    page.on("response", lambda r: perf.append(r) if "/db/performance" in r.url else None)
    page.goto(server.client.url + "/models?component=perf&metric=tps&days=30")
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    for (model, hw), values in CELLS.items():
        cell = page.locator(f"[data-testid=heatmap] td[data-model={model}][data-hardware={hw}]")
        expect(cell).to_have_text(f"{statistics.median(values):g}")
    assert len(perf) == 1
    items = perf[0].json()["items"]
    assert len(items) == len(CELLS) and all(i["trend"] == [] for i in items), perf[0].url
    page.context.close()
