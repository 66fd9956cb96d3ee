"""The runs list with every filter and keyset paging, facets, and the music service's
generation counts (docs/facets.md, docs/compat.md): thin handlers over
`runlake.views.run_list`, `facets` and `generations`. No SQL here."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.reads import db_read
from runlake.api.responses import json_response
from runlake.api.state import SETTINGS
from runlake.views.facets import facet
from runlake.views.generations import generation_stats
from runlake.views.run_list import RunFilter, keyset_value, sort_value
from runlake.views.run_list import list_runs as list_run_page

# The query fields that are not filters: a `next` token pages only the filters it
# was made for (cursor.filters_key).
_NOT_FILTERS = {"limit", "offset", "next", "min_seq", "sort", "field"}


def run_filter(query: p.RunFilters) -> RunFilter:
    return RunFilter(
        values={"status": list(query.status), "model": list(query.model),
                "hardware": list(query.hardware), "batch_id": list(query.batch_id),
                "name": list(query.name)},
        tags=query.tags(), params=dict(query.param), since=query.since, until=query.until,
        q=query.q)


def _filters_key(query: p.RunFilters) -> str:
    fields = {k: v for k, v in (
        (f, getattr(query, f)) for f in query.__struct_fields__) if k not in _NOT_FILTERS}
    return cursor.filters_key(fields)


async def list_runs(request: web.Request, query: p.RunsQuery) -> web.Response:
    c, f, key = request.match_info["component"], run_filter(query), _filters_key(query)
    after: tuple[Any, str] | None = None
    offset = query.offset
    if query.next is not None:
        if query.offset:
            raise p.bad_param("next", "cannot be given with offset: the token says where "
                                      "the page starts")
        position = cursor.decode(query.next, query.sort, key)
        try:
            keyset_value(query.sort.lstrip("-"), position.value)
        except ValueError:
            raise p.bad_param("next", "is not a token this server made; pass the `next` "
                                      "of a page unchanged") from None
        after, offset = (position.value, position.key), position.offset
    page, more = await db_read(request, lambda cur: list_run_page(
        cur, c, f, sort=query.sort, limit=query.limit, offset=offset, after=after))
    page["offset"] = offset
    page["next"] = None
    if more and page["items"]:
        last = page["items"][-1]
        col = query.sort.lstrip("-")
        page["next"] = cursor.encode(cursor.Position(
            cursor.VERSION, query.sort, sort_value(col, last[col]), last["run_id"],
            offset + len(page["items"]), key))
    return json_response(page)


async def facets(request: web.Request, query: p.FacetsQuery) -> web.Response:
    p.check_facet_field(query.field)
    c, f = request.match_info["component"], run_filter(query)
    budget = request.app[SETTINGS].facet_budget_s
    return json_response(await db_read(request, lambda cur: facet(
        cur, c, query.field, f, limit=query.limit, offset=query.offset, budget_s=budget)))


async def generations_stats(request: web.Request, query: p.ReadQuery) -> web.Response:
    c = request.match_info["component"]
    return json_response(await db_read(request, lambda cur: generation_stats(cur, c)))
