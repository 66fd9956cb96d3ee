"""Read routes (DESIGN §4): thin handlers over `runlake.views.queries`.

Each handler parses and checks its parameters (a bad one is a 400 naming it),
waits for `min_seq` when asked (read-your-writes), then runs one query function
on a reader thread with its own cursor. No SQL here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from aiohttp import web

from runlake.api.auth import visible_components
from runlake.api.params import MAX_PARAM_CHARS, bad_param, path_component
from runlake.api.responses import Accepted, json_response
from runlake.api.state import DATABASE, EVENT_LOG, FOLD, SETTINGS
from runlake.errors import BadRequest, NotFound, Unavailable
from runlake.events import LOG_SCHEMA, EventLog, decode_events, row_to_event
from runlake.views import queries as q

T = TypeVar("T")
MAX_LIMIT = 1000
RUN_STATUSES = q.STATUSES
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")


# -- parameters ---------------------------------------------------------------


def _str(request: web.Request, name: str, choices: tuple[str, ...] | None = None) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value or len(value) > MAX_PARAM_CHARS:
        raise bad_param(name, f"must be 1..{MAX_PARAM_CHARS} characters")
    if choices is not None and value not in choices:
        raise bad_param(name, f"must be one of {', '.join(choices)}")
    return value


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_param(name, "must be an integer") from None
    if not lo <= value <= hi:
        raise bad_param(name, f"must be between {lo} and {hi}")
    return value


def _time(request: web.Request, name: str) -> datetime | None:
    raw = _str(request, name)
    if raw is None:
        return None
    try:
        value = msgspec.json.decode(msgspec.json.encode(raw), type=datetime)
    except msgspec.ValidationError:
        raise bad_param(
            name, "must be an RFC 3339 time with a timezone, e.g. 2026-01-31T00:00:00Z") from None
    if value.tzinfo is None:
        raise bad_param(name, "must include a timezone (Z or ±HH:MM)")
    return value


def _page(request: web.Request, default: int = 50) -> tuple[int, int]:
    return (_int(request, "limit", default, 1, MAX_LIMIT),
            _int(request, "offset", 0, 0, 10_000_000))


def _tags(request: web.Request) -> list[tuple[str, str]]:
    tags = []
    for raw in request.query.getall("tag", []):
        key, sep, value = raw.partition(":")
        if not sep or not key or len(raw) > MAX_PARAM_CHARS:
            raise bad_param("tag", "must look like key:value")
        tags.append((key, value))
    return tags


def _segment(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not value or len(value) > 256:
        raise BadRequest(f"{name} in the URL must be 1..256 characters",
                         [{"parameter": name, "message": "must be 1..256 characters"}])
    return value


async def _read(request: web.Request, fn: Callable[[q.Cursor], T]) -> T:
    """Wait for `min_seq` if given, then run `fn` on a reader cursor."""
    if min_seq := _int(request, "min_seq", 0, 0, 2**62):
        await wait_for_fold(request, min_seq)
    return await request.app[DATABASE].read(fn)


async def wait_for_fold(request: web.Request, min_seq: int, where: str = "parameter") -> None:
    """Read-your-writes: wait (at most `read_wait_s`) until the fold has passed
    `min_seq`. `where` is how the client sent it: a query `parameter` or a body `field`."""
    last = request.app[EVENT_LOG].last_seq
    if min_seq > last:
        message = f"is beyond the log's last seq {last}"
        if where == "parameter":
            raise bad_param("min_seq", message)
        raise BadRequest(f"field 'min_seq' {message}", [{"field": "min_seq", "message": message}])
    fold = request.app[FOLD]
    if not await fold.wait_folded(min_seq, request.app[SETTINGS].read_wait_s):
        raise Unavailable(f"the fold has not reached seq {min_seq} yet "
                          f"(at {fold.folded_seq}); retry shortly")


async def _component(request: web.Request) -> str:
    return path_component(request)


def _found(value: T | None, what: str) -> T:
    if value is None:
        raise NotFound(f"{what} not found")
    return value


# -- per component ------------------------------------------------------------


async def list_runs(request: web.Request) -> web.Response:
    c = await _component(request)
    limit, offset = _page(request)
    sort = _str(request, "sort", tuple(q.RUN_SORTS)) or q.DEFAULT_RUN_SORT
    kwargs: dict[str, Any] = dict(
        status=_str(request, "status", RUN_STATUSES), model=_str(request, "model"),
        hardware=_str(request, "hardware"), batch_id=_str(request, "batch_id"),
        tags=_tags(request), since=_time(request, "since"), until=_time(request, "until"),
        q=_str(request, "q"), sort=sort, limit=limit, offset=offset,
    )
    return json_response(await _read(request, lambda cur: q.list_runs(cur, c, **kwargs)))


async def get_run(request: web.Request) -> web.Response:
    c, run_id = await _component(request), _segment(request, "run_id")
    run = await _read(request, lambda cur: q.get_run(cur, c, run_id))
    return json_response(_found(run, f"run {run_id!r} of component {c!r}"))


def _run_child(fn: Callable[..., dict[str, Any] | None], param: str,
               choices: tuple[str, ...] | None) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        c, run_id = await _component(request), _segment(request, "run_id")
        value = _str(request, param, choices)
        limit, offset = _page(request, 100)
        result = await _read(request, lambda cur: fn(cur, c, run_id, value, limit, offset))
        return json_response(_found(result, f"run {run_id!r} of component {c!r}"))

    return handler


run_metrics = _run_child(q.run_metrics, "name", None)
run_logs = _run_child(q.run_logs, "level", LOG_LEVELS)
run_results = _run_child(q.run_results, "outcome", OUTCOMES)


async def run_events(request: web.Request) -> web.Response:
    """The run's raw events from the log, since its last delete: those within its seq
    span as folded, and any the fold has not reached yet."""
    c, run_id = await _component(request), _segment(request, "run_id")
    limit, offset = _page(request, 100)
    span, folded = await _read(request, lambda cur: q.run_span_and_fold(cur, c, run_id))
    total, items = await asyncio.get_running_loop().run_in_executor(
        None, _events_of_run, request.app[EVENT_LOG], c, run_id, span, folded, limit, offset)
    if not total:
        raise NotFound(f"no events for run {run_id!r} of component {c!r}")
    return json_response({"items": items, "limit": limit, "offset": offset, "total": total})


def _events_of_run(event_log: EventLog, component: str, run_id: str,
                   span: tuple[int, int] | None, folded: int, limit: int, offset: int
                   ) -> tuple[int, list[dict[str, Any]]]:
    """How many events name the run within `span` and after `folded`, and the page of
    them, in seq order; only the page becomes Python objects. The cost is that of
    the span (every event logged between the run's first and last, any run's), not
    of the whole log, which took seconds to scan at 10 M events. A delete of the run
    not folded yet is among them, and so are the events it removed: they are in the
    log until the fold gets there."""
    ranges = ([span] if span is not None else []) + [(folded + 1, None)]
    picked = [batch.filter(pc.and_(pc.equal(batch.column("component"), component),
                                   pc.equal(batch.column("run_id"), run_id)))
              for first, last in ranges for batch in event_log.read(first, last)]
    table = pa.Table.from_batches(picked, schema=LOG_SCHEMA)
    return table.num_rows, [row_to_event(r) for r in table.slice(offset, limit).to_pylist()]


async def _append_delete(request: web.Request, event: dict[str, Any]) -> web.Response:
    events = decode_events(msgspec.json.encode(event))
    first, last = await request.app[EVENT_LOG].append_async(events)
    return json_response(Accepted(accepted=1, first_seq=first, last_seq=last), status=202)


async def delete_run(request: web.Request) -> web.Response:
    c, run_id = await _component(request), _segment(request, "run_id")
    return await _append_delete(request, {"type": "delete", "component": c, "run_id": run_id})


async def delete_batch(request: web.Request) -> web.Response:
    c, batch_id = await _component(request), _segment(request, "batch_id")
    return await _append_delete(request, {"type": "delete", "component": c,
                                          "batch_id": batch_id})


async def list_batches(request: web.Request) -> web.Response:
    c = await _component(request)
    limit, offset = _page(request)
    return json_response(await _read(request, lambda cur: q.list_batches(cur, c, limit, offset)))


async def get_batch(request: web.Request) -> web.Response:
    c, batch_id = await _component(request), _segment(request, "batch_id")
    batch = await _read(request, lambda cur: q.get_batch(cur, c, batch_id))
    return json_response(_found(batch, f"batch {batch_id!r} of component {c!r}"))


def _stats(by: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        c = await _component(request)
        limit, offset = _page(request, 100)
        return json_response(
            await _read(request, lambda cur: q.group_stats(cur, c, by, limit, offset)))

    return handler


model_stats = _stats("model")
hardware_stats = _stats("hardware")


async def performance(request: web.Request) -> web.Response:
    c = await _component(request)
    days = _int(request, "days", 30, 1, 3660)
    filters = {k: _str(request, k) for k in ("model", "hardware", "metric")}
    limit, offset = _page(request, 100)
    series = request.app[DATABASE].series
    return json_response(await _read(request, lambda cur: q.performance(
        cur, series, c, days, **filters, limit=limit, offset=offset)))


class SearchBody(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    limit: int = 20


async def _search_args(request: web.Request) -> tuple[str, int]:
    if request.method == "POST":
        try:
            body = msgspec.json.decode(await request.read(), type=SearchBody)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise BadRequest(f"search body: {e}", [{"field": None, "message": str(e)}]) from e
        query, limit = body.query, body.limit
    else:
        query, limit = _str(request, "query") or "", _int(request, "limit", 20, 1, MAX_LIMIT)
    if not query or len(query) > MAX_PARAM_CHARS:
        raise bad_param("query", f"must be 1..{MAX_PARAM_CHARS} characters")
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_param("limit", f"must be between 1 and {MAX_LIMIT}")
    return query, limit


async def search_component(request: web.Request) -> web.Response:
    c = await _component(request)
    query, limit = await _search_args(request)
    return json_response(await _read(request, lambda cur: q.search(cur, query, limit, [c])))


# -- across components ----------------------------------------------------------


async def search_all(request: web.Request) -> web.Response:
    query, limit = await _search_args(request)
    visible = visible_components(request)
    return json_response(await _read(request, lambda cur: q.search(cur, query, limit, visible)))


async def overview(request: web.Request) -> web.Response:
    visible = visible_components(request)
    return json_response(await _read(request, lambda cur: q.overview(cur, visible)))


async def model_overview(request: web.Request) -> web.Response:
    model, visible = _segment(request, "model"), visible_components(request)
    result = await _read(request, lambda cur: q.model_overview(cur, model, visible))
    return json_response(_found(result, f"model {model!r}"))
