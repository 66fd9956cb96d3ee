"""Admin routes: rebuild the database from the log while the server keeps serving.

`POST /api/db/replay` starts a replay (`runlake.ingest.replay.Rebuild`) and
answers 202 at once; `GET /api/db/replay` shows how far it got. Reads keep
coming from the old file, and appends keep landing in the log, until the swap.
"""

from __future__ import annotations

from aiohttp import web

from runlake.api.params import NoQuery
from runlake.api.responses import json_response
from runlake.api.state import REBUILD
from runlake.errors import Conflict


async def start_replay(request: web.Request, query: NoQuery) -> web.Response:
    rebuild = request.app[REBUILD]
    if not rebuild.start():
        raise Conflict("a replay is already running; see GET /api/db/replay")
    return json_response(rebuild.status(), status=202)


async def replay_status(request: web.Request, query: NoQuery) -> web.Response:
    return json_response(request.app[REBUILD].status())
