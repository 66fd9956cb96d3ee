"""Named queries over the tables and views: what the HTTP API calls.

Each function takes a DuckDB cursor first and returns plain dicts/lists ready
to encode. Every value reaches SQL as a parameter; sort keys and filters come
from whitelists here. Timestamps come back as timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import msgspec

from runlake.views.keyset import Key, order_by, page_sql, token_values
from runlake.views.metric_series import MetricSeries

Cursor = duckdb.DuckDBPyConnection
STATUSES = ("pending", "running", "completed", "failed", "cancelled")

RUN_COLUMNS = (
    "component, run_id, model, hardware, batch_id, name, params, status, error, "
    "created_at, started_at, finished_at, duration_s, updated_at"
)


def _utc(v: Any) -> Any:
    return v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v


def _dicts(cur: Cursor, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [{n: _utc(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _one(cur: Cursor, sql: str, params: list[Any] | None = None) -> Any:
    row = cur.execute(sql, params or []).fetchone()
    return row[0] if row else None


def _run_item(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("params") is not None:
        row["params"] = msgspec.json.decode(row["params"])
    return row


def _page(items: list[Any], limit: int, offset: int, total: int) -> dict[str, Any]:
    return {"items": items, "limit": limit, "offset": offset, "total": total}


def contains_text(columns: Sequence[str], query: str) -> tuple[str, list[str]]:
    """A condition: any of `columns` holds `query`, case-insensitive, its %, _ and \\
    taken literally; and its parameters. The one way a read matches typed text.

    Both forms are evaluated once per distinct value of a dictionary-compressed
    column (models, step and test names...). ILIKE is the cheaper on columns of
    unique values (run ids, log lines) but takes % and _ as wildcards, and an
    ESCAPE clause makes it a generic function run on every row: a query holding
    one of them is matched by contains(lower()) instead, which takes it literally."""
    if any(ch in query for ch in "%_\\"):
        predicate, param = "contains(lower({}), lower(?))", query
    else:
        predicate, param = "{} ILIKE ?", f"%{query}%"
    return f"({' OR '.join(predicate.format(c) for c in columns)})", [param] * len(columns)


# -- runs ---------------------------------------------------------------------


# The runs holding every (key, value) of the filter, as one join of `tags` with the
# filter's pairs (two list parameters unnested side by side): its cost grows with the
# number of pairs, where one EXISTS per tag made a plan of N joins (BENCHMARKS.md,
# session 8). `tags` holds one row per (run, key), so a run matches as many
# rows as it holds of the (distinct) pairs: all of them when the count is theirs;
# two values of one key then match no run, as they would one by one.
_TAGGED = """run_id IN (
    SELECT t.run_id FROM tags t
    JOIN (SELECT unnest(?::VARCHAR[]) AS key, unnest(?::VARCHAR[]) AS value) f
        ON t.key = f.key AND t.value = f.value
    WHERE t.component = ? GROUP BY t.run_id HAVING count(*) = ?)"""


def _newest_runs(cur: Cursor, component: str, column: str, value: str,
                 limit: int) -> list[dict[str, Any]]:
    """A batch's or a model's newest runs: what the runs list filtered on `column`
    shows first (its default order, newest created first)."""
    order = order_by([Key("created_at", True, "time")], "run_id")
    rows = _dicts(cur, f"SELECT {RUN_COLUMNS} FROM runs WHERE component = ? AND {column} = ? "
                  f"ORDER BY {order} LIMIT ?", [component, value, limit])
    return [_run_item(r) for r in rows]


# A run's rows in any table: by key, within its seq span. The span filter changes no
# answer (every row of the run carries a seq in it) but lets zone maps skip every row
# group outside it: the tables are written in seq order, so a run detail at 10 M
# events reads a few row groups instead of every one.
_OF_RUN = "component = ? AND run_id = ? AND seq BETWEEN ? AND ?"
# A summary row's last point is one of the run's events: its seq lies in the span too.
_SUMMARY_OF_RUN = "component = ? AND run_id = ? AND last_seq BETWEEN ? AND ?"


def get_run(cur: Cursor, component: str, run_id: str, recent_logs: int = 20) -> dict[str, Any] | None:
    """One run with its steps, tags, metric and result summaries, recent logs, artifacts."""
    rows = _dicts(cur, f"SELECT {RUN_COLUMNS}, events, first_seq, last_seq FROM runs "
                  "WHERE component = ? AND run_id = ?", [component, run_id])
    if not rows:
        return None
    run = _run_item(rows[0])
    key = [component, run_id, run.pop("first_seq"), run.pop("last_seq")]
    run["steps"] = _dicts(cur, "SELECT step, status, progress, message, ts FROM steps "
                          f"WHERE {_OF_RUN} ORDER BY ts, seq", key)
    run["tags"] = dict(cur.execute(f"SELECT key, value FROM tags WHERE {_OF_RUN} "
                                   "ORDER BY key", key).fetchall())
    # Kept by the fold (views/run_metric_summary.py): aggregating the points here read
    # every point of a long series at each page load.
    run["metrics"] = _dicts(cur, f"""
        SELECT name, unit, count, sum / count AS mean, min, max, last
        FROM run_metric_summary WHERE {_SUMMARY_OF_RUN} ORDER BY name""", key)
    run["results"] = result_counts(cur, key)
    # The most recent `recent_logs` lines, listed oldest first like `…/logs`.
    run["logs"] = _dicts(cur, "SELECT * FROM (SELECT level, message, ts, seq FROM logs "
                         f"WHERE {_OF_RUN} ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                         [*key, recent_logs])
    run["artifacts"] = _dicts(cur, "SELECT name, uri, size_bytes, media_type, ts FROM artifacts "
                              f"WHERE {_OF_RUN} ORDER BY seq", key)
    return run


_OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")
# A test counts once, by its last attempt; `retried`: it ran more than once in the run;
# `flaky`: its attempts both passed and failed (or errored) -- docs/tests.md.
_RESULT_COUNTS = f"""
SELECT arg_max(outcome, attempt) AS outcome, count(*) > 1 AS retried,
       bool_or(outcome = 'passed') AND bool_or(outcome IN ('failed', 'error')) AS flaky
FROM results WHERE {_OF_RUN} GROUP BY test"""


def result_counts(cur: Cursor, key: list[Any]) -> dict[str, int]:
    """The run's result summary; `key`: component, run_id, first and last seq."""
    rows = cur.execute(f"""SELECT outcome, count(*), count(*) FILTER (retried),
        count(*) FILTER (flaky) FROM ({_RESULT_COUNTS}) GROUP BY 1""", key).fetchall()
    outcomes = {r[0]: r[1] for r in rows}
    return {"total": sum(outcomes.values()), **{o: outcomes.get(o, 0) for o in _OUTCOMES},
            "retried": sum(r[2] for r in rows), "flaky": sum(r[3] for r in rows)}


def run_span(cur: Cursor, component: str, run_id: str) -> tuple[int, int] | None:
    """The first and last seq of the run's events (since its last delete), if it exists."""
    row = cur.execute("SELECT first_seq, last_seq FROM runs WHERE component = ? AND run_id = ?",
                      [component, run_id]).fetchone()
    return None if row is None else (row[0], row[1])


def run_span_and_fold(cur: Cursor, component: str, run_id: str
                      ) -> tuple[tuple[int, int] | None, int]:
    """The run's seq span (None: no such run) and the fold's high-water mark, read
    together: the log holds the run's events within the span, or past the mark."""
    first, last, folded = cur.execute(
        "SELECT r.first_seq, r.last_seq, f.folded_seq FROM fold_state f "
        "LEFT JOIN runs r ON r.component = ? AND r.run_id = ?", [component, run_id]).fetchone()
    return (None if first is None else (first, last)), folded


def _run_children(cur: Cursor, table: str, cols: str, component: str, run_id: str,
                  filt: tuple[str, str | None], limit: int, offset: int,
                  after_seq: int | None = None) -> dict[str, Any] | None:
    """A page of the run's rows of `table` (None if there is no such run), oldest first
    by seq. `after_seq` (from a `next` token) starts past that seq instead of skipping
    `offset` rows; `next_seq` is the page's last seq when more rows follow, else None
    (the handler makes it a token and drops it)."""
    span = run_span(cur, component, run_id)
    if span is None:
        return None
    where, params = _OF_RUN, [component, run_id, *span]
    if filt[1] is not None:
        where += f" AND {filt[0]} = ?"
        params.append(filt[1])
    total = _one(cur, f"SELECT count(*) FROM {table} WHERE {where}", params)
    page_where, page_params, skip = where, list(params), offset
    if after_seq is not None:  # a row's seq never changes and new rows come after
        page_where, page_params, skip = f"{where} AND seq > ?", [*params, after_seq], 0
    items = _dicts(cur, f"SELECT {cols} FROM {table} WHERE {page_where} ORDER BY seq "
                   "LIMIT ? OFFSET ?", [*page_params, limit + 1, skip])
    page = _page(items[:limit], limit, offset, total)
    page["next_seq"] = items[limit - 1]["seq"] if len(items) > limit else None
    return page


def run_metrics(cur: Cursor, component: str, run_id: str, name: str | None = None,
                limit: int = 100, offset: int = 0, after_seq: int | None = None
                ) -> dict[str, Any] | None:
    return _run_children(cur, "metrics", "name, value, unit, step, ts, seq", component, run_id,
                         ("name", name), limit, offset, after_seq)


def run_logs(cur: Cursor, component: str, run_id: str, level: str | None = None,
             limit: int = 100, offset: int = 0, after_seq: int | None = None
             ) -> dict[str, Any] | None:
    return _run_children(cur, "logs", "level, message, ts, seq", component, run_id,
                         ("level", level), limit, offset, after_seq)


def run_results(cur: Cursor, component: str, run_id: str, outcome: str | None = None,
                limit: int = 100, offset: int = 0, after_seq: int | None = None
                ) -> dict[str, Any] | None:
    return _run_children(cur, "results", "test, outcome, duration_s, message, ts, seq, "
                         "attempt, file, classname, worker",
                         component, run_id, ("outcome", outcome), limit, offset, after_seq)


# -- batches ------------------------------------------------------------------

_BATCH_COLUMNS = ("component, batch_id, description, expected_count, runs, pending, running, "
                  "completed, failed, cancelled, finished, progress, declared_at, first_seen, "
                  "last_seen")


def _batch_item(row: dict[str, Any]) -> dict[str, Any]:
    row["by_status"] = {s: row.pop(s) for s in STATUSES}
    return row


# Last activity first, then by batch id: the order pages by offset and by `next`
# (keyset.after); a batch's activity moves as its runs arrive (docs/facets.md "Paging").
BATCH_SORT = "-activity"
BATCH_KEYS = [Key("coalesce(last_seen, declared_at)", True, "time")]


def list_batches(cur: Cursor, component: str, limit: int = 50, offset: int = 0,
                 after_row: tuple[list[Any], str] | None = None) -> dict[str, Any]:
    """A page of the component's batches and, under `ended`, where it ended (its last
    batch's sort values as a token holds them, and its id) when more follow, else None.
    `after_row` (SQL-ready sort values and a batch id, from a `next` token) starts the
    page past that batch instead of skipping `offset` rows."""
    total = _one(cur, "SELECT count(*) FROM batch_stats WHERE component = ?", [component])
    rows = _dicts(cur, *page_sql(
        f"SELECT {_BATCH_COLUMNS}, {BATCH_KEYS[0].column} AS _activity FROM batch_stats",
        "component = ?", [component], BATCH_KEYS, "batch_id", limit, offset, after_row))
    ended = None
    if len(rows) > limit:
        last = rows[limit - 1]
        ended = (token_values(BATCH_KEYS, {BATCH_KEYS[0].column: last["_activity"]}),
                 last["batch_id"])
    for row in rows:
        del row["_activity"]
    page = _page([_batch_item(r) for r in rows[:limit]], limit, offset, total)
    page["ended"] = ended
    return page


def get_batch(cur: Cursor, component: str, batch_id: str, runs: int = 100) -> dict[str, Any] | None:
    rows = _dicts(cur, f"SELECT {_BATCH_COLUMNS} FROM batch_stats WHERE component = ? "
                  "AND batch_id = ?", [component, batch_id])
    if not rows:
        return None
    batch = _batch_item(rows[0])
    batch["runs_list"] = _newest_runs(cur, component, "batch_id", batch_id, runs)
    return batch


# -- statistics ---------------------------------------------------------------

_GROUP_COLUMNS = ("runs, pending, running, completed, failed, cancelled, success_rate, "
                  "duration_avg_s, duration_p50_s, duration_p95_s, first_seen, last_seen")


def _stats_item(row: dict[str, Any]) -> dict[str, Any]:
    by_status = {s: row.pop(s) for s in STATUSES}
    out = {k: row[k] for k in list(row)[:2]}
    out.update({"runs": row["runs"], "by_status": by_status})
    out.update({k: row[k] for k in ("success_rate", "duration_avg_s", "duration_p50_s",
                                    "duration_p95_s", "first_seen", "last_seen")})
    return out


# Most runs first, then by the name, the runs without one last: the order pages by
# offset and by `next` (keyset.after). The tie is the name made non-null and unique
# ('0' + name, or '1' for none) so it sorts as `name NULLS LAST` (docs/facets.md "Paging").
STATS_SORT = "-runs"
STATS_KEYS = [Key("runs", True, "number")]


def stats_tie(by: str) -> str:
    return f"CASE WHEN {by} IS NULL THEN '1' ELSE '0' || {by} END"


def group_stats(cur: Cursor, component: str, by: str, limit: int = 100,
                offset: int = 0, after_row: tuple[list[Any], str] | None = None
                ) -> dict[str, Any]:
    """models/stats (by='model') or hardware/stats (by='hardware'), most runs first,
    and under `ended` where the page ended when more follow (see list_batches)."""
    table = {"model": "model_stats", "hardware": "hardware_stats"}[by]
    tie = stats_tie(by)
    total = _one(cur, f"SELECT count(*) FROM {table} WHERE component = ?", [component])
    rows = _dicts(cur, *page_sql(f"SELECT {by}, {_GROUP_COLUMNS}, {tie} AS _tie FROM {table}",
                                 "component = ?", [component], STATS_KEYS, tie, limit, offset,
                                 after_row))
    ended = None
    if len(rows) > limit:
        ended = (token_values(STATS_KEYS, rows[limit - 1]), rows[limit - 1]["_tie"])
    items = []
    for row in rows[:limit]:
        del row["_tie"]
        item = _stats_item({"component": component, **row})
        item.pop("component")
        items.append(item)
    page = _page(items, limit, offset, total)
    page["ended"] = ended
    return page


def performance(cur: Cursor, series: MetricSeries, component: str, days: int = 30, *,
                model: str | None = None, hardware: str | None = None,
                metric: str | None = None, today: date | None = None, limit: int = 100,
                offset: int = 0, after: tuple[str | None, str | None, str] | None = None,
                trend: bool = True) -> dict[str, Any]:
    """Per (model, hardware, metric) over the last `days` UTC calendar days (today
    included), from the daily rollups: count/mean/min/max exact, p50/p95/p99 from the
    merged histograms (interpolated like quantile_cont, ≤ 1 % relative error), and a
    daily trend (empty unless `trend`: most of the answer's bytes, which a reader of the
    figures alone does not need). A page of groups in (model, hardware, metric) order: a component can
    have thousands. Answered from `series`, the rollups held in memory per group
    (metric_series.py), which reads through `cur` what it lacks."""
    today = today or datetime.now(UTC).date()
    since = today - timedelta(days=days - 1)
    total, items = series.report(cur, component, since, today, model=model,
                                 hardware=hardware, metric=metric, limit=limit, offset=offset,
                                 after=after, trend=trend)
    return {"component": component, "days": days, "since": since, "until": today,
            **_page(items, limit, offset, total)}


# -- across components --------------------------------------------------------

_TOTALS = "runs, pending, running, completed, failed, cancelled, success_rate, events"


def _totals_item(row: dict[str, Any]) -> dict[str, Any]:
    return {"runs": row["runs"], "by_status": {s: row[s] for s in STATUSES},
            "success_rate": row["success_rate"], "events": row["events"],
            "first_seen": row.get("first_seen"), "last_seen": row.get("last_seen")}


def in_components(components: list[str] | None) -> tuple[str, list[Any]]:
    """`component` among `components` (None: any), as a condition and its params.
    An empty list matches nothing: `IN ()` is not SQL, FALSE is."""
    if components is None:
        return "TRUE", []
    if not components:
        return "FALSE", []
    return f"component IN ({', '.join('?' * len(components))})", list(components)


def created_between(since: datetime | None, until: datetime | None
                    ) -> tuple[list[str], list[Any]]:
    """`created_at` in [since, until), either end open when None: conditions, params."""
    where: list[str] = []
    params: list[Any] = []
    for op, value in ((">=", since), ("<", until)):
        if value is not None:
            where.append(f"created_at {op} ?")
            params.append(utc_naive(value))
    return where, params


def utc_naive(value: datetime) -> datetime:
    """`value` in UTC without its zone, as the columns hold times. A time whose UTC
    falls outside years 1-9999 (`0001-01-01T00:00:00+01:00`) is clamped to the end it
    passed: it still compares as before or after every stored time."""
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return datetime.min if value.year < 5000 else datetime.max


def overview(cur: Cursor, components: list[str] | None = None) -> dict[str, Any]:
    """Totals per component and overall; `components` limits what is shown."""
    cond, params = in_components(components)
    rows = _dicts(cur, f"SELECT component, {_TOTALS}, first_seen, last_seen FROM overview "
                  f"WHERE {cond} ORDER BY component", params)
    total = {k: sum(r[k] for r in rows) for k in ("runs", *STATUSES, "events")}
    done = total["completed"] + total["failed"]
    total["success_rate"] = total["completed"] / done if done else None
    total["first_seen"] = min((r["first_seen"] for r in rows if r["first_seen"]), default=None)
    total["last_seen"] = max((r["last_seen"] for r in rows if r["last_seen"]), default=None)
    per = {r["component"]: _totals_item(r) for r in rows}
    # The Unified API gateway's clients read `<c>_stats` (docs/compat.md): the same
    # totals, one key per component the key may see, zeros where it has no data.
    stats = {f"{c}_stats": per.get(c) or _totals_item(_ZERO) for c in seen(cur, components)}
    return {"components": per, "total": _totals_item(total), **stats}


_ZERO: dict[str, Any] = {"runs": 0, **dict.fromkeys(STATUSES, 0), "events": 0,
                         "success_rate": None}


def seen(cur: Cursor, components: list[str] | None = None) -> list[str]:
    """The components a key may see, sorted: those it is limited to (data or not), or
    else every component that has had an event (the overview's rows, one each)."""
    if components is not None:
        return sorted(components)
    return [c for (c,) in cur.execute("SELECT component FROM overview ORDER BY 1").fetchall()]


def component_known(cur: Cursor, component: str) -> bool:
    """Whether `component` has ever had an event folded: a misspelt one is not empty."""
    return bool(cur.execute("SELECT 1 FROM overview WHERE component = ?",
                            [component]).fetchall())


def model_overview(cur: Cursor, model: str, components: list[str] | None = None,
                   recent: int = 10) -> dict[str, Any] | None:
    """One model across components: totals, success rates and recent runs per component."""
    cond, params = in_components(components)
    rows = _dicts(cur, f"SELECT component, {_GROUP_COLUMNS} FROM model_stats WHERE model = ? "
                  f"AND {cond} ORDER BY component", [model, *params])
    if not rows:
        return None
    per = {}
    for row in rows:
        item = _stats_item({"component": row["component"], "model": model, **row})
        item.pop("component")
        item.pop("model")
        item["recent_runs"] = _newest_runs(cur, row["component"], "model", model, recent)
        per[row["component"]] = item
    total = {s: sum(p["by_status"][s] for p in per.values()) for s in STATUSES}
    done = total["completed"] + total["failed"]
    # The gateway's clients read `overview.total_<c>_runs` for every component, and
    # `total_generator_tasks` (the generator API called its runs tasks).
    counts = {c: per[c]["runs"] if c in per else 0 for c in seen(cur, components)}
    summary = {f"total_{c}_runs": n for c, n in counts.items()}
    summary["total_generator_tasks"] = counts.get("generator", 0)
    return {"model": model, "components": per,
            "total": {"runs": sum(p["runs"] for p in per.values()), "by_status": total,
                      "success_rate": total["completed"] / done if done else None},
            "overview": summary}


# Where search looks: (table, column) pairs whose match names a run.
SEARCH_SOURCES = (
    ("runs", "run_id"), ("runs", "model"), ("runs", "hardware"), ("runs", "batch_id"),
    ("runs", "name"), ("runs", "error"), ("tags", "value"), ("tags", "key"),
    ("steps", "step"), ("logs", "message"), ("results", "test"),
)


def search(cur: Cursor, query: str, limit: int = 20,
           components: list[str] | None = None) -> dict[str, Any]:
    """Runs matching `query` (case-insensitive substring) anywhere in SEARCH_SOURCES,
    grouped by component, most recently updated first (docs/design.md, Search)."""
    cond, cparams = in_components(components)
    params: list[Any] = []

    def matching(table: str) -> str:
        text, text_params = contains_text([c for t, c in SEARCH_SOURCES if t == table], query)
        params.extend([*cparams, *text_params])
        return f"{cond} AND {text}"

    # The other tables' matches, each run once, are tied to `runs` by one mark join;
    # the text is built in the order its placeholders take `params`.
    others = " UNION ALL ".join(
        f"SELECT component, run_id FROM {table} WHERE {matching(table)}"
        for table in dict.fromkeys(t for t, _ in SEARCH_SOURCES if t != "runs"))
    in_runs = matching("runs")
    # Ranking sorts only the runs at or above each component's limit-th newest
    # updated_at (a top-N aggregate finds it), not every match: a broad query
    # matches most runs, and a window over all of them cost more than the scans.
    rows = _dicts(cur, f"""
        WITH other AS (SELECT DISTINCT component, run_id FROM ({others})),
        hits AS MATERIALIZED (
            SELECT component, run_id, updated_at FROM runs r
            WHERE ({in_runs}) OR EXISTS (SELECT 1 FROM other o
                                        WHERE o.component = r.component AND o.run_id = r.run_id)
        ),
        counts AS (
            SELECT component, count(*) AS matches, max(updated_at, ?)[-1] AS floor
            FROM hits GROUP BY component
        ),
        ranked AS (
            SELECT h.component, h.run_id, c.matches,
                   row_number() OVER (PARTITION BY h.component
                                      ORDER BY h.updated_at DESC, h.run_id) AS rank
            FROM hits h JOIN counts c ON h.component = c.component AND h.updated_at >= c.floor
            QUALIFY rank <= ?
        )
        SELECT {RUN_COLUMNS}, matches FROM runs JOIN ranked USING (component, run_id)
        ORDER BY component, rank""", [*params, limit, limit])
    # Every component the key may see is listed, 0 and [] where nothing matched:
    # clients read `result_counts[c]` for each (docs/compat.md).
    visible = seen(cur, components)
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in visible}
    counts: dict[str, int] = dict.fromkeys(visible, 0)
    for row in rows:
        counts[row["component"]] = row.pop("matches")
        results.setdefault(row["component"], []).append(_run_item(row))
    return {"query": query, "results": results,
            # total last: a component named "total" cannot hide the overall count
            "result_counts": {**counts, "total": sum(counts.values())}}
