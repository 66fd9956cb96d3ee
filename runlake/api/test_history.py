"""`GET /api/{component}/db/tests` and `GET /api/{component}/db/test/{name}`: the
per-test view (issue 20, docs/tests.md)."""

from __future__ import annotations

from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.reads import db_read, found
from runlake.api.responses import json_response
from runlake.api.state import SETTINGS
from runlake.views import test_queries as tq

# The query fields that are not filters: a `next` token pages only the filters it
# was made for (cursor.filters_key).
_FILTERS = ("flaky", "failing", "q")

_BOOL = {"true": True, "false": False, None: None}


async def list_tests(request: web.Request, query: p.TestsQuery) -> web.Response:
    c = request.match_info["component"]
    window = request.app[SETTINGS].flaky_window
    # The window is in the key: flakiness values from another window are not this order's.
    key = cursor.filters_key({"component": c, "window": window,
                              **{f: getattr(query, f) for f in _FILTERS}})
    after_row, offset = cursor.resume(query.next, query.offset, query.sort, key,
                                      tq.sort_keys(query.sort))
    page, ended = await db_read(request, lambda cur: tq.list_tests(
        cur, c, window=window, flaky=_BOOL[query.flaky], failing=_BOOL[query.failing],
        q=query.q, sort=query.sort, limit=query.limit, offset=offset, after_row=after_row))
    page["next"] = cursor.next_of(page, ended, query.sort, offset, key)
    return json_response(page)


async def get_test(request: web.Request, query: p.TestQuery) -> web.Response:
    c, name = request.match_info["component"], request.match_info["name"]
    window = request.app[SETTINGS].flaky_window
    test = await db_read(request, lambda cur: tq.get_test(cur, c, name, window=window,
                                                          history=query.history))
    return json_response(found(test, f"test {name!r} of component {c!r}"))
