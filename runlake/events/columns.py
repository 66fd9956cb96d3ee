"""The log's column schema (DESIGN §2) and the conversion of events to Arrow.

One flat schema for every event type. No column changes type across types: a
metric's numeric `value` and a tag's string value are different columns
(`value`, `tag_value`), as are a step's name and a metric's integer step
(`step_name`, `step`). Bump SCHEMA_VERSION on any change, adding columns at the end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from runlake.events.schema import EVENT_TYPES, Event, StepEvent, TagEvent

SCHEMA_VERSION = "1"
TS = pa.timestamp("us", tz="UTC")

LOG_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("received_at", TS, nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("component", pa.string(), nullable=False),
        ("run_id", pa.string()),
        ("id", pa.string()),
        pa.field("ts", TS, nullable=False),
        ("model", pa.string()),
        ("hardware", pa.string()),
        ("batch_id", pa.string()),
        ("name", pa.string()),  # run name, metric name, artifact name
        ("params", pa.string()),  # JSON text
        ("status", pa.string()),  # run status or step status
        ("error", pa.string()),
        ("step_name", pa.string()),
        ("progress", pa.float64()),
        ("message", pa.string()),  # step, log and result messages
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("step", pa.int64()),
        ("key", pa.string()),
        ("tag_value", pa.string()),
        ("level", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("media_type", pa.string()),
        ("test", pa.string()),
        ("outcome", pa.string()),
        ("duration_s", pa.float64()),
        ("description", pa.string()),
        ("expected_count", pa.int64()),
    ],
    metadata={"runlake.schema_version": SCHEMA_VERSION},
)
COLUMNS: tuple[str, ...] = tuple(LOG_SCHEMA.names)
SERVER_COLUMNS = ("seq", "received_at")
_RENAMED = {(StepEvent, "step"): "step_name", (TagEvent, "value"): "tag_value"}
_COMMON = ("component", "id", "ts")

# For each event class: (attribute, column) pairs other than the common fields.
_FIELDS: dict[type[Event], tuple[tuple[str, str], ...]] = {
    cls: tuple(
        (f, _RENAMED.get((cls, f), f)) for f in cls.__struct_fields__ if f not in _COMMON
    )
    for cls in EVENT_TYPES
}
_TAGS = {cls: cls.__struct_config__.tag for cls in EVENT_TYPES}
_json = msgspec.json.Encoder()


def _ts_column(values: list[datetime | float | None], default_us: int) -> pa.Array:
    """Event times as µs timestamps; a missing `ts` means the time of receipt.

    Seconds as float64 keep µs precision for any date before 2100, and the
    multiply/round runs in Arrow rather than per element in Python.
    """
    default = default_us / 1_000_000
    secs = [
        v.timestamp() if v.__class__ is datetime else (default if v is None else v)
        for v in values
    ]
    us = pc.round(pc.multiply(pa.array(secs, pa.float64()), 1_000_000.0))
    return us.cast(pa.int64()).cast(TS)


def events_to_table(events: list[Event], first_seq: int, received_at_us: int) -> pa.Table:
    """Arrow table of `events` in LOG_SCHEMA, seq numbered from `first_seq`.

    Built column by column per event type (not row by row), then put back in
    arrival order: this is the hot path of every append.
    """
    n = len(events)
    groups: dict[type[Event], list[int]] = {}
    for i, ev in enumerate(events):
        groups.setdefault(ev.__class__, []).append(i)
    if len(groups) == 1:
        (cls,) = groups
        return _group_table(cls, events, first_seq, received_at_us)
    parts = []
    for cls, idx in groups.items():
        evs = [events[i] for i in idx]
        parts.append(_group_table(cls, evs, first_seq, received_at_us, idx))
    table = pa.concat_tables(parts)
    order = pc.sort_indices(table.column("seq"))
    assert len(order) == n
    return table.take(order)


def _group_table(
    cls: type[Event],
    evs: list[Event],
    first_seq: int,
    received_at_us: int,
    idx: list[int] | None = None,
) -> pa.Table:
    n = len(evs)
    cols: dict[str, Any] = {
        "seq": (
            pa.array(range(first_seq, first_seq + n), pa.int64())
            if idx is None
            else pa.array([first_seq + i for i in idx], pa.int64())
        ),
        "received_at": pa.repeat(pa.scalar(received_at_us, TS), n),
        "type": pa.repeat(pa.scalar(_TAGS[cls], pa.string()), n),
        "component": pa.array([e.component for e in evs], pa.string()),
        "id": pa.array([e.id for e in evs], pa.string()),
        "ts": _ts_column([e.ts for e in evs], received_at_us),
    }
    for attr, col in _FIELDS[cls]:
        values = [getattr(e, attr) for e in evs]
        if attr == "params":
            values = [None if p is None else _json.encode(p).decode() for p in values]
        cols[col] = pa.array(values, LOG_SCHEMA.field(col).type)
    arrays = [
        cols[name] if name in cols else pa.nulls(n, LOG_SCHEMA.field(name).type)
        for name in COLUMNS
    ]
    return pa.Table.from_arrays(arrays, schema=LOG_SCHEMA)


def renumber(table: pa.Table, first_seq: int, received_at_us: int) -> pa.Table:
    """Assign `seq` and `received_at` to a table already in LOG_SCHEMA (e.g. from
    a Parquet inbox file); null `ts` defaults to `received_at` as on the wire."""
    n = table.num_rows
    received = pa.repeat(pa.scalar(received_at_us, TS), n)
    table = table.set_column(0, LOG_SCHEMA.field("seq"), pa.array(range(first_seq, first_seq + n)))
    table = table.set_column(1, LOG_SCHEMA.field("received_at"), received)
    ts_i = COLUMNS.index("ts")
    return table.set_column(ts_i, LOG_SCHEMA.field("ts"), pc.coalesce(table.column(ts_i), received))


def row_to_event(row: dict[str, Any]) -> dict[str, Any]:
    """A log row (as a dict) back in wire form, plus `seq` and `received_at`."""
    out: dict[str, Any] = {"seq": row["seq"], "type": row["type"], "component": row["component"]}
    wire = {col: attr for (cls, attr), col in _RENAMED.items() if _TAGS[cls] == row["type"]}
    for col in COLUMNS[4:]:
        v = row.get(col)
        if v is None or col == "ts":
            continue
        out[wire.get(col, col)] = msgspec.json.decode(v) if col == "params" else v
    out["id"] = row.get("id") or f"@{row['seq']}"
    out["ts"] = row["ts"]
    out["received_at"] = row["received_at"]
    return out
