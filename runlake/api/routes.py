"""The URL map: every route in one table, each with what OpenAPI needs to describe it.

`add_routes` registers the table and keeps it in the app for `/api/openapi.json`,
so a route added here is served and documented at once. Every handler is wrapped
the same way: path parameters checked, the query string parsed into the route's
Struct (params.py), `min_seq` waited for, then the handler called with both.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from runlake.api import (
    admin,
    export,
    ingest,
    jobs,
    metric_buckets,
    model_hardware,
    ops,
    reads,
    reports,
    runs,
    stream,
    test_history,
)
from runlake.api import params as p
from runlake.api import responses as R
from runlake.api.ingest_first import INGEST_FIRST
from runlake.api.params import check_path, parse_query
from runlake.api.responses import Accepted, Health, Readiness
from runlake.api.routing import Body, Route
from runlake.api.state import ROUTE_INDEX
from runlake.events import EVENT_TYPES
from runlake.events.schema import Slug
from runlake.ingest.replay import ReplayStatus


def _events_body(union: Any) -> Body:
    return Body(
        "One event, a JSON array of events, or NDJSON (one event per line). "
        "All or nothing: one bad event rejects the request and nothing is appended.",
        (("application/json", union | Annotated[list[union], Meta(min_length=1)]),
         ("application/x-ndjson", union), ("application/jsonl", union)))


def _with_component(cls: Any) -> Any:
    """`cls` with `component` required, as `POST /api/events` needs it (a type for the
    OpenAPI document only; decoding is events.decode_events')."""
    return msgspec.defstruct(cls.__name__ + "WithComponent", [("component", Slug)], bases=(cls,),
                             tag=cls.__struct_config__.tag, kw_only=True)


def _without_component(cls: Any) -> Any:
    """`cls` without `component`, which `POST /api/{component}/events` takes from the
    URL (an event may still name it, if it names the same one)."""
    fields = [(f.name, f.type, f.default if f.required is False else msgspec.NODEFAULT)
              for f in msgspec.structs.fields(cls) if f.name != "component"]
    return msgspec.defstruct(cls.__name__ + "InComponent", fields, tag_field="type",
                             tag=cls.__struct_config__.tag, kw_only=True,
                             forbid_unknown_fields=True)


COMPONENT_EVENTS = _events_body(functools.reduce(operator.or_, map(_without_component,
                                                                   EVENT_TYPES)))
EVENTS = _events_body(functools.reduce(operator.or_, map(_with_component, EVENT_TYPES)))
INGEST_ERRORS = (400, 413, 415)
SEARCH_BODY = Body("Optional: the query as JSON instead of in the URL (not both)",
                   (("application/json", p.SearchBody),), required=False)
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
JUNIT_BODY = Body("A JUnit XML report (pytest, Surefire, Jenkins, go-junit-report): one run. "
                  "All or nothing; the same report twice adds nothing.",
                  tuple((m, str) for m in reports.XML_TYPES))
REPORTLOG_BODY = Body("A pytest report-log (`pytest --report-log`): JSON lines, each with "
                      "`$report_type`; one run. All or nothing; the same report twice adds "
                      "nothing.", tuple((m, dict[str, Any]) for m in reports.REPORTLOG_TYPES))
EXPORT_MEDIA = ("application/json", "application/vnd.apache.parquet")


_DECLARED: tuple[Route, ...] = (
    Route("POST", "/api/events", ingest.post_events, "Append events", "ingest",
          202, Accepted, body=EVENTS, errors=INGEST_ERRORS, role="ingest"),
    Route("POST", "/api/{component}/events", ingest.post_component_events,
          "Append events of one component (implied where left out)", "ingest",
          202, Accepted, body=COMPONENT_EVENTS, errors=INGEST_ERRORS, role="ingest"),
    Route("GET", "/healthz", ops.healthz, "Liveness: the server answers", "operations",
          response=Health, role="open", always_admitted=True),
    Route("GET", "/readyz", ops.readyz, "Readiness: how far the fold is behind the log",
          "operations", response=Readiness, same_body=(503,), role="open",
          always_admitted=True),
    Route("GET", "/metrics", ops.metrics, "Prometheus metrics", "operations",
          media_type=PROMETHEUS_TEXT, role="read", always_admitted=True),
    Route("GET", "/api/openapi.json", ops.openapi, "This OpenAPI 3.1 document",
          "operations", response=dict[str, Any], role="read", always_admitted=True),
    *(Route(m, path, h, summary, "reads", response=response, query=query,
            status=202 if m == "DELETE" else 200,
            errors=(400, 404, 409, 422, 503) if m == "GET" else (400, 404, 409, 503),
            role="admin" if m == "DELETE" else "read", body=body)
      for m, path, h, summary, query, response, body in (
        ("GET", "/api/{component}/db/runs", runs.list_runs, "Runs, filtered",
         p.RunsQuery, R.KeysetRunPage, None),
        ("GET", "/api/{component}/db/run/{run_id}", reads.get_run, "One run in detail",
         p.ReadQuery, R.RunDetail, None),
        ("GET", "/api/{component}/db/run/{run_id}/metrics", reads.run_metrics,
         "A run's metric points, oldest first", p.RunMetricsQuery, R.KeysetMetricPointPage, None),
        ("GET", "/api/{component}/db/run/{run_id}/logs", reads.run_logs,
         "A run's log lines, oldest first", p.RunLogsQuery, R.KeysetLogLinePage, None),
        ("GET", "/api/{component}/db/run/{run_id}/results", reads.run_results,
         "A run's test results, oldest first", p.RunResultsQuery, R.KeysetResultPage, None),
        ("GET", "/api/{component}/db/run/{run_id}/events", reads.run_events,
         "A run's raw events from the log, since its last delete", p.KeysetLongPage,
         R.KeysetEventPage, None),
        ("DELETE", "/api/{component}/db/run/{run_id}", reads.delete_run,
         "Delete a run (appends a delete event; 404 if there is no such run)",
         p.ReadQuery, Accepted, None),
        ("DELETE", "/api/{component}/db/batch/{batch_id}", reads.delete_batch,
         "Delete a batch and its runs (appends a delete event; 404 if there is no such "
         "batch)", p.ReadQuery, Accepted, None),
        ("GET", "/api/{component}/db/batches", reads.list_batches, "Batches", p.KeysetPage,
         R.KeysetBatchPage, None),
        ("GET", "/api/{component}/db/batch/{batch_id}", reads.get_batch, "One batch",
         p.ReadQuery, R.BatchDetail, None),
        ("GET", "/api/{component}/db/models/stats", reads.model_stats,
         "Run statistics per model", p.KeysetLongPage, R.KeysetModelStatsPage,
         None),
        ("GET", "/api/{component}/db/hardware/stats", reads.hardware_stats,
         "Run statistics per hardware", p.KeysetLongPage, R.KeysetHardwareStatsPage,
         None),
        ("GET", "/api/{component}/db/performance", reads.performance,
         "Metric report over the last N days", p.PerformanceQuery, R.Performance, None),
        ("GET", "/api/{component}/db/search", reads.search_component, "Search one component",
         p.SearchQuery, R.SearchResults, None),
        ("POST", "/api/{component}/db/search", reads.search_component,
         "Search one component (query in the URL or a JSON body)", p.SearchPostQuery,
         R.SearchResults, SEARCH_BODY),
        ("GET", "/api/db/overview", reads.overview, "Totals per component", p.ReadQuery,
         R.Overview, None),
        ("GET", "/api/db/model/{model}", reads.model_overview, "One model across components",
         p.ReadQuery, R.ModelOverview, None),
        ("GET", "/api/db/search", reads.search_all, "Search every component", p.SearchQuery,
         R.SearchResults, None),
        ("POST", "/api/db/search", reads.search_all,
         "Search every component (query in the URL or a JSON body)", p.SearchPostQuery,
         R.SearchResults, SEARCH_BODY),
        ("GET", "/api/{component}/db/facets", runs.facets,
         "A field's top values over the runs, with every filter of the runs list",
         p.FacetsQuery, R.Facets, None),
        ("GET", "/api/{component}/db/generations/stats", runs.generations_stats,
         "Runs by status as the music service counted generations", p.ReadQuery,
         R.GenerationStats, None),
    )),
    Route("POST", "/api/db/replay", admin.start_replay,
          "Rebuild the database from the log; reads use the old file until the swap",
          "admin", 202, ReplayStatus, errors=(409,), role="admin"),
    Route("GET", "/api/db/replay", admin.replay_status, "The latest replay's progress",
          "admin", response=ReplayStatus, role="admin"),
    Route("POST", "/api/{component}/db/export", export.post_export,
          "Stream the component's runs, run documents or events (NDJSON, JSON or Parquet)",
          "export", media_type="application/x-ndjson", other_media=EXPORT_MEDIA, role="admin",
          body=Body("; ".join(f"{k}: {v}" for k, v in export.FIELD_DOCS.items()) + "; all optional",
                    (("application/json", export.ExportRequest),), required=False),
          errors=(400, 404, 409, 413, 415, 503), max_body_bytes=export.MAX_BODY_BYTES,
          response_description=export.RESPONSE_DOC),
    Route("GET", "/api/db/export", export.get_export,
          "Stream the runs, run documents or events of every component the key may see", "export",
          media_type="application/x-ndjson", other_media=EXPORT_MEDIA, role="admin",
          errors=(400, 409), query=export.ExportRequest,
          # a runs export waits; an events export reads the log
          waits_for_min_seq=False, response_description=export.RESPONSE_DOC),
    # The old job runner's routes over the jobs_component's runs (docs/compat.md).
    Route("GET", "/api/jobs", jobs.list_jobs, "Jobs, newest first (job runner)", "jobs",
          response=R.KeysetJobPage, query=p.JobsQuery, errors=(400, 403, 409, 422, 503),
          role="read"),
    Route("GET", "/api/jobs/{job_id}", jobs.get_job,
          "One job with its parameters, output, return code and files (job runner)", "jobs",
          response=R.JobDetail, query=p.ReadQuery, errors=(400, 403, 404, 409, 422, 503),
          role="read"),
    Route("GET", "/api/jobs/{job_id}/logs", jobs.job_logs,
          "A job's log lines, oldest first (job runner)", "jobs", response=R.KeysetJobLogPage,
          query=p.JobLogsQuery, errors=(400, 403, 404, 409, 422, 503), role="read"),
    Route("GET", "/api/stats", jobs.stats, "Job totals and top tools (job runner)", "jobs",
          response=R.JobStats, query=p.ReadQuery, errors=(400, 403, 409, 422, 503),
          role="read"),
    Route("GET", "/api/{component}/db/run/{run_id}/metrics/buckets",
          metric_buckets.run_metric_buckets,
          "A run's metric downsampled: per bucket of points, min, max and last value",
          "reads", response=R.MetricBuckets, query=p.RunMetricBucketsQuery,
          errors=(400, 404, 409, 422, 503), role="read"),
    Route("GET", "/api/{component}/db/models/hardware", model_hardware.model_hardware_stats,
          "Runs and success rate per (model, hardware)", "reads",
          response=R.KeysetModelHardwarePage, query=p.KeysetLongPage,
          errors=(400, 404, 409, 422, 503),
          role="read"),
    # Test history (issue 20, docs/tests.md).
    Route("POST", "/api/{component}/junit", reports.post_junit,
          "Import a JUnit XML report as one run (attributes in the query)", "ingest",
          202, Accepted, body=JUNIT_BODY, query=p.ReportQuery, errors=INGEST_ERRORS,
          role="ingest", max_body_bytes=reports.MAX_BODY_BYTES),
    Route("POST", "/api/{component}/reportlog", reports.post_reportlog,
          "Import a pytest report-log (JSON lines) as one run (attributes in the query)",
          "ingest", 202, Accepted, body=REPORTLOG_BODY, query=p.ReportQuery,
          errors=INGEST_ERRORS, role="ingest", max_body_bytes=reports.MAX_BODY_BYTES),
    Route("GET", "/api/{component}/db/tests", test_history.list_tests,
          "Tests with their figures and flakiness, filtered and sorted", "reads",
          response=R.KeysetTestPage, query=p.TestsQuery, errors=(400, 404, 409, 422, 503),
          role="read"),
    Route("GET", "/api/{component}/db/test/{name}", test_history.get_test,
          "One test's figures and its latest results (the history strip)", "reads",
          response=R.TestDetail, query=p.TestQuery, errors=(400, 404, 409, 422, 503),
          role="read"),
    # Live streams (docs/stream.md): never queued behind reads, never waiting for the fold.
    Route("GET", "/api/stream", stream.sse_stream,
          "Follow the log live (Server-Sent Events): events, caught_up, folded, heartbeat",
          "stream", media_type="text/event-stream", query=stream.StreamQuery,
          errors=(400, 403, 503), role="read", always_admitted=True, waits_for_min_seq=False),
    Route("GET", "/api/stream/ws", stream.ws_stream,
          "Follow the log live (WebSocket, JSON messages); the same stream as /api/stream",
          "stream", status=101, query=stream.StreamQuery, errors=(400, 403, 503), role="read",
          always_admitted=True, waits_for_min_seq=False),
)


# Old clients' names (docs/compat.md), generated from the declarations above so each
# route is written once. Every `run` route has a `task` twin (the generator API called
# its runs tasks), and every component route a Unified API gateway form,
# `/api/db/{component}/…`, listed in OpenAPI like the rest.
_COMPONENT_DB = "/api/{component}/db/"
_GATEWAY = "/api/db/{component}/"
# Names the gateway cannot reach: the cross-component routes under /api/db/ win
# (`/api/db/model/{model}` takes any path below it); use /api/{component}/db/ for them.
GATEWAY_RESERVED = ("overview", "model", "search", "export", "replay")
# Patterns applied where routes are registered (aiohttp), keeping the table's paths
# plain templates for OpenAPI: a model name may hold `/` (meta-llama/Llama-3.1-8B),
# and a gateway component is not one of the reserved names.
_REGISTER_AS = {
    "/api/db/model/{model}": "/api/db/model/{model:.+}",
    "/api/{component}/db/test/{name}": "/api/{component}/db/test/{name:.+}",  # a/b.py::t
    _GATEWAY: "/api/db/{component:(?!(?:" + "|".join(GATEWAY_RESERVED) + r")(?:/|$))[^/]+}/",
}


def _task_alias(route: Route) -> Route | None:
    for run, task in (("/db/runs", "/db/tasks"), ("/db/run/", "/db/task/")):
        if route.path.startswith(_COMPONENT_DB) and (run in route.path):
            return dataclasses.replace(route, path=route.path.replace(run, task, 1),
                                       summary=f"{route.summary} (task: alias of run)")
    return None


def _with_aliases(declared: tuple[Route, ...]) -> tuple[Route, ...]:
    routes = [*declared, *filter(None, map(_task_alias, declared))]
    gateway = [dataclasses.replace(r, path=_GATEWAY + r.path.removeprefix(_COMPONENT_DB),
                                   summary=f"{r.summary} (Unified API gateway form)")
               for r in routes if r.path.startswith(_COMPONENT_DB)]
    return (*routes, *gateway)  # gateway last: the cross-component routes match first


ROUTE_TABLE: tuple[Route, ...] = _with_aliases(_DECLARED)


def _registered_path(path: str) -> str:
    for plain, pattern in _REGISTER_AS.items():
        if path.startswith(plain):
            return pattern + path.removeprefix(plain)
    return path


def _bound(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for `route`: the one place parameters are checked."""
    async def handle(request: web.Request) -> web.StreamResponse:
        check_path(request)
        query = parse_query(request.query, route.query)
        if route.waits_for_min_seq and (min_seq := getattr(query, "min_seq", 0)):
            await reads.wait_for_fold(request, min_seq)
        if route.role == "ingest":  # it appends: live streams yield to it (api/ingest_first.py)
            with request.app[INGEST_FIRST].ingesting():
                return await route.handler(request, query)
        return await route.handler(request, query)
    return handle


def add_routes(app: web.Application) -> None:
    app[ROUTE_INDEX] = {app.router.add_route(r.method, _registered_path(r.path), _bound(r)): r
                        for r in ROUTE_TABLE}
