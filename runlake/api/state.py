"""Typed application state: every object the handlers share, under one `AppKey` each.

`EVENT_LOG`, `DATABASE`, `FOLD` and `INBOX` are set by `app.data_folder_context` once open.
"""

from __future__ import annotations

from aiohttp import web

from runlake.api.access import Auth
from runlake.api.metrics import HttpMetrics
from runlake.api.routing import Route
from runlake.events import EventLog
from runlake.ingest.fold import Fold
from runlake.ingest.inbox import Inbox
from runlake.ingest.replay import Rebuild
from runlake.settings import Settings
from runlake.views.db import Database

SETTINGS = web.AppKey("settings", Settings)
EVENT_LOG = web.AppKey("event_log", EventLog)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
# The route table's entries by the aiohttp route each registered, in the table's order.
ROUTE_INDEX = web.AppKey("route_index", dict[web.AbstractRoute, Route])
AUTH = web.AppKey("auth", Auth)  # keys, refusal counts
DATABASE = web.AppKey("database", Database)
FOLD = web.AppKey("fold", Fold)
REBUILD = web.AppKey("rebuild", Rebuild)  # POST /api/db/replay
INBOX = web.AppKey("inbox", Inbox)  # absent when settings.inbox is off
# The dashboard's page and static routes (runlake/web): open, outside the route table.
PAGE_ROUTES = web.AppKey("page_routes", frozenset[web.AbstractRoute])


def routed(request: web.Request) -> bool:
    """Whether the request matched a route (else aiohttp answers 404/405)."""
    match = request.match_info
    return match.http_exception is None and match.route.resource is not None


def matched_route(request: web.Request) -> Route | None:
    """The route table's entry for the route the request matched; None when none
    matched (aiohttp's own 404/405 routes are not in the table) or the route is
    not in the table."""
    return request.app[ROUTE_INDEX].get(request.match_info.route)
