"""`POST /api/{component}/junit` and `POST /api/{component}/reportlog`: one test report
(JUnit XML, pytest report-log) as one run, its attributes in the query string
(issue 20, docs/tests.md). All-or-nothing like `POST /api/events`: the report is
parsed and every event validated before anything is appended; importing the same
report with the same attributes twice adds nothing (content-hash ids)."""

from __future__ import annotations

import asyncio
from functools import partial

from aiohttp import hdrs, web

from runlake.api.auth import API_KEY, forbid_event, refused_event
from runlake.api.params import ReportQuery
from runlake.api.responses import Accepted, json_response
from runlake.api.state import EVENT_LOG, SETTINGS
from runlake.errors import UnsupportedMediaType
from runlake.ingest.reports import RunAttributes, load_report

# A parsed report holds many times its bytes while it is turned into events (the
# element tree, a line per element; docs/tests.md): the routes take less than a file
# may hold on disk.
MAX_BODY_BYTES = 8 * 1024 * 1024
XML_TYPES = ("application/xml", "text/xml", "application/junit+xml")
REPORTLOG_TYPES = ("application/x-ndjson", "application/jsonl", "application/json")


async def post_junit(request: web.Request, query: ReportQuery) -> web.Response:
    return await _import(request, query, "junit", XML_TYPES)


async def post_reportlog(request: web.Request, query: ReportQuery) -> web.Response:
    return await _import(request, query, "reportlog", REPORTLOG_TYPES)


async def _import(request: web.Request, query: ReportQuery, kind: str,
                  media: tuple[str, ...]) -> web.Response:
    if hdrs.CONTENT_TYPE in request.headers and request.content_type not in media:
        raise UnsupportedMediaType(f"Content-Type {request.content_type!r} is not accepted; "
                                   f"use {', '.join(media)}")
    body = await request.read()  # size-checked by the limits middleware already
    component = request.match_info["component"]
    attrs = RunAttributes(component=component, run_id=query.run_id, model=query.model,
                          hardware=query.hardware, batch_id=query.batch_id, name=query.name,
                          tags=tuple(query.tags()))
    name = "junit.xml" if kind == "junit" else "report-log.jsonl"
    parse = partial(load_report, body, name, attrs, request.app[SETTINGS].max_events, kind)
    events = await asyncio.get_running_loop().run_in_executor(None, parse)  # XML off the loop
    refused = refused_event(request.get(API_KEY), events)
    if refused is not None:
        raise forbid_event(request, refused)
    first, last = await asyncio.shield(request.app[EVENT_LOG].append_async(events))
    return json_response(Accepted(len(events), first, last), status=202)

