"""The runs list with every filter and keyset paging, facets, and the music service's
generation counts (docs/facets.md, docs/compat.md): thin handlers over
`runlake.views.run_list`, `facets` and `generations`. No SQL here."""

from __future__ import annotations

from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.reads import db_read
from runlake.api.responses import json_response
from runlake.api.state import SETTINGS
from runlake.views.facets import facet
from runlake.views.generations import generation_stats
from runlake.views.keyset import sql_value, token_value
from runlake.views.run_list import RunFilter, sort_key
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
    position = cursor.start(query.next, query.offset, query.sort, key)
    after, offset = None, query.offset
    if position is not None:
        try:
            after = (sql_value(sort_key(query.sort), position.value), position.key)
        except ValueError:
            raise cursor.not_made_here() from None
        offset = position.offset
    page, more = await db_read(request, lambda cur: list_run_page(
        cur, c, f, sort=query.sort, limit=query.limit, offset=offset, after=after))
    page["offset"] = offset
    last = page["items"][-1] if page["items"] else None
    page["next"] = None if last is None else cursor.make(
        more, query.sort, token_value(last[query.sort.lstrip("-")]), last["run_id"],
        offset + len(page["items"]), key)
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
