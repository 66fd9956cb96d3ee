"""Read routes (DESIGN §4): thin handlers over `runlake.views.queries`.

Each handler gets its query string parsed and checked (params.py, by the route
wrapper in routes.py, which also waits for `min_seq`), then runs one query
function on a reader thread with its own cursor. No SQL here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from aiohttp import web

from runlake.api import cursor
from runlake.api import params as p
from runlake.api.auth import visible_components
from runlake.api.params import bad_param, decode_body
from runlake.api.responses import Accepted, json_response
from runlake.api.state import DATABASE, EVENT_LOG, FOLD, SETTINGS
from runlake.errors import BadRequest, Conflict, NotFound, Unavailable
from runlake.events import LOG_SCHEMA, EventLog, decode_events, row_to_event
from runlake.views import keyset
from runlake.views import queries as q

T = TypeVar("T")


async def db_read(request: web.Request, fn: Callable[[q.Cursor], T]) -> T:
    """Run `fn` on a reader cursor, within the read budget (the route wrapper has
    waited for `min_seq`). A client that goes away cancels the handler, which stops
    the query. A route naming a component answers 404 when it has never had an event:
    a misspelt name must not look like one with no data."""
    budget = request.app[SETTINGS].read_budget_s
    component = request.match_info.get("component")
    if component is None:
        return await request.app[DATABASE].read(fn, budget_s=budget)

    def checked(cur: q.Cursor) -> tuple[bool, Any]:  # one trip to the reader
        if q.component_known(cur, component):
            return True, fn(cur)
        return False, q.seen(cur, None)  # for the 404: the components with events

    known, value = await request.app[DATABASE].read(checked, budget_s=budget)
    if not known:
        raise _unknown_component(request, component, value)
    return value  # type: ignore[no-any-return]


def _unknown_component(request: web.Request, component: str, names: list[str]) -> NotFound:
    visible = visible_components(request)
    names = [n for n in names if visible is None or n in visible]
    return NotFound(f"component {component!r} has no events; known components: "
                    f"{', '.join(names) or '(none yet)'}",
                    [{"parameter": "component", "message": "unknown component",
                      "allowed": names}])


async def wait_for_fold(request: web.Request, min_seq: int, where: str = "parameter") -> None:
    """Read-your-writes: wait (at most `read_wait_s`) until the fold has passed
    `min_seq`. `where` is how the client sent it: a query `parameter` or a body `field`.
    A seq the log has not reached is a 409: it came from another log (a seq from a
    202 of this server is always within it), and waiting would not bring it."""
    last = request.app[EVENT_LOG].last_seq
    if min_seq > last:
        message = f"is beyond the log's last seq {last}"
        raise Conflict(f"{where} 'min_seq' {message}", [{where: "min_seq", "message": message}])
    fold = request.app[FOLD]
    if not await fold.wait_folded(min_seq, request.app[SETTINGS].read_wait_s):
        raise Unavailable(f"the fold has not reached seq {min_seq} yet "
                          f"(at {fold.folded_seq}); retry shortly")


def found(value: T | None, what: str) -> T:
    if value is None:
        raise NotFound(f"{what} not found")
    return value


# -- per component ------------------------------------------------------------


def _path(request: web.Request) -> tuple[str, str]:
    """The component and the route's other path parameter (checked by the wrapper)."""
    info = request.match_info
    return info["component"], next(v for k, v in info.items() if k != "component")


async def get_run(request: web.Request, query: p.ReadQuery) -> web.Response:
    c, run_id = _path(request)
    run = await db_read(request, lambda cur: q.get_run(cur, c, run_id))
    return json_response(found(run, f"run {run_id!r} of component {c!r}"))


def _run_child(fn: Callable[..., dict[str, Any] | None], param: str
               ) -> Callable[[web.Request, Any], Any]:
    async def handler(request: web.Request, query: Any) -> web.Response:
        c, run_id = _path(request)
        value, limit, offset = getattr(query, param), query.limit, query.offset
        # Keyset by seq (docs/facets.md "Paging"): the token pages this run and filter.
        key = cursor.filters_key({"component": c, "run_id": run_id, param: value})
        position = cursor.start(query.next, offset, "seq", key)
        after_seq = None
        if position is not None:
            after_seq, offset = _token_seq(position), position.offset
        result = await db_read(request, lambda cur: fn(cur, c, run_id, value, limit, offset,
                                                       after_seq))
        page = found(result, f"run {run_id!r} of component {c!r}")
        last = page.pop("next_seq")
        page["next"] = None if last is None else cursor.make(
            True, "seq", last, str(last), offset + len(page["items"]), key)
        return json_response(page)

    return handler


def _token_seq(position: cursor.Position) -> int:
    """The seq a by-seq token ended on, or the 400 for one no page made."""
    if not isinstance(position.value, float | int) or isinstance(position.value, bool) \
            or not 0 <= position.value <= 2**62 \
            or position.value != int(position.value):  # a seq is an int64
        raise cursor.not_made_here()
    return int(position.value)


run_metrics = _run_child(q.run_metrics, "name")
run_logs = _run_child(q.run_logs, "level")
run_results = _run_child(q.run_results, "outcome")


async def run_events(request: web.Request, query: p.KeysetLongPage) -> web.Response:
    """The run's raw events from the log, since its last delete: those within its seq
    span as folded, and any the fold has not reached yet. `next` pages on by seq, so
    events logged between two fetches come after the cursor (docs/facets.md "Paging")."""
    c, run_id = _path(request)
    limit, offset = query.limit, query.offset
    key = cursor.filters_key({"component": c, "run_id": run_id, "list": "events"})
    position = cursor.start(query.next, offset, "seq", key)
    after_seq = None
    if position is not None:
        after_seq, offset = _token_seq(position), position.offset
    span, folded = await db_read(request, lambda cur: q.run_span_and_fold(cur, c, run_id))
    total, items, more = await asyncio.get_running_loop().run_in_executor(
        None, _events_of_run, request.app[EVENT_LOG], c, run_id, span, folded, limit, offset,
        after_seq)
    if not total:
        raise NotFound(f"no events for run {run_id!r} of component {c!r}")
    last = items[-1]["seq"] if items else None
    return json_response({"items": items, "limit": limit, "offset": offset, "total": total,
                          "next": cursor.make(more and last is not None, "seq", last,
                                              str(last), offset + len(items), key)})


def _events_of_run(event_log: EventLog, component: str, run_id: str,
                   span: tuple[int, int] | None, folded: int, limit: int, offset: int,
                   after_seq: int | None = None) -> tuple[int, list[dict[str, Any]], bool]:
    """How many events name the run within `span` and after `folded`, the page of
    them in seq order (by offset, or the first `limit` after `after_seq`), and whether
    any follow it; only the page becomes Python objects. The cost is that of
    the span (every event logged between the run's first and last, any run's), not
    of the whole log, which took seconds to scan at 10 M events. A delete of the run
    not folded yet is among them, and so are the events it removed: they are in the
    log until the fold gets there."""
    ranges = ([span] if span is not None else []) + [(folded + 1, None)]
    picked = [batch.filter(pc.and_(pc.equal(batch.column("component"), component),
                                   pc.equal(batch.column("run_id"), run_id)))
              for first, last in ranges for batch in event_log.read(first, last)]
    table = pa.Table.from_batches(picked, schema=LOG_SCHEMA)
    total = table.num_rows
    if after_seq is not None:
        table, offset = table.filter(pc.greater(table.column("seq"), after_seq)), 0
    page = [row_to_event(r) for r in table.slice(offset, limit).to_pylist()]
    return total, page, offset + len(page) < table.num_rows


async def _delete(request: web.Request, what: str, exists: Callable[[q.Cursor], bool]
                  ) -> web.Response:
    """Append a delete of `what` (run_id or batch_id) once the fold has caught up to
    this request and found it; 404, appending nothing, when it does not exist."""
    c, key = _path(request)
    label = f"{what.removesuffix('_id')} {key!r} of component {c!r}"
    await wait_for_fold(request, request.app[EVENT_LOG].last_seq)
    if not await db_read(request, exists):
        raise NotFound(f"{label} not found; nothing was deleted")
    events = decode_events(msgspec.json.encode({"type": "delete", "component": c, what: key}))
    first, last = await asyncio.shield(request.app[EVENT_LOG].append_async(events))
    return json_response(Accepted(accepted=1, first_seq=first, last_seq=last), status=202)


async def delete_run(request: web.Request, query: p.ReadQuery) -> web.Response:
    c, run_id = _path(request)
    return await _delete(request, "run_id", lambda cur: q.run_span(cur, c, run_id) is not None)


async def delete_batch(request: web.Request, query: p.ReadQuery) -> web.Response:
    c, batch_id = _path(request)
    return await _delete(request, "batch_id",
                         lambda cur: q.get_batch(cur, c, batch_id, runs=0) is not None)


async def list_batches(request: web.Request, query: p.KeysetPage) -> web.Response:
    c, limit, offset = request.match_info["component"], query.limit, query.offset
    # Keyset on (last activity desc, batch_id) (docs/facets.md "Paging").
    key = cursor.filters_key({"component": c, "list": "batches"})
    after, offset = cursor.resume(query.next, offset, q.BATCH_SORT, key, q.BATCH_KEYS)
    page = await db_read(request, lambda cur: q.list_batches(cur, c, limit, offset, after))
    page["next"] = cursor.next_of(page, page.pop("ended"), q.BATCH_SORT, offset, key)
    return json_response(page)


async def get_batch(request: web.Request, query: p.ReadQuery) -> web.Response:
    c, batch_id = _path(request)
    batch = await db_read(request, lambda cur: q.get_batch(cur, c, batch_id))
    return json_response(found(batch, f"batch {batch_id!r} of component {c!r}"))


def _stats(by: str) -> Callable[[web.Request, p.KeysetLongPage], Any]:
    async def handler(request: web.Request, query: p.KeysetLongPage) -> web.Response:
        c, limit, offset = request.match_info["component"], query.limit, query.offset
        # Keyset on (runs desc, name nulls last) (docs/facets.md "Paging").
        key = cursor.filters_key({"component": c, "list": f"{by}/stats"})
        after, offset = cursor.resume(query.next, offset, q.STATS_SORT, key, q.STATS_KEYS)
        page = await db_read(request, lambda cur: q.group_stats(cur, c, by, limit, offset,
                                                                after))
        page["next"] = cursor.next_of(page, page.pop("ended"), q.STATS_SORT, offset, key)
        return json_response(page)

    return handler


model_stats = _stats("model")
hardware_stats = _stats("hardware")


# `next` on performance (docs/facets.md "Paging"): the groups' keys, which never change.
_PERF_SORT = "model,hardware,metric"
_PERF_KEYS = [keyset.Key("model", False, "text"), keyset.Key("hardware", False, "text")]


async def performance(request: web.Request, query: p.PerformanceQuery) -> web.Response:
    c, limit, offset = request.match_info["component"], query.limit, query.offset
    series = request.app[DATABASE].series
    key = cursor.filters_key({"component": c, "list": "performance", "days": query.days,
                              "model": query.model, "hardware": query.hardware,
                              "metric": query.metric})
    position = cursor.start(query.next, offset, _PERF_SORT, key)
    after, skip = None, offset
    if position is not None:
        try:
            model, hardware = keyset.sql_values(_PERF_KEYS, position.value)
        except ValueError:
            raise cursor.not_made_here() from None
        after, offset, skip = (model, hardware, position.key), position.offset, 0
    # one group more than the page tells whether a next page exists
    page = await db_read(request, lambda cur: q.performance(
        cur, series, c, query.days, model=query.model, hardware=query.hardware,
        metric=query.metric, limit=limit + 1, offset=skip, after=after,
        trend=query.trend == "true"))
    items = page["items"]
    page.update(items=items[:limit], limit=limit, offset=offset)
    last = items[limit - 1] if len(items) > limit else None
    page["next"] = None if last is None else cursor.make(
        True, _PERF_SORT, [last["model"], last["hardware"]], last["metric"],
        offset + limit, key)
    return json_response(page)


async def _search_args(request: web.Request, query: p.SearchQuery | p.SearchPostQuery
                       ) -> tuple[str, int]:
    """The search text and limit: from the query string, or from a POST's JSON body,
    whose fields win over the URL's."""
    text, limit = query.query, query.limit
    if request.method == "POST" and (raw := await request.read()).strip():
        body = decode_body(request, raw, p.SearchBody)
        text, limit = body.query, limit if body.limit is None else int(body.limit)
    if text is None:
        raise bad_param("query", "is required (in the URL, or a JSON body for POST)")
    return text, 20 if limit is None else limit


async def search_component(request: web.Request, query: p.SearchQuery) -> web.Response:
    c = request.match_info["component"]
    try:
        text, limit = await _search_args(request, query)
    except BadRequest:
        # The path before the query: a misspelt component is a 404 even when the
        # query is missing too (checked only then, so a good request reads once).
        await db_read(request, lambda cur: None)
        raise
    return json_response(await db_read(request, lambda cur: q.search(cur, text, limit, [c])))


# -- across components ----------------------------------------------------------


async def search_all(request: web.Request, query: p.SearchQuery) -> web.Response:
    text, limit = await _search_args(request, query)
    visible = visible_components(request)
    return json_response(await db_read(request, lambda cur: q.search(cur, text, limit, visible)))


async def overview(request: web.Request, query: p.ReadQuery) -> web.Response:
    visible = visible_components(request)
    return json_response(await db_read(request, lambda cur: q.overview(cur, visible)))


async def model_overview(request: web.Request, query: p.ReadQuery) -> web.Response:
    model, visible = request.match_info["model"], visible_components(request)
    result = await db_read(request, lambda cur: q.model_overview(cur, model, visible))
    return json_response(found(result, f"model {model!r}"))
