"""The runs export query: every run of some components, streamed as Arrow record batches.

The runs come out in the columns of a `/runs` item, ordered by (component,
created_at, run_id), `since`/`until` filtering `created_at` as everywhere else
(DESIGN §3). Times come back as UTC-zoned Arrow timestamps; `params` stays JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from runlake.views.db import Database
from runlake.views.queries import RUN_COLUMNS, created_between, in_components

# Keyset paging on the sort key: the rows after (component, created_at, run_id) = ?.
RUNS = """SELECT {columns} FROM runs WHERE {where} AND (
    component > ? OR (component = ? AND (created_at > ? OR (created_at = ? AND run_id > ?))))
ORDER BY component, created_at, run_id LIMIT ?"""
_START = ("", datetime(1, 1, 1), "")  # before every (component, created_at, run_id)


def runs_batches(
    db: Database,
    components: list[str] | None,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = 16_384,
) -> Iterator[pa.RecordBatch]:
    """The matching runs, one page per batch (at least one batch, maybe empty, so the
    schema is always known); `components` None means every component.

    Each page is its own short read, so no cursor is held between pages: a replay
    can swap the database file in between, and a stalled client holds nothing of
    DuckDB's. (Pages are read at different moments, as with any paged list.)
    """
    where, params = _where(components, since, until)
    sql = RUNS.format(columns=RUN_COLUMNS, where=where)
    yield from _keyset_pages(db, params, batch_rows,
                             lambda cur, args: cur.sql(sql, params=args).to_arrow_table())


def _keyset_pages(db: Database, params: list[Any], batch_rows: int,
                  read: Callable[[Any, list[Any]], pa.Table]) -> Iterator[pa.RecordBatch]:
    """Every page `read` gives, in (component, created_at, run_id) order, as record
    batches with UTC timestamps: at least one batch, maybe empty, so the schema is
    always known. `read(cur, args)` runs RUNS with `args` (the filter's parameters,
    then the last row's keys and the page size)."""
    c, t, r = _START
    schema: pa.Schema | None = None  # the first page's, with UTC timestamps
    while True:
        args = [*params, c, c, t, t, r, batch_rows]
        page = db.read_sync(lambda cur, args=args: read(cur, args))
        first = schema is None
        schema = schema or pa.schema([_utc(f) for f in page.schema])
        if page.num_rows == 0:
            if first:
                yield pa.RecordBatch.from_pylist([], schema=schema)
            return
        for batch in page.to_batches():
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        if page.num_rows < batch_rows:
            return
        last = page.slice(page.num_rows - 1).select(["component", "created_at", "run_id"])
        row = last.to_pylist()[0]
        c, t, r = row["component"], row["created_at"].replace(tzinfo=None), row["run_id"]


def _where(components: list[str] | None, since: datetime | None,
           until: datetime | None) -> tuple[str, list[Any]]:
    cond, params = in_components(components)
    created, created_params = created_between(since, until)
    return " AND ".join([cond, *created]), params + created_params


def _utc(field: pa.Field) -> pa.Field:
    """DuckDB's naive TIMESTAMP columns hold UTC: say so in the Arrow type."""
    if pa.types.is_timestamp(field.type) and field.type.tz is None:
        return field.with_type(pa.timestamp(field.type.unit, tz="UTC"))
    return field


# -- run documents ------------------------------------------------------------------
#
# One document per run: the `/runs` item's columns, then its steps, tags, metric
# summary, results summary and artifacts, as `/run/{id}` shows them (docs/compat.md,
# "Export"). A page of runs is read first, by the keyset above; its children are then
# read for exactly those runs, within the page's seq span: every row of a run carries
# a seq in its span (views/runs.py), and the tables are written in seq order, so zone
# maps skip the row groups of other pages instead of scanning each table per page.
# The metric summary is the fold's (`run_metric_summary`), its `last_seq` in the span.

OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")
DOCUMENT_COLUMNS = ("steps", "tags", "metrics", "results", "artifacts")

# The page's keys as a table: three list parameters unnested side by side, `i` the
# run's place in the page, so the children come back in the page's order.
_PAGE = """page AS (SELECT unnest(?::VARCHAR[]) AS component, unnest(?::VARCHAR[]) AS run_id,
                    unnest(range(?::BIGINT)) AS i)"""
_OF_PAGE = "SEMI JOIN page USING (component, run_id) WHERE seq BETWEEN ? AND ?"
# Times as TIMESTAMPTZ: the reader cursor's zone is UTC, so Arrow gets UTC-zoned values.
CHILDREN = f"""
WITH {_PAGE},
s AS (SELECT component, run_id, list({{'step': step, 'status': status, 'progress': progress,
        'message': message, 'ts': ts::TIMESTAMPTZ}} ORDER BY ts, seq) AS steps
      FROM steps {_OF_PAGE} GROUP BY ALL),
t AS (SELECT component, run_id, map_from_entries(list({{'key': key, 'value': value}} ORDER BY key))
        AS tags FROM tags {_OF_PAGE} GROUP BY ALL),
m AS (SELECT component, run_id, list({{'name': name, 'unit': unit, 'count': count,
        'mean': sum / count, 'min': min, 'max': max, 'last': last}} ORDER BY name) AS metrics
      FROM run_metric_summary SEMI JOIN page USING (component, run_id)
      WHERE last_seq BETWEEN ? AND ? GROUP BY ALL),
r AS (SELECT component, run_id, count(*) AS total,
             {", ".join(f"count(*) FILTER (WHERE outcome = '{o}') AS {o}" for o in OUTCOMES)}
      FROM results {_OF_PAGE} GROUP BY ALL),
a AS (SELECT component, run_id, list({{'name': name, 'uri': uri, 'size_bytes': size_bytes,
        'media_type': media_type, 'ts': ts::TIMESTAMPTZ}} ORDER BY seq) AS artifacts
      FROM artifacts {_OF_PAGE} GROUP BY ALL)
SELECT coalesce(s.steps, []) AS steps,
       coalesce(t.tags, MAP {{}}::MAP(VARCHAR, VARCHAR)) AS tags,
       coalesce(m.metrics, []) AS metrics,
       {{'total': coalesce(r.total, 0),
         {", ".join(f"'{o}': coalesce(r.{o}, 0)" for o in OUTCOMES)}}} AS results,
       coalesce(a.artifacts, []) AS artifacts
FROM page p
LEFT JOIN s USING (component, run_id) LEFT JOIN t USING (component, run_id)
LEFT JOIN m USING (component, run_id) LEFT JOIN r USING (component, run_id)
LEFT JOIN a USING (component, run_id)
ORDER BY p.i"""
_CHILD_TABLES = 5  # each reads the page's keys through `page` and takes a seq span


def run_document_batches(
    db: Database,
    components: list[str] | None,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = 4_096,
) -> Iterator[pa.RecordBatch]:
    """The matching runs as documents (the runs' columns plus DOCUMENT_COLUMNS, nested),
    one page per batch, in the runs export's order; at least one batch, maybe empty."""
    where, params = _where(components, since, until)
    sql = RUNS.format(columns=f"{RUN_COLUMNS}, first_seq, last_seq", where=where)

    def page_of(cur: Any, args: list[Any]) -> pa.Table:
        runs = cur.sql(sql, params=args).to_arrow_table()
        n = runs.num_rows
        span = [min(runs.column("first_seq").to_pylist(), default=0),
                max(runs.column("last_seq").to_pylist(), default=0)]
        keys = [runs.column("component").to_pylist(), runs.column("run_id").to_pylist(), n]
        children = cur.sql(CHILDREN, params=[*keys, *span * _CHILD_TABLES]).to_arrow_table()
        runs = runs.drop_columns(["first_seq", "last_seq"])
        for name in DOCUMENT_COLUMNS:
            runs = runs.append_column(name, children.column(name))
        return runs

    yield from _keyset_pages(db, params, batch_rows, page_of)
