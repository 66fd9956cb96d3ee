"""The runs export query: every run of some components, streamed as Arrow record batches.

The runs come out in the columns of a `/runs` item, ordered by (component,
created_at, run_id), `since`/`until` filtering `created_at` as everywhere else
(DESIGN §3). Times come back as UTC-zoned Arrow timestamps; `params` stays JSON text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from runlake.views.queries import RUN_COLUMNS, Cursor

RUNS = "SELECT {columns} FROM runs WHERE {where} ORDER BY component, created_at, run_id"
UTC_TS = pa.timestamp("us", tz="UTC")


def runs_reader(
    cur: Cursor,
    components: list[str] | None,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = 16_384,
) -> pa.RecordBatchReader:
    """A reader over the matching runs; `components` None means every component.

    The reader streams from DuckDB and holds `cur` until it is read out or the
    cursor is closed: give it a cursor of its own.
    """
    where, params = _where(components, since, until)
    rel = cur.sql(RUNS.format(columns=RUN_COLUMNS, where=where), params=params)
    reader = rel.to_arrow_reader(batch_rows)
    schema = pa.schema([_utc(f) for f in reader.schema])
    return pa.RecordBatchReader.from_batches(
        schema, (pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in reader))


def _where(components: list[str] | None, since: datetime | None,
           until: datetime | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if components is not None:
        # An empty list matches nothing: `IN ()` is not SQL, FALSE is.
        where.append(f"component IN ({', '.join('?' * len(components))})"
                     if components else "FALSE")
        params += components
    for op, value in ((">=", since), ("<", until)):
        if value is not None:
            where.append(f"created_at {op} ?")
            params.append(value.astimezone(UTC).replace(tzinfo=None))
    return " AND ".join(where) or "TRUE", params


def _utc(field: pa.Field) -> pa.Field:
    """DuckDB's naive TIMESTAMP columns hold UTC: say so in the Arrow type."""
    if pa.types.is_timestamp(field.type) and field.type.tz is None:
        return field.with_type(pa.timestamp(field.type.unit, tz="UTC"))
    return field
