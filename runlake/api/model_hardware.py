"""`GET /api/{c}/db/models/hardware`: runs per (model, hardware), for the heatmap."""

from __future__ import annotations

from aiohttp import web

from runlake.api import params as p
from runlake.api.reads import db_read
from runlake.api.responses import json_response
from runlake.views.model_hardware import model_hardware


async def model_hardware_stats(request: web.Request, query: p.LongPage) -> web.Response:
    c, limit, offset = request.match_info["component"], query.limit, query.offset
    return json_response(await db_read(request,
                                       lambda cur: model_hardware(cur, c, limit, offset)))
