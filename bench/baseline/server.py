"""Seed-style baseline: what runlake replaces, kept honest for side-by-side benchmarks.

Each event is written straight into DuckDB as its request arrives: one INSERT (or upsert)
per event, autocommitted, on one connection. Every statistic is a GROUP BY over the base
tables at query time. No log, no views, no batching. Not part of runlake; never imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import msgspec
from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    component VARCHAR, run_id VARCHAR, model VARCHAR, hardware VARCHAR, batch_id VARCHAR,
    name VARCHAR, params VARCHAR, status VARCHAR DEFAULT 'pending', error VARCHAR,
    created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP, updated_at TIMESTAMP,
    PRIMARY KEY (component, run_id));
CREATE TABLE IF NOT EXISTS steps (
    component VARCHAR, run_id VARCHAR, step VARCHAR, status VARCHAR, progress DOUBLE,
    message VARCHAR, updated_at TIMESTAMP, PRIMARY KEY (component, run_id, step));
CREATE TABLE IF NOT EXISTS metrics (
    component VARCHAR, run_id VARCHAR, name VARCHAR, value DOUBLE, unit VARCHAR,
    step BIGINT, ts TIMESTAMP);
CREATE TABLE IF NOT EXISTS tags (
    component VARCHAR, run_id VARCHAR, key VARCHAR, value VARCHAR,
    PRIMARY KEY (component, run_id, key));
CREATE TABLE IF NOT EXISTS logs (
    component VARCHAR, run_id VARCHAR, level VARCHAR, message VARCHAR, ts TIMESTAMP);
CREATE TABLE IF NOT EXISTS artifacts (
    component VARCHAR, run_id VARCHAR, name VARCHAR, uri VARCHAR, size_bytes BIGINT,
    media_type VARCHAR, ts TIMESTAMP);
CREATE TABLE IF NOT EXISTS results (
    component VARCHAR, run_id VARCHAR, test VARCHAR, outcome VARCHAR, duration_s DOUBLE,
    message VARCHAR, ts TIMESTAMP);
CREATE TABLE IF NOT EXISTS batches (
    component VARCHAR, batch_id VARCHAR, description VARCHAR, expected_count BIGINT,
    created_at TIMESTAMP, updated_at TIMESTAMP, PRIMARY KEY (component, batch_id));
"""

# Required fields per event type ("light validation": presence only, plus status values).
REQUIRED: dict[str, tuple[str, ...]] = {
    "run": (), "status": ("status",), "step": ("step", "status"), "metric": ("name", "value"),
    "tag": ("key", "value"), "log": ("level", "message"), "artifact": ("name",),
    "result": ("test", "outcome"), "batch": ("batch_id",), "delete": (),
}
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
RUN_ATTRS = ("model", "hardware", "batch_id", "name", "params")
# Append-only event types: table and the event fields stored between (component, run_id) and ts.
APPEND: dict[str, tuple[str, tuple[str, ...]]] = {
    "metric": ("metrics", ("name", "value", "unit", "step")),
    "log": ("logs", ("level", "message")),
    "artifact": ("artifacts", ("name", "uri", "size_bytes", "media_type")),
    "result": ("results", ("test", "outcome", "duration_s", "message")),
}
# What search looks at (ILIKE %query%): table -> columns naming a run.
SEARCH = {"runs": ("run_id", "model", "hardware", "batch_id", "name", "error"),
          "tags": ("key", "value"), "steps": ("step",), "logs": ("message",),
          "results": ("test",)}
CHILD_TABLES = ("steps", "metrics", "tags", "logs", "artifacts", "results")
DURATION = ("CASE WHEN finished_at IS NOT NULL THEN date_diff('microsecond', "
            "coalesce(started_at, created_at), finished_at) / 1e6 END")
RUN_COLS = ("component, run_id, model, hardware, batch_id, name, params, status, error, "
            f"created_at, started_at, finished_at, {DURATION} AS duration_s, updated_at")
RUN_KEYS = ("component", "run_id", "model", "hardware", "batch_id", "name", "params", "status",
            "error", "created_at", "started_at", "finished_at", "duration_s", "updated_at")
SORTS = {f"{sign}{col}": f"{col} {'DESC' if sign else 'ASC'} NULLS LAST"
         for col in ("created_at", "updated_at", "started_at", "finished_at", "duration_s",
                     "run_id", "status", "model", "hardware") for sign in ("", "-")}
STATUS_COUNTS = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in STATUSES)


class BadRequestError(Exception):
    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class NotFoundError(Exception):
    pass


def parse_ts(value: Any) -> datetime:
    """RFC 3339 string or epoch seconds -> naive UTC datetime (how DuckDB TIMESTAMP stores it)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value)
        return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt
    raise ValueError("expected RFC 3339 string or epoch seconds")


def utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None else None  # msgspec then writes "...Z"


def escape_like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def validate(events: list[Any], component: str | None, now: datetime) -> list[dict[str, Any]]:
    """Check every event before writing any, so a bad request changes nothing."""
    details: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []

    def bad(i: int, field: str, message: str) -> None:
        details.append({"index": i, "field": field, "message": message})

    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            bad(i, "", "event must be a JSON object")
            continue
        ev = dict(ev)
        if component is not None and ev.setdefault("component", component) != component:
            bad(i, "component", f"does not match the URL component {component!r}")
        etype = ev.get("type")
        if etype not in REQUIRED:
            bad(i, "type", f"unknown event type {etype!r}")
            continue
        if not isinstance(ev.get("component"), str) or not ev["component"]:
            bad(i, "component", "required string")
        needs_run = not (etype == "batch" or (etype == "delete" and "batch_id" in ev))
        if needs_run and (not isinstance(ev.get("run_id"), str) or not ev["run_id"]):
            bad(i, "run_id", "required string")
        for field in REQUIRED[etype]:
            if ev.get(field) is None:
                bad(i, field, "required")
        if etype == "status" and ev.get("status") not in STATUSES:
            bad(i, "status", f"must be one of {', '.join(STATUSES)}")
        if etype == "metric" and (not isinstance(ev.get("value"), (int, float))
                                  or isinstance(ev.get("value"), bool)
                                  or not math.isfinite(ev["value"])):
            bad(i, "value", "must be a finite number")
        try:
            ev["ts"] = parse_ts(ev["ts"]) if ev.get("ts") is not None else now
        except (ValueError, OverflowError, OSError) as exc:
            bad(i, "ts", str(exc))
        out.append(ev)
    if details:
        raise BadRequestError(f"{len(details)} invalid field(s)", details)
    return out


class Store:
    """All SQL. One connection, used only from the event loop thread (so no locking)."""

    def __init__(self, path: str) -> None:
        self.con = duckdb.connect(path)
        self.con.execute(SCHEMA)

    def q(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params).fetchall()

    # -- writes ------------------------------------------------------------------------
    # One statement per event, autocommitted: what the seed systems did. A run's row is
    # written by its `run` and `status` events only; metrics, logs, steps, ... are rows of
    # their own tables and do not touch it (so `updated_at` is the latest run/status event).
    def apply(self, ev: dict[str, Any]) -> None:
        kind = "append" if ev["type"] in APPEND else ev["type"]
        getattr(self, "_" + kind)(ev, ev["component"], ev.get("run_id"), ev["ts"])

    def _put(self, table: str, key: dict[str, Any], values: dict[str, Any], sets: str,
             params: list[Any]) -> None:
        """Get-or-create: UPDATE the row by its key, INSERT it when there was none. (DuckDB
        runs a plain UPDATE or INSERT in about a third of the time of INSERT ... ON CONFLICT.)"""
        where = " AND ".join(f"{k} = ?" for k in key)
        (n,), = self.q(f"UPDATE {table} SET {sets} WHERE {where}", [*params, *key.values()])
        if n == 0:
            row = {**key, **values}
            self.q(f"INSERT INTO {table} ({', '.join(row)}) VALUES "
                   f"({', '.join('?' * len(row))})", list(row.values()))

    def _run_row(self, c: str, r: str, ts: datetime, values: dict[str, Any],
                 sets: list[str], params: list[Any]) -> None:
        self._put("runs", {"component": c, "run_id": r},
                  {"created_at": ts, "updated_at": ts, **values},
                  ", ".join(["created_at = least(created_at, ?)",
                             "updated_at = greatest(updated_at, ?)", *sets]), [ts, ts, *params])

    def _run(self, ev: dict[str, Any], c: str, r: str, ts: datetime) -> None:
        values = {k: ev[k] for k in RUN_ATTRS if k in ev}  # absent attributes keep their value
        if "params" in values and values["params"] is not None:
            values["params"] = msgspec.json.encode(values["params"]).decode()
        self._run_row(c, r, ts, values, [f"{k} = ?" for k in values], list(values.values()))

    def _status(self, ev: dict[str, Any], c: str, r: str, ts: datetime) -> None:
        st = ev["status"]
        values = {"status": st, "error": ev.get("error"),
                  "started_at": ts if st == "running" else None,
                  "finished_at": ts if st in TERMINAL else None}
        self._run_row(c, r, ts, values, ["status = ?", "error = ?",
                                         "started_at = coalesce(started_at, ?)",
                                         "finished_at = ?"], list(values.values()))

    def _step(self, ev: dict[str, Any], c: str, r: str, ts: datetime) -> None:
        values = {"status": ev["status"], "progress": ev.get("progress"),
                  "message": ev.get("message"), "updated_at": ts}
        self._put("steps", {"component": c, "run_id": r, "step": ev["step"]}, values,
                  "status = ?, progress = ?, message = ?, updated_at = ?", list(values.values()))

    def _append(self, ev: dict[str, Any], c: str, r: str, ts: datetime) -> None:
        """metric/log/artifact/result: every event is one more row."""
        table, fields = APPEND[ev["type"]]
        marks = ", ".join("?" * (len(fields) + 3))
        self.q(f"INSERT INTO {table} VALUES ({marks})", [c, r, *map(ev.get, fields), ts])

    def _tag(self, ev: dict[str, Any], c: str, r: str, ts: datetime) -> None:
        value = str(ev["value"])
        self._put("tags", {"component": c, "run_id": r, "key": ev["key"]}, {"value": value},
                  "value = ?", [value])

    def _batch(self, ev: dict[str, Any], c: str, r: None, ts: datetime) -> None:
        values = {"description": ev.get("description"),
                  "expected_count": ev.get("expected_count"), "created_at": ts, "updated_at": ts}
        self._put("batches", {"component": c, "batch_id": ev["batch_id"]}, values,
                  "description = coalesce(?, description), expected_count = "
                  "coalesce(?, expected_count), created_at = least(created_at, ?), "
                  "updated_at = greatest(updated_at, ?)", list(values.values()))

    def _delete(self, ev: dict[str, Any], c: str, r: str | None, ts: datetime) -> None:
        """The one multi-statement event, so it gets a transaction (deletes are rare)."""
        if r is not None:
            where, params = "component = ? AND run_id = ?", [c, r]
        else:
            where = ("component = ? AND run_id IN "
                     "(SELECT run_id FROM runs WHERE component = ? AND batch_id = ?)")
            params = [c, c, ev["batch_id"]]
        self.con.execute("BEGIN")
        try:
            if r is None:
                self.q("DELETE FROM batches WHERE component = ? AND batch_id = ?",
                       [c, ev["batch_id"]])
            for table in (*CHILD_TABLES, "runs"):  # runs last: the batch subquery reads it
                self.q(f"DELETE FROM {table} WHERE {where}", params)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    # -- reads (all GROUP BY over base tables, computed fresh per request) ---------------
    def group_stats(self, c: str, key: str, limit: int, offset: int) -> tuple[list[Any], int]:
        rows = self.q(
            f"SELECT {key}, count(*), {STATUS_COUNTS}, avg(d), quantile_cont(d, 0.5), "
            f"quantile_cont(d, 0.95), min(created_at), max(updated_at) FROM "
            f"(SELECT *, {DURATION} AS d FROM runs WHERE component = ?) "
            f"GROUP BY {key} ORDER BY count(*) DESC, {key} ASC NULLS LAST LIMIT ? OFFSET ?",
            [c, limit, offset])
        (total,), = self.q(f"SELECT count(DISTINCT {key}) + (count(*) FILTER "
                           f"(WHERE {key} IS NULL) > 0)::INT FROM runs WHERE component = ?", [c])
        return [{key: row[0], "runs": row[1], **status_block(row[2:7]),
                 "duration_avg_s": row[7], "duration_p50_s": row[8], "duration_p95_s": row[9],
                 "first_seen": utc(row[10]), "last_seen": utc(row[11])} for row in rows], total

    def runs(self, c: str, where: list[str], params: list[Any], order: str, limit: int,
             offset: int) -> tuple[list[Any], int]:
        cond = " AND ".join(["component = ?", *where])
        rows = self.q(f"SELECT {RUN_COLS} FROM runs WHERE {cond} ORDER BY {order}, run_id "
                      "LIMIT ? OFFSET ?", [c, *params, limit, offset])
        (total,), = self.q(f"SELECT count(*) FROM runs WHERE {cond}", [c, *params])
        return [run_item(row) for row in rows], total

    def performance(self, c: str, since: datetime, where: list[str], params: list[Any],
                    limit: int, offset: int) -> tuple[list[Any], int]:
        cond = " AND ".join(["m.component = ?", "m.ts >= ?", *where])
        join = "metrics m JOIN runs r ON r.component = m.component AND r.run_id = m.run_id"
        rows = self.q(
            "SELECT r.model, r.hardware, m.name, count(*), avg(m.value), min(m.value), "
            "max(m.value), quantile_cont(m.value, [0.5, 0.95, 0.99]) "
            f"FROM {join} WHERE {cond} GROUP BY ALL ORDER BY 1 NULLS LAST, 2 NULLS LAST, 3 "
            "LIMIT ? OFFSET ?", [c, since, *params, limit, offset])
        (total,), = self.q("SELECT count(*) FROM (SELECT DISTINCT r.model, r.hardware, m.name "
                           f"FROM {join} WHERE {cond})", [c, since, *params])
        items = [{"model": m, "hardware": h, "metric": n, "count": k, "mean": mean, "min": lo,
                  "max": hi, "p50": p[0], "p95": p[1], "p99": p[2]}
                 for m, h, n, k, mean, lo, hi, p in rows]
        return items, total

    def overview(self) -> dict[str, Any]:
        rows = self.q(f"SELECT component, count(*), {STATUS_COUNTS} FROM runs GROUP BY 1 "
                      "ORDER BY 1")
        total = [sum(col) for col in zip(*(r[1:] for r in rows), strict=True)] or [0] * 6
        return {"components": {r[0]: {"runs": r[1], **status_block(r[2:])} for r in rows},
                "total": {"runs": total[0], **status_block(total[1:])}}

    def model(self, model: str) -> dict[str, Any] | None:
        rows = self.q(
            f"SELECT component, count(*), {STATUS_COUNTS}, avg(d), quantile_cont(d, 0.5), "
            f"quantile_cont(d, 0.95), min(created_at), max(updated_at) FROM "
            f"(SELECT *, {DURATION} AS d FROM runs WHERE model = ?) GROUP BY 1 ORDER BY 1",
            [model])
        if not rows:
            return None
        per = {}
        for row in rows:
            recent, _ = self.runs(row[0], ["model = ?"], [model], SORTS["-created_at"], 10, 0)
            per[row[0]] = {"runs": row[1], **status_block(row[2:7]), "duration_avg_s": row[7],
                           "duration_p50_s": row[8], "duration_p95_s": row[9],
                           "first_seen": utc(row[10]), "last_seen": utc(row[11]),
                           "recent_runs": recent}
        total = [sum(r[i] for r in rows) for i in range(1, 7)]
        return {"model": model, "components": per,
                "total": {"runs": total[0], **status_block(total[1:])}}

    def batches(self, c: str, limit: int, offset: int) -> tuple[list[Any], int]:
        """Declared batches and batches only named by runs, with their runs by status."""
        counts = ", ".join(f"count(*) FILTER (WHERE status = '{s}') AS {s}" for s in STATUSES)
        keys = ("SELECT batch_id FROM batches WHERE component = $c UNION "
                "SELECT batch_id FROM runs WHERE component = $c AND batch_id IS NOT NULL")
        rows = self.q(
            f"WITH n AS (SELECT batch_id, count(*) AS runs, {counts}, min(created_at) AS first, "
            "max(updated_at) AS last FROM runs WHERE component = $c AND batch_id IS NOT NULL "
            "GROUP BY 1), b AS (SELECT * FROM batches WHERE component = $c) "
            f"SELECT k.batch_id, b.description, b.expected_count, n.runs, "
            f"{', '.join(f'n.{s}' for s in STATUSES)}, n.first, n.last, b.created_at "
            f"FROM ({keys}) k LEFT JOIN b USING (batch_id) LEFT JOIN n USING (batch_id) "
            "ORDER BY coalesce(n.last, b.created_at) DESC NULLS LAST, k.batch_id "
            "LIMIT $limit OFFSET $offset", {"c": c, "limit": limit, "offset": offset})
        (total,), = self.q(f"SELECT count(*) FROM ({keys})", {"c": c})
        items = []
        for bid, desc, expected, n, *by, first, last, declared in rows:
            block = status_block([k or 0 for k in by])
            finished = sum(block["by_status"][s] for s in TERMINAL)
            items.append({"batch_id": bid, "description": desc, "expected_count": expected,
                          "runs": n or 0, "by_status": block["by_status"],
                          "finished": finished,
                          "progress": finished / expected if expected else None,
                          "declared_at": utc(declared), "first_seen": utc(first),
                          "last_seen": utc(last)})
        return items, total

    def run(self, c: str, r: str) -> dict[str, Any] | None:
        """The run with its steps, tags, metric and result summaries, recent logs, artifacts."""
        key = [c, r]
        where = "WHERE component = ? AND run_id = ?"
        rows = self.q(f"SELECT {RUN_COLS} FROM runs {where}", key)
        if not rows:
            return None
        run = run_item(rows[0])
        run["steps"] = [
            {"step": s, "status": st, "progress": pr, "message": m, "ts": utc(ts)}
            for s, st, pr, m, ts in self.q("SELECT step, status, progress, message, updated_at "
                                           f"FROM steps {where} ORDER BY updated_at", key)]
        run["tags"] = dict(self.q(f"SELECT key, value FROM tags {where} ORDER BY key", key))
        run["metrics"] = [
            {"name": n, "unit": u, "count": k, "mean": mean, "min": lo, "max": hi, "last": last}
            for n, u, k, mean, lo, hi, last in self.q(
                "SELECT name, min(unit), count(*), avg(value), min(value), max(value), "
                f"arg_max(value, ts) FROM metrics {where} GROUP BY name ORDER BY name", key)]
        outcomes = dict(self.q(f"SELECT outcome, count(*) FROM results {where} GROUP BY 1", key))
        run["results"] = {"total": sum(outcomes.values()), **{o: outcomes.get(o, 0) for o in (
            "passed", "failed", "skipped", "error", "xfailed", "xpassed")}}
        run["logs"] = [{"level": lv, "message": m, "ts": utc(ts)} for lv, m, ts in self.q(
            f"SELECT level, message, ts FROM logs {where} ORDER BY ts DESC LIMIT 20", key)]
        run["artifacts"] = [
            {"name": n, "uri": u, "size_bytes": b, "media_type": mt, "ts": utc(ts)}
            for n, u, b, mt, ts in self.q("SELECT name, uri, size_bytes, media_type, ts FROM "
                                          f"artifacts {where} ORDER BY ts", key)]
        return run

    def search(self, text: str, component: str | None, limit: int) -> dict[str, Any]:
        like = "ILIKE $p ESCAPE '\\'"
        comp = " AND component = $comp" if component else ""
        hits = " UNION ".join(f"SELECT component, run_id FROM {table} WHERE "
                              f"({' OR '.join(f'{col} {like}' for col in cols)}){comp}"
                              for table, cols in SEARCH.items())
        rows = self.q(
            f"WITH hits AS ({hits}), ranked AS (SELECT {RUN_COLS}, row_number() OVER ("
            "PARTITION BY component ORDER BY updated_at DESC, run_id) AS rn, count(*) OVER "
            "(PARTITION BY component) AS n FROM runs JOIN hits USING (component, run_id)) "
            "SELECT * FROM ranked WHERE rn <= greatest($limit, 1) ORDER BY component, rn",
            {"p": escape_like(text), "limit": limit, **({"comp": component} if component else {})})
        results: dict[str, list[Any]] = {}
        counts: dict[str, int] = {"total": 0}
        for row in rows:  # rn = 1 rows come back even for limit 0, to carry the counts
            items = results.setdefault(row[0], [])
            if row[14] <= limit:
                items.append(run_item(row[:14]))
            if row[0] not in counts:
                counts[row[0]] = row[15]
                counts["total"] += row[15]
        return {"results": results, "result_counts": counts}


def status_block(counts: Any) -> dict[str, Any]:
    by_status = dict(zip(STATUSES, counts, strict=True))
    done = by_status["completed"] + by_status["failed"]
    return {"by_status": by_status,
            "success_rate": by_status["completed"] / done if done else None}


def run_item(row: Any) -> dict[str, Any]:
    item = dict(zip(RUN_KEYS, row, strict=True))
    item["params"] = msgspec.json.decode(item["params"]) if item["params"] else None
    for k in ("created_at", "started_at", "finished_at", "updated_at"):
        item[k] = utc(item[k])
    return item


# -- HTTP ----------------------------------------------------------------------------------
STORE = web.AppKey("store", Store)


def reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status,
                        content_type="application/json")


def int_arg(req: web.Request, name: str, default: int, cap: int | None = None) -> int:
    try:
        value = int(req.query.get(name, default))
    except ValueError:
        raise BadRequestError(f"{name} must be an integer") from None
    if value < 0:
        raise BadRequestError(f"{name} must be >= 0")
    return min(value, cap) if cap is not None else value


def page(req: web.Request, default: int) -> tuple[int, int]:
    return int_arg(req, "limit", default, 1000), int_arg(req, "offset", 0)


def equals(req: web.Request, columns: dict[str, str]) -> tuple[list[str], list[Any]]:
    """Equality filters from whitelisted query parameters (never from raw names)."""
    names = [n for n in columns if n in req.query]
    return [f"{columns[n]} = ?" for n in names], [req.query[n] for n in names]


@web.middleware
async def errors(req: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(req)
    except BadRequestError as exc:
        return reply({"error": {"code": "bad_request", "message": str(exc),
                                "details": exc.details}}, 400)
    except NotFoundError as exc:
        return reply({"error": {"code": "not_found", "message": str(exc), "details": []}}, 404)


def store(req: web.Request) -> Store:
    return req.app[STORE]


async def post_events(req: web.Request) -> web.Response:
    raw = await req.read()
    try:
        if req.content_type in ("application/x-ndjson", "application/jsonl"):
            events = [msgspec.json.decode(line) for line in raw.splitlines() if line.strip()]
        else:
            body = msgspec.json.decode(raw)
            events = body if isinstance(body, list) else [body]
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"invalid JSON: {exc}") from None
    now = datetime.now(UTC).replace(tzinfo=None)
    valid = validate(events, req.match_info.get("component"), now)
    db = store(req)
    done = 0
    try:
        for ev in valid:  # synchronously, in order: the seed systems blocked the loop too
            db.apply(ev)
            done += 1
    except duckdb.Error as exc:  # e.g. a wrong-typed field; earlier events stay written
        raise BadRequestError(f"event {done} not stored; the {done} before it were", [
            {"index": done, "field": "", "message": str(exc)}]) from None
    return reply({"accepted": len(valid)}, 202)


async def group_stats(req: web.Request) -> web.Response:
    key = "model" if req.match_info["what"] == "models" else "hardware"
    limit, offset = page(req, 100)
    items, total = store(req).group_stats(req.match_info["component"], key, limit, offset)
    return reply({"items": items, "limit": limit, "offset": offset, "total": total})


async def list_runs(req: web.Request) -> web.Response:
    where, params = equals(req, {k: k for k in ("status", "model", "hardware", "batch_id")})
    for name, op in (("since", ">="), ("until", "<")):
        if name in req.query:
            try:
                params.append(parse_ts(req.query[name]))
            except ValueError as exc:
                raise BadRequestError(f"{name}: {exc}") from None
            where.append(f"created_at {op} ?")
    if req.query.get("q"):
        where.append("(run_id ILIKE ? ESCAPE '\\' OR name ILIKE ? ESCAPE '\\' "
                     "OR model ILIKE ? ESCAPE '\\')")
        params += [escape_like(req.query["q"])] * 3
    sort = req.query.get("sort", "-created_at")
    if sort not in SORTS:
        raise BadRequestError(f"sort must be one of {', '.join(SORTS)}")
    limit, offset = page(req, 50)
    items, total = store(req).runs(req.match_info["component"], where, params, SORTS[sort],
                                   limit, offset)
    return reply({"items": items, "limit": limit, "offset": offset, "total": total})


async def performance(req: web.Request) -> web.Response:
    days = int_arg(req, "days", 30)
    if days < 1:
        raise BadRequestError("days must be >= 1")
    # the last `days` UTC calendar days, today included (as runlake's daily rollups)
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    where, params = equals(req, {"model": "r.model", "hardware": "r.hardware",
                                 "metric": "m.name"})
    limit, offset = page(req, 100)
    items, total = store(req).performance(req.match_info["component"], since, where, params,
                                          limit, offset)
    return reply({"days": days, "since": utc(since), "items": items, "limit": limit,
                  "offset": offset, "total": total})


async def overview(req: web.Request) -> web.Response:
    return reply(store(req).overview())


async def model(req: web.Request) -> web.Response:
    name = req.match_info["model"]
    found = store(req).model(name)
    if found is None:
        raise NotFoundError(f"model {name!r} not found")
    return reply(found)


async def batches(req: web.Request) -> web.Response:
    limit, offset = page(req, 50)
    items, total = store(req).batches(req.match_info["component"], limit, offset)
    return reply({"items": items, "limit": limit, "offset": offset, "total": total})


async def run(req: web.Request) -> web.Response:
    c, r = req.match_info["component"], req.match_info["run_id"]
    found = store(req).run(c, r)
    if found is None:
        raise NotFoundError(f"run {r!r} of component {c!r} not found")
    return reply(found)


async def search(req: web.Request) -> web.Response:
    text = req.query.get("query") or req.query.get("q")
    if not text:
        raise BadRequestError("query is required")
    limit = int_arg(req, "limit", 50, 1000)
    return reply(store(req).search(text, req.match_info.get("component"), limit))


async def healthz(req: web.Request) -> web.Response:
    return reply({"status": "ok"})


def make_app(db_path: str) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=256 * 1024 * 1024)
    app[STORE] = Store(db_path)
    app.on_cleanup.append(_close)
    app.router.add_post("/api/events", post_events)
    app.router.add_post("/api/{component}/events", post_events)
    app.router.add_get("/api/{component}/db/{what:models|hardware}/stats", group_stats)
    app.router.add_get("/api/{component}/db/{what:runs|tasks}", list_runs)
    app.router.add_get("/api/{component}/db/performance", performance)
    app.router.add_get("/api/{component}/db/{what:run|task}/{run_id}", run)
    app.router.add_get("/api/{component}/db/batches", batches)
    app.router.add_get("/api/db/overview", overview)
    app.router.add_get("/api/db/model/{model}", model)
    app.router.add_get("/api/db/search", search)
    app.router.add_get("/api/{component}/db/search", search)
    app.router.add_get("/healthz", healthz)
    return app


async def _close(app: web.Application) -> None:
    app[STORE].con.close()  # checkpoints the WAL into the database file


async def serve(db_path: str, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(db_path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]  # the real port when asked for port 0
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed-style baseline run-history server")
    parser.add_argument("--db", required=True, help="DuckDB database file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    asyncio.run(serve(args.db, args.host, args.port))


if __name__ == "__main__":
    main()
