"""`GET /api/{c}/db/models/hardware`: runs per (model, hardware), for the heatmap."""

from __future__ import annotations

from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.reads import db_read
from runlake.api.responses import json_response
from runlake.views.model_hardware import CELLS_KEYS, CELLS_SORT, model_hardware


async def model_hardware_stats(request: web.Request, query: p.KeysetLongPage) -> web.Response:
    c, limit, offset = request.match_info["component"], query.limit, query.offset
    # Keyset on (model, hardware), both nulls last (docs/facets.md "Paging").
    key = cursor.filters_key({"component": c, "list": "models/hardware"})
    after_row, offset = cursor.resume(query.next, offset, CELLS_SORT, key, CELLS_KEYS)
    page = await db_read(request, lambda cur: model_hardware(cur, c, limit, offset, after_row))
    page["next"] = cursor.next_of(page, page.pop("ended"), CELLS_SORT, offset, key)
    return json_response(page)
