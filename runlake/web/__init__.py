"""The web dashboard (docs/dashboard.md): pages served beside the API, data from the API."""

from runlake.web.pages import PAGES, add_pages

__all__ = ["PAGES", "add_pages"]
