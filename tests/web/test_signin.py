"""Sign-in with API keys in a real browser: the key lives in an HttpOnly, SameSite=Strict
cookie (never the URL or local storage); read keys get no delete button; an admin
deletes a run and it disappears; cookie-authenticated writes need the CSRF header; a
component-limited key never sees another component; sign-out ends it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import msgspec
import pytest
from helpers.server import ThreadedServer, serve_in_thread
from playwright.sync_api import Browser, Page, expect

from runlake.api.keys import add_key
from web.browser import Console, new_page
from web.lake import Run, by_status, events, make_runs, now_utc


@dataclass
class Lake:
    server: ThreadedServer
    url: str
    runs: list[Run]
    keys: dict[str, str]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    tmp = tmp_path_factory.mktemp("auth")
    keys_path = tmp / "data" / "keys.json"
    keys = {name: add_key(keys_path, role, comps, name=name)[1] for name, role, comps in (
        ("admin", "admin", ()), ("reader", "read", ()), ("beta-reader", "read", ("beta",)))}
    now = now_utc()
    runs = make_runs(now)
    with serve_in_thread(tmp) as server:
        reply = server.run(server.client.request(
            "POST", "/api/events", json=events(runs, now), headers={"X-API-Key": keys["admin"]}))
        assert reply.status == 202, reply.body
        last = msgspec.json.decode(reply.body)["last_seq"]
        assert server.run(server.client.request(
            "GET", f"/api/db/overview?min_seq={last}", content_type=None,
            headers={"X-API-Key": keys["admin"]})).status == 200
        yield Lake(server, server.client.url, runs, keys)


def sign_in(browser: Browser, console: Console, lake: Lake, key: str, path: str = "/") -> Page:
    page = new_page(browser, console)
    page.goto(lake.url + path)
    expect(page.get_by_label("API key")).to_be_visible()
    assert unquote(page.url) == f"{lake.url}/signin?next={path}"
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(lake.url + path)
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    return page


def test_key_is_kept_in_an_httponly_strict_cookie(lake: Lake, browser: Browser,
                                                  console: Console) -> None:
    page = new_page(browser, console)
    page.goto(lake.url + "/runs")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    assert page.context.cookies() == []
    console.errors.clear()  # the refused sign-in's 401 document is logged by Chromium

    page.get_by_label("API key").fill(lake.keys["reader"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(lake.url + "/runs")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["runlake_key"]["value"] == lake.keys["reader"]
    assert cookies["runlake_key"]["httpOnly"] and cookies["runlake_key"]["sameSite"] == "Strict"
    assert cookies["runlake_csrf"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find(lake.keys["reader"]) == -1
    assert page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") \
        == 0
    assert lake.keys["reader"] not in page.url
    expect(page.get_by_test_id("page-info")).to_contain_text(
        f"of {sum(r.component == 'alpha' for r in lake.runs)}")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(lake.url + "/signin")
    assert page.context.cookies() == []
    page.goto(lake.url + "/")
    expect(page.get_by_label("API key")).to_be_visible()
    assert unquote(page.url) == f"{lake.url}/signin?next=/"
    page.context.close()


def test_read_key_sees_no_delete_button_and_cannot_delete(lake: Lake, browser: Browser,
                                                          console: Console) -> None:
    page = sign_in(browser, console, lake, lake.keys["reader"], "/run/alpha/r02")
    expect(page.locator("dd[data-field=model]")).to_have_text("m2")
    expect(page.get_by_test_id("delete-run")).to_have_count(0)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "runlake_csrf")
    refused = page.request.delete(lake.url + "/api/alpha/db/run/r02",
                                  headers={"X-CSRF-Token": csrf})
    assert refused.status == 403 and "'admin'" in refused.json()["error"]["message"]
    page.context.close()


def test_admin_deletes_a_run_and_it_disappears(lake: Lake, browser: Browser,
                                               console: Console, screenshots: Path) -> None:
    page = sign_in(browser, console, lake, lake.keys["admin"], "/run/alpha/r03")
    # A cookie-authenticated write without the CSRF header is refused, nothing changed.
    refused = page.request.delete(lake.url + "/api/alpha/db/run/r03")
    assert refused.status == 403 and "X-CSRF-Token" in refused.json()["error"]["message"]
    forged = page.request.delete(lake.url + "/api/alpha/db/run/r03",
                                 headers={"X-CSRF-Token": "forged"})
    assert forged.status == 403
    not_ascii = page.request.delete(lake.url + "/api/alpha/db/run/r03",
                                    headers={"X-CSRF-Token": "tökén"})
    assert not_ascii.status == 403, not_ascii.text()
    assert page.request.get(lake.url + "/api/alpha/db/run/r03").status == 200
    shot = screenshots / "run-admin.png"
    page.screenshot(path=str(shot))

    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("delete-run").click()
    expect(page).to_have_url(re.compile(r"/runs\?component=alpha&min_seq=\d+$"))
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    alpha = [r for r in lake.runs if r.component == "alpha"]
    expect(page.get_by_test_id("page-info")).to_contain_text(f"of {len(alpha) - 1}")
    expect(page.locator("tr[data-run=r03]")).to_have_count(0)
    # The facets count after the delete too (most runs first).
    left = Counter(r.model for r in alpha if r.run_id != "r03")
    expect(page.locator("[data-facet=model] label [data-field=runs]")).to_have_text(
        [f"({n})" for _, n in sorted(left.items(), key=lambda kv: (-kv[1], kv[0]))])
    assert page.request.get(lake.url + "/api/alpha/db/run/r03").status == 404
    page.context.close()


def test_component_limited_key_sees_only_its_component(lake: Lake, browser: Browser,
                                                       console: Console) -> None:
    beta = [r for r in lake.runs if r.component == "beta"]
    page = sign_in(browser, console, lake, lake.keys["beta-reader"], "/")
    expect(page.locator("tr[data-component]")).to_have_count(1)
    expect(page.get_by_test_id("total-runs")).to_have_text(str(len(beta)))
    # The live stream takes the sign-in cookie too (no console error, it follows).
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    counts = by_status(beta)
    expect(page.locator("[data-testid=total-by-status] [data-status=completed]")).to_have_text(
        str(counts["completed"]))

    page.goto(lake.url + "/runs?component=alpha")  # asks for alpha: shown its own instead
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#f-component option")).to_have_text(["beta"])
    assert sorted(page.locator("[data-testid=runs-table] tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.run)")) == sorted(r.run_id for r in beta)
    page.goto(lake.url + "/search?query=m1")
    expect(page.locator("main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("section h2")).to_have_text([f"beta ({len(beta)})"])
    assert page.request.get(lake.url + "/api/alpha/db/runs").status == 403
    page.context.close()


def test_signin_refuses_open_redirects_and_cross_site_forms(lake: Lake) -> None:
    """Over plain HTTP (no browser): `next` stays on this server, a form from another
    origin signs no one in, and sign-out needs the CSRF token."""
    async def post(path: str, form: dict[str, str], headers: dict[str, str] | None = None,
                   cookies: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        async with lake.server.client.session.post(
                lake.url + path, data=form, headers=headers or {}, cookies=cookies,
                allow_redirects=False) as resp:
            return resp.status, dict(resp.headers), resp.cookies

    key = lake.keys["reader"]
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "runs"):
        status, headers, cookies = lake.server.run(post("/signin", {"key": key, "next": evil}))
        assert status == 303 and headers["Location"] == "/", (evil, headers)
        assert cookies["runlake_key"].value == key and cookies["runlake_key"]["httponly"]
    status, _, cookies = lake.server.run(post(
        "/signin", {"key": key, "next": "/runs"}, {"Origin": "http://evil.example"}))
    assert status == 403 and "runlake_key" not in cookies
    signed_in = {"runlake_key": key, "runlake_csrf": "t0ken"}
    status, _, cookies = lake.server.run(post("/signout", {"csrf": "wrong"}, cookies=signed_in))
    assert status == 403 and "runlake_key" not in cookies  # not cleared
    status, headers, cookies = lake.server.run(post("/signout", {"csrf": "t0ken"},
                                                    cookies=signed_in))
    assert status == 303 and cookies["runlake_key"].value == ""  # cleared


def test_a_cookie_request_from_another_origin_is_refused(lake: Lake) -> None:
    """A page on another port or subdomain is same-*site*, so the browser sends it the
    SameSite=Strict cookie; WebSockets have no CORS. A cookie-signed request whose
    Origin is not this server is refused (403), the stream's upgrade included; the
    same request from this server's own origin goes through."""
    key = lake.keys["reader"]
    host = lake.url.split("://", 1)[1]
    port = int(host.rsplit(":", 1)[1])
    other = f"http://127.0.0.1:{port + 1}"  # same site: another port of the same host

    async def attempts(origin: str) -> tuple[int, int]:
        session = lake.server.client.session
        headers = {"Origin": origin, "Cookie": f"runlake_key={key}"}
        async with session.get(lake.url + "/api/db/overview", headers=headers) as resp:
            read = resp.status
        try:
            async with session.ws_connect(lake.url + "/api/stream/ws?until=caught_up",
                                          headers=headers) as ws:
                await ws.close()
                upgrade = 101
        except aiohttp.WSServerHandshakeError as e:
            upgrade = e.status
        return read, upgrade

    assert lake.server.run(attempts(other)) == (403, 403)
    assert lake.server.run(attempts(f"http://{host}")) == (200, 101)
