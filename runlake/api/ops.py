"""Operations routes: liveness, readiness (fold lag), Prometheus metrics, OpenAPI."""

from __future__ import annotations

import asyncio

from aiohttp import web

from runlake.api.metrics import exposition, metric
from runlake.api.openapi import openapi_json
from runlake.api.params import NoQuery
from runlake.api.responses import Health, Readiness, ReadyStatus, json_response
from runlake.api.state import AUTH, EVENT_LOG, FOLD, HTTP_METRICS, INBOX, ROUTE_INDEX, SETTINGS


async def healthz(request: web.Request, query: NoQuery) -> web.Response:
    return json_response(Health())


async def readyz(request: web.Request, query: NoQuery) -> web.Response:
    """200 while the fold runs at most `read_wait_s` behind the log, else 503.

    The threshold is the longest a read with `min_seq` waits: beyond it, a
    client reading its own writes would time out, so the server is not ready.
    A fold whose last attempt failed is `failing`, with the error in `fold_error`:
    its whole message only while auth is off (the route is open, and a DuckDB message
    may quote events' data), else its type; the server log has it whole.
    """
    readiness = _readiness(request.app)
    if readiness.fold_error is not None and request.app[AUTH].enabled:
        readiness.fold_error = readiness.fold_error.partition(":")[0] + " (see the server log)"
    return json_response(readiness, 200 if readiness.status == "ready" else 503)


def _readiness(app: web.Application) -> Readiness:
    last_seq = app[EVENT_LOG].last_seq
    max_lag = app[SETTINGS].read_wait_s
    fold = app[FOLD]
    lag_events, lag_seconds = fold.lag()
    status: ReadyStatus = "not_running"
    if fold.last_error is not None:
        status = "failing"
    elif fold.running:
        status = "ready" if lag_seconds <= max_lag else "lagging"
    return Readiness(status, last_seq, fold.folded_seq, lag_events, lag_seconds, max_lag,
                     fold_error=fold.last_error)


async def metrics(request: web.Request, query: NoQuery) -> web.Response:
    app = request.app
    event_log = app[EVENT_LOG]
    fold = app[FOLD]
    lag_events, lag_seconds = fold.lag()
    lines = [
        *metric("runlake_events_appended_total", "counter",
                "events appended to the log since start", event_log.appended_events),
        *metric("runlake_group_commits_total", "counter",
                "group commits (one fsync each) since start", event_log.group_commits),
        *metric("runlake_log_last_seq", "gauge", "seq of the newest event in the log",
                event_log.last_seq),
        *metric("runlake_fold_running", "gauge", "1 while the fold follows the log",
                int(fold.running)),
        *metric("runlake_events_folded_total", "counter",
                "events folded into the database since start",
                fold.events_folded),
        *metric("runlake_fold_seq", "gauge", "high-water mark of the fold",
                fold.folded_seq),
        *metric("runlake_fold_lag_events", "gauge", "events in the log not yet folded",
                lag_events),
        *metric("runlake_fold_lag_seconds", "gauge", "seconds since the fold was last caught up",
                lag_seconds),
        *metric("runlake_fold_errors_total", "counter",
                "fold attempts that failed since start (the fold retries every second)",
                fold.errors),
        *metric("runlake_fold_failing", "gauge",
                "1 while the fold's last attempt failed (/readyz fold_error says why)",
                int(fold.last_error is not None)),
        *_inbox_metrics(app),
        *app[AUTH].render(),
        *app[HTTP_METRICS].render(),
    ]
    return web.Response(
        body=exposition(lines),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def openapi(request: web.Request, query: NoQuery) -> web.Response:
    routes = tuple(request.app[ROUTE_INDEX].values())  # in the table's order
    # Built once (cached), off the loop: the first build takes tens of milliseconds.
    body = await asyncio.get_running_loop().run_in_executor(None, openapi_json, routes)
    return web.Response(body=body, content_type="application/json")


def _inbox_metrics(app: web.Application) -> list[str]:
    inbox = app.get(INBOX)
    if inbox is None:
        return []
    return [
        *metric("runlake_inbox_files_ingested_total", "counter",
                "inbox files appended and moved out", inbox.files_ingested),
        *metric("runlake_inbox_files_rejected_total", "counter",
                "inbox files moved to .rejected/", inbox.files_rejected),
        *metric("runlake_inbox_events_total", "counter",
                "events appended from inbox files", inbox.events_ingested),
        *metric("runlake_inbox_files_waiting", "gauge",
                "files seen in the inbox at the last look", inbox.files_waiting),
    ]
