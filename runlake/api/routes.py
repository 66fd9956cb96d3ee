"""The URL map: every route in one table, each with what OpenAPI needs to describe it.

`add_routes` registers the table and keeps it in the app for `/api/openapi.json`,
so a route added here is served and documented at once.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from runlake.api import admin, export, ingest, ops, reads
from runlake.api.params import SLUG
from runlake.api.responses import Accepted, Health, Readiness
from runlake.api.state import ROUTE_INDEX
from runlake.events import EVENT_TYPES
from runlake.ingest.replay import ReplayStatus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Who may call a route (docs/security.md): open to all, or the key role it needs;
# admin keys may call every route.
RouteRole = Literal["open", "ingest", "read", "admin"]


@dataclass(frozen=True)
class Param:
    """A path or query parameter; `type` is any type msgspec can describe."""

    name: str
    description: str
    type: Any = str
    where: Literal["path", "query"] = "query"
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A request body: a description and a msgspec type per accepted media type."""

    description: str
    media: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Route:
    """One route. `response` is the msgspec type of the success body (None: plain
    text in `media_type`); `same_body` lists other statuses with that body;
    `errors` lists statuses answered with the error envelope. `role` is the one
    place a route's access is decided; left out, it is the strictest.
    `max_body_bytes` is a tighter body limit than the server's, enforced (413)
    before a declared body is read; an `always_admitted` route is answered even
    when the server is at its limit of concurrent requests."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    status: int = 200
    response: Any = None
    media_type: str = "application/json"
    body: Body | None = None
    params: tuple[Param, ...] = ()
    same_body: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()
    role: RouteRole = "admin"
    max_body_bytes: int | None = None
    always_admitted: bool = False


AnyEvent: Any = functools.reduce(operator.or_, EVENT_TYPES)
COMPONENT = Param("component", "the component, a slug like `test` or `generator`",
                  Annotated[str, Meta(pattern=f"^{SLUG.pattern}$")], "path", True)
EVENTS = Body(
    "One event, a JSON array of events, or NDJSON (one event per line). "
    "All or nothing: one bad event rejects the request and nothing is appended.",
    (("application/json", AnyEvent | list[AnyEvent]),
     ("application/x-ndjson", AnyEvent), ("application/jsonl", AnyEvent)),
)
INGEST_ERRORS = (400, 413, 415)
MIN_SEQ = Param("min_seq", "wait (bounded) until the fold has passed this seq", int)
PAGE = (Param("limit", "page size, at most 1000", int), Param("offset", "rows to skip", int),
        MIN_SEQ)
RUN = (COMPONENT, Param("run_id", "the run id", str, "path", True), MIN_SEQ)
BATCH = (COMPONENT, Param("batch_id", "the batch id", str, "path", True), MIN_SEQ)
SEARCH = (Param("query", "text to find", str, "query", True),
          Param("limit", "results per component", int), MIN_SEQ)
RUN_FILTERS = (
    COMPONENT, Param("status", "run status"), Param("model", "model"),
    Param("hardware", "hardware"), Param("batch_id", "batch id"),
    Param("tag", "key:value (repeatable)"), Param("since", "created at or after (RFC 3339)"),
    Param("until", "created before (RFC 3339)"), Param("q", "substring of id, name, model"),
    Param("sort", "created_at, -created_at, duration_s, run_id, … (- for descending)"), *PAGE,
)
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def _given(t: Any) -> Any:
    """A field's type as a query parameter: `X | None` is X (null is leaving it out)."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if typing.get_origin(t) in (types.UnionType, typing.Union) and len(args) == 1 \
        else t


ROUTE_TABLE: tuple[Route, ...] = (
    Route("POST", "/api/events", ingest.post_events, "Append events", "ingest",
          202, Accepted, body=EVENTS, errors=INGEST_ERRORS, role="ingest"),
    Route("POST", "/api/{component}/events", ingest.post_component_events,
          "Append events of one component (implied where left out)", "ingest",
          202, Accepted, body=EVENTS, params=(COMPONENT,), errors=INGEST_ERRORS, role="ingest"),
    Route("GET", "/healthz", ops.healthz, "Liveness: the server answers", "operations",
          response=Health, role="open", always_admitted=True),
    Route("GET", "/readyz", ops.readyz, "Readiness: how far the fold is behind the log",
          "operations", response=Readiness, same_body=(503,), role="open"),
    Route("GET", "/metrics", ops.metrics, "Prometheus metrics", "operations",
          media_type=PROMETHEUS_TEXT, role="read"),
    Route("GET", "/api/openapi.json", ops.openapi, "This OpenAPI 3.1 document", "operations",
          response=dict[str, Any], role="read"),
    *(Route(m, p, h, summary, "reads", response=dict[str, Any], params=params,
            status=202 if m == "DELETE" else 200, errors=(400, 404, 503),
            role="admin" if m == "DELETE" else "read")
      for m, p, h, summary, params in (
        ("GET", "/api/{component}/db/runs", reads.list_runs, "Runs, filtered", RUN_FILTERS),
        ("GET", "/api/{component}/db/tasks", reads.list_runs, "Alias of runs", RUN_FILTERS),
        ("GET", "/api/{component}/db/run/{run_id}", reads.get_run, "One run in detail", RUN),
        ("GET", "/api/{component}/db/task/{run_id}", reads.get_run, "Alias of run", RUN),
        ("GET", "/api/{component}/db/run/{run_id}/metrics", reads.run_metrics,
         "A run's metric points", (*RUN, Param("name", "metric name"), *PAGE)),
        ("GET", "/api/{component}/db/run/{run_id}/logs", reads.run_logs,
         "A run's log lines", (*RUN, Param("level", "log level"), *PAGE)),
        ("GET", "/api/{component}/db/run/{run_id}/results", reads.run_results,
         "A run's test results", (*RUN, Param("outcome", "test outcome"), *PAGE)),
        ("GET", "/api/{component}/db/run/{run_id}/events", reads.run_events,
         "A run's raw events from the log, since its last delete", (*RUN, *PAGE)),
        ("DELETE", "/api/{component}/db/run/{run_id}", reads.delete_run,
         "Delete a run (appends a delete event)", RUN),
        ("DELETE", "/api/{component}/db/batch/{batch_id}", reads.delete_batch,
         "Delete a batch and its runs (appends a delete event)", BATCH),
        ("GET", "/api/{component}/db/batches", reads.list_batches, "Batches", (COMPONENT, *PAGE)),
        ("GET", "/api/{component}/db/batch/{batch_id}", reads.get_batch, "One batch", BATCH),
        ("GET", "/api/{component}/db/models/stats", reads.model_stats,
         "Run statistics per model", (COMPONENT, *PAGE)),
        ("GET", "/api/{component}/db/hardware/stats", reads.hardware_stats,
         "Run statistics per hardware", (COMPONENT, *PAGE)),
        ("GET", "/api/{component}/db/performance", reads.performance,
         "Metric report over the last N days", (COMPONENT, Param("days", "window", int),
                                               Param("model", "model"),
                                               Param("hardware", "hardware"),
                                               Param("metric", "metric name"), *PAGE)),
        ("GET", "/api/{component}/db/search", reads.search_component, "Search one component",
         (COMPONENT, *SEARCH)),
        ("POST", "/api/{component}/db/search", reads.search_component,
         "Search one component (JSON body: query, limit)", (COMPONENT,)),
        ("GET", "/api/db/overview", reads.overview, "Totals per component", (MIN_SEQ,)),
        ("GET", "/api/db/model/{model}", reads.model_overview, "One model across components",
         (Param("model", "model name", str, "path", True), MIN_SEQ)),
        ("GET", "/api/db/search", reads.search_all, "Search every component", SEARCH),
        ("POST", "/api/db/search", reads.search_all, "Search (JSON body: query, limit)", ()),
    )),
    Route("POST", "/api/db/replay", admin.start_replay,
          "Rebuild the database from the log; reads use the old file until the swap",
          "admin", 202, ReplayStatus, errors=(409,), role="admin"),
    Route("GET", "/api/db/replay", admin.replay_status, "The latest replay's progress",
          "admin", response=ReplayStatus, role="admin"),
    Route("POST", "/api/{component}/db/export", export.post_export,
          "Stream the component's runs or events (NDJSON, JSON or Parquet; docs/limits.md)",
          "export", media_type="application/x-ndjson", params=(COMPONENT,), role="admin",
          body=Body("; ".join(f"{k}: {v}" for k, v in export.FIELD_DOCS.items()) + "; all optional",
                    (("application/json", export.ExportRequest),)),
          errors=(400, 413), max_body_bytes=export.MAX_BODY_BYTES),
    Route("GET", "/api/db/export", export.get_export,
          "Stream the runs or events of every component the key may see", "export",
          media_type="application/x-ndjson", role="admin", errors=(400,),
          params=tuple(Param(f.name, export.FIELD_DOCS[f.name], _given(f.type))
                       for f in msgspec.structs.fields(export.ExportRequest))),
)


def add_routes(app: web.Application) -> None:
    app[ROUTE_INDEX] = {app.router.add_route(r.method, r.path, r.handler): r
                        for r in ROUTE_TABLE}
