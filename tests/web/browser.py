"""The browser side of the dashboard tests: console watching and fresh pages."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page


class Console:
    """Console errors and uncaught exceptions of every page it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror {page.url}: {e}"))
        return page

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console {msg.location.get('url')}: {msg.text}")


def new_page(browser: Browser, console: Console, **context: Any) -> Page:
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(30_000)  # a guard for a loaded machine, not a measurement
    return console.watch(page)
