"""`GET /api/{c}/db/models/hardware`: runs per (model, hardware), for the heatmap."""

from __future__ import annotations

from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.reads import db_read
from runlake.api.responses import json_response
from runlake.views.keyset import sql_values
from runlake.views.model_hardware import CELLS_KEYS, CELLS_SORT, model_hardware


async def model_hardware_stats(request: web.Request, query: p.KeysetLongPage) -> web.Response:
    c, limit, offset = request.match_info["component"], query.limit, query.offset
    # Keyset on (model, hardware), both nulls last (docs/facets.md "Paging").
    key = cursor.filters_key({"component": c, "list": "models/hardware"})
    position = cursor.start(query.next, offset, CELLS_SORT, key)
    after_row = None
    if position is not None:
        try:
            after_row = (sql_values(CELLS_KEYS, position.value), position.key)
        except ValueError:
            raise cursor.not_made_here() from None
        offset = position.offset
    page = await db_read(request, lambda cur: model_hardware(cur, c, limit, offset, after_row))
    ended = page.pop("ended")
    page["next"] = None if ended is None else cursor.make(
        True, CELLS_SORT, ended[0], ended[1], offset + len(page["items"]), key)
    return json_response(page)
