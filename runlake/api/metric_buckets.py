"""`GET /api/{c}/db/run/{id}/metrics/buckets`: a run's metric downsampled for charts."""

from __future__ import annotations

from aiohttp import web

from runlake.api import params as p
from runlake.api.reads import db_read, found
from runlake.api.responses import json_response
from runlake.views.metric_buckets import metric_buckets


async def run_metric_buckets(request: web.Request, query: p.RunMetricBucketsQuery
                             ) -> web.Response:
    info = request.match_info
    c, run_id = info["component"], info["run_id"]
    result = await db_read(request, lambda cur: metric_buckets(cur, c, run_id, query.name,
                                                               query.buckets))
    return json_response(found(result, f"run {run_id!r} of component {c!r}"))
