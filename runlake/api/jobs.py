"""The old job runner's routes (docs/compat.md "Job runner"): its clients read the runs
of the `jobs_component` setting's component under the runner's own paths and names.
Thin handlers over `runlake.views.jobs`; no SQL here.

These paths name no component, so a key limited to components gets 403 unless the
jobs component is one of them, as it would under `/api/{component}/…`.
"""

from __future__ import annotations

from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.auth import forbidden, visible_components
from runlake.api.reads import db_read, found
from runlake.api.responses import json_response
from runlake.api.state import SETTINGS
from runlake.views import jobs as q
from runlake.views.keyset import sql_values

# The jobs list has one order and no filters: a token pages the component it came from.
_SORT = "-created_at"


def _component(request: web.Request) -> str:
    """The jobs component, if the request's key may see it (else 403)."""
    component = request.app[SETTINGS].jobs_component
    visible = visible_components(request)
    if visible is not None and component not in visible:
        raise forbidden(request, f"this API key may not access component {component!r}, "
                                 "which holds the jobs")
    return component


async def list_jobs(request: web.Request, query: p.JobsQuery) -> web.Response:
    c, limit, offset = _component(request), query.limit, query.offset
    key = cursor.filters_key({"component": c})
    after_row, offset = cursor.resume(query.next, offset, _SORT, key, q.JOB_KEYS)
    page, ended = await db_read(request, lambda cur: q.list_jobs(cur, c, limit, offset,
                                                                 after_row))
    page["next"] = cursor.next_of(page, ended, _SORT, offset, key)
    return json_response(page)


async def get_job(request: web.Request, query: p.ReadQuery) -> web.Response:
    c, job_id = _component(request), request.match_info["job_id"]
    job = await db_read(request, lambda cur: q.get_job(cur, c, job_id))
    return json_response(found(job, f"job {job_id!r} (component {c!r})"))


async def job_logs(request: web.Request, query: p.JobLogsQuery) -> web.Response:
    c, job_id = _component(request), request.match_info["job_id"]
    limit, offset = query.limit, query.offset
    # Keyset on (ts, seq) (docs/facets.md "Paging"): the token pages this job's lines.
    key = cursor.filters_key({"component": c, "job_id": job_id, "list": "job logs"})
    position = cursor.start(query.next, offset, "ts", key)
    after_row = None
    if position is not None:
        if not (position.key.isascii() and position.key.isdigit() and len(position.key) < 19):
            raise cursor.not_made_here()
        try:
            after_row = (sql_values(q.JOB_LOG_KEYS, position.value), int(position.key))
        except ValueError:
            raise cursor.not_made_here() from None
        offset = position.offset
    result = await db_read(request, lambda cur: q.job_logs(cur, c, job_id, limit, offset,
                                                           after_row))
    page, ended = found(result, f"job {job_id!r} (component {c!r})")
    page["next"] = None if ended is None else cursor.make(
        True, "ts", ended[0], ended[1], offset + len(page["items"]), key)
    return json_response(page)


async def stats(request: web.Request, query: p.ReadQuery) -> web.Response:
    c = _component(request)
    return json_response(await db_read(request, lambda cur: q.job_stats(cur, c)))
