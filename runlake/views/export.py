"""The runs export query: every run of some components, streamed as Arrow record batches.

The runs come out in the columns of a `/runs` item, ordered by (component,
created_at, run_id), `since`/`until` filtering `created_at` as everywhere else
(DESIGN §3). Times come back as UTC-zoned Arrow timestamps; `params` stays JSON text.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    c, t, r = _START
    schema: pa.Schema | None = None  # the first page's, with UTC timestamps
    while True:
        args = [*params, c, c, t, t, r, batch_rows]
        page = db.read_sync(lambda cur, args=args: cur.sql(sql, params=args).to_arrow_table())
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
        last = page.slice(page.num_rows - 1).to_pylist()[0]
        c, t, r = last["component"], last["created_at"].replace(tzinfo=None), last["run_id"]


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
