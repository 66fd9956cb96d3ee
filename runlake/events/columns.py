"""The log's column schema (DESIGN §2) and the conversion of events to Arrow.

One flat schema for every event type. No column changes type across types: a
metric's numeric `value` and a tag's string value are different columns
(`value`, `tag_value`), as are a step's name and a metric's integer step
(`step_name`, `step`). Bump SCHEMA_VERSION on any change, adding columns at the end.
"""

from __future__ import annotations

import operator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from runlake.events.schema import EVENT_TYPES, TS_MAX, TS_MIN, TYPE_NAMES, Event

SCHEMA_VERSION = "2"
TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# The range of `ts` (µs since the epoch) that every reader can turn into a datetime.
TS_MIN_US = (TS_MIN - EPOCH) // _ONE_US
TS_MAX_US = (TS_MAX - EPOCH) // _ONE_US

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
        # Schema version 2 (issue 20): result attempts and their context.
        ("attempt", pa.int64()),
        ("file", pa.string()),
        ("classname", pa.string()),
        ("worker", pa.string()),
    ],
    metadata={"runlake.schema_version": SCHEMA_VERSION},
)
COLUMNS: tuple[str, ...] = tuple(LOG_SCHEMA.names)
_NAMES = list(COLUMNS)
SERVER_COLUMNS = ("seq", "received_at")
# The log renames a step's `step` (a metric's `step` is an integer) and a tag's `value`.
_RENAMED = {("step", "step"): "step_name", ("tag", "value"): "tag_value"}
_COMMON = ("component", "id", "ts")
_TAGS = dict(zip(EVENT_TYPES, TYPE_NAMES, strict=True))


def column_of(tag: str, field: str) -> str:
    """The log column holding wire field `field` of events of type `tag`."""
    return _RENAMED.get((tag, field), field)


# Each event type's own fields (not the common ones) as (wire name, log column),
# read from the schema so the two cannot drift.
WIRE_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    tag: tuple((f, column_of(tag, f)) for f in cls.__struct_fields__ if f not in _COMMON)
    for cls, tag in _TAGS.items()
}
_DATA_COLUMNS = tuple(c for c in COLUMNS if c not in ("seq", "received_at", "type"))
assert COLUMNS[:3] == ("seq", "received_at", "type"), "events_to_table builds these first"
_json = msgspec.json.Encoder()
# Per class: its tag, one attrgetter for all its attributes, and the indexes of the
# columns they go to.
_FILL = {
    cls: (tag, operator.attrgetter(*_COMMON, *(a for a, _ in WIRE_FIELDS[tag])),
          tuple(_DATA_COLUMNS.index(c) for c in (*_COMMON, *(c for _, c in WIRE_FIELDS[tag]))))
    for cls, tag in _TAGS.items()
}
_TYPES = tuple(LOG_SCHEMA.field(c).type for c in _DATA_COLUMNS)
_TS_INDEX = _DATA_COLUMNS.index("ts")
_PARAMS_INDEX = _DATA_COLUMNS.index("params")
# Below this many events, times convert in Python: Arrow's compute calls cost more.
_SMALL = 64


def _ts_column(values: list[datetime | float | None], default_us: int) -> pa.Array:
    """Event times as µs timestamps; a missing `ts` means the time of receipt.

    Seconds as float64 hold every µs within 2**53 µs of the epoch (1685 to 2255, and
    epoch seconds stop at 2100), so there the multiply/round runs in Arrow rather
    than per element in Python. A time beyond converts exactly, in integers: through
    a float, 9999-12-31T23:59:59.999999Z became a year 10000 no reader can hold.
    """
    if len(values) < _SMALL:
        return pa.array(_exact_us(values, default_us), pa.int64()).cast(TS)
    default = default_us / 1_000_000
    secs = pa.array([
        v.timestamp() if v.__class__ is datetime else (default if v is None else v)
        for v in values
    ], pa.float64())
    low, high = pc.min_max(secs).values()
    if low.as_py() < -_EXACT_SECONDS or high.as_py() > _EXACT_SECONDS:
        return pa.array(_exact_us(values, default_us), pa.int64()).cast(TS)
    us = pc.round(pc.multiply(secs, 1_000_000.0))
    return us.cast(pa.int64()).cast(TS)


_EXACT_SECONDS = 2**53 / 1_000_000


def _exact_us(values: list[datetime | float | None], default_us: int) -> list[int]:
    return [
        (v - EPOCH) // _ONE_US if v.__class__ is datetime
        else default_us if v is None else round(v * 1_000_000)  # type: ignore[operator]
        for v in values
    ]


def events_to_table(events: list[Event], first_seq: int, received_at_us: int) -> pa.Table:
    """Arrow table of `events` in LOG_SCHEMA, seq numbered from `first_seq`.

    This is the hot path of every append. One pass fills a Python list per column
    (each event class knows which attributes go to which columns), then each
    column becomes one Arrow array: a fixed ~30 Arrow calls per table, where
    building per event type cost ~30 per type and made small group commits slow.
    Columns no event here fills are typed nulls, made without a Python list: a
    small group commit (one event per request) is mostly such columns.
    """
    n = len(events)
    cols: list[list[Any] | None] = [None] * len(_DATA_COLUMNS)
    kinds: list[str] = [""] * n
    fill: dict[type[Event], tuple[str, Any, list[list[Any]]]] = {}
    for cls in {ev.__class__ for ev in events}:
        tag, get, targets = _FILL[cls]
        for c in targets:
            if cols[c] is None:
                cols[c] = [None] * n
        fill[cls] = (tag, get, [cols[c] for c in targets])
    for i, ev in enumerate(events):
        tag, get, lists = fill[ev.__class__]
        kinds[i] = tag
        for column, value in zip(lists, get(ev), strict=True):
            column[i] = value
    params = cols[_PARAMS_INDEX]
    if params is not None:
        for i, p in enumerate(params):
            if p is not None:
                params[i] = _json.encode(p).decode()
    return pa.Table.from_arrays([
        pa.array(range(first_seq, first_seq + n), pa.int64()),
        pa.repeat(pa.scalar(received_at_us, TS), n),
        pa.array(kinds, pa.string()),
        *(_ts_column(col, received_at_us) if c == _TS_INDEX
          else pa.nulls(n, _TYPES[c]) if col is None else pa.array(col, _TYPES[c])
          for c, col in enumerate(cols)),
    ], schema=LOG_SCHEMA)


def conform(rows: pa.RecordBatch) -> pa.RecordBatch:
    """`rows` in LOG_SCHEMA: a segment or WAL frame of an older schema version lacks
    the columns added since, which read as null (docs/log.md, schema versioning)."""
    if rows.schema.names == _NAMES:
        return rows
    n = rows.num_rows
    have = set(rows.schema.names)
    return pa.RecordBatch.from_arrays(
        [rows.column(c) if c in have else pa.nulls(n, LOG_SCHEMA.field(c).type) for c in COLUMNS],
        schema=LOG_SCHEMA)


def conform_table(table: pa.Table) -> pa.Table:
    """A table (e.g. a WAL frame) in LOG_SCHEMA, older columns' nulls added (`conform`)."""
    if table.schema.names == _NAMES:
        return table
    have = set(table.schema.names)
    n = table.num_rows
    return pa.Table.from_arrays(
        [table.column(c) if c in have else pa.nulls(n, LOG_SCHEMA.field(c).type) for c in COLUMNS],
        schema=LOG_SCHEMA)


def ts_out_of_range(rows: pa.Table | pa.RecordBatch) -> pa.Array | None:
    """A mask of the rows whose `ts` lies outside years 1-9999 (which no reader can
    turn into a datetime), or None when every row's is inside, the usual case: one
    min/max over the column decides it."""
    us = rows.column(_TS_COLUMN)
    if isinstance(us, pa.ChunkedArray):
        us = us.combine_chunks()
    us = us.view(pa.int64())
    low, high = pc.min_max(us).values()
    if not low.is_valid or (low.as_py() >= TS_MIN_US and high.as_py() <= TS_MAX_US):
        return None
    return pc.fill_null(pc.or_(pc.less(us, TS_MIN_US), pc.greater(us, TS_MAX_US)), False)


_TS_COLUMN = COLUMNS.index("ts")


def renumber(table: pa.Table, first_seq: int, received_at_us: int) -> pa.Table:
    """Assign `seq` and `received_at` to a table already in LOG_SCHEMA (e.g. from
    a Parquet inbox file); null `ts` defaults to `received_at` as on the wire."""
    n = table.num_rows
    received = pa.repeat(pa.scalar(received_at_us, TS), n)
    table = table.set_column(0, LOG_SCHEMA.field("seq"), pa.array(range(first_seq, first_seq + n)))
    table = table.set_column(1, LOG_SCHEMA.field("received_at"), received)
    ts_i = COLUMNS.index("ts")
    return table.set_column(ts_i, LOG_SCHEMA.field("ts"), pc.coalesce(table.column(ts_i), received))


Extra = tuple[str, list[Any]]  # a key and its value for each row (None: left out)


def wire_rows(batch: pa.RecordBatch | pa.Table, first: tuple[Extra, ...] = (),
              middle: tuple[Extra, ...] = (), last: tuple[Extra, ...] = ()
              ) -> list[dict[str, Any]]:
    """Log rows back in wire form, in order: `first`'s keys, `type`, `component`,
    `middle`'s, the type's own fields, `last`'s (each left out where None; `params`
    embedded as the JSON text the log holds). Built column by column per event type:
    row by row (`row_to_event`) it cost more than the append."""
    n = batch.num_rows
    types = batch.column("type")
    components = batch.column("component").to_pylist()
    events: list[dict[str, Any]] = [{}] * n
    kinds = pc.unique(types).to_pylist()
    for kind in kinds:
        rows = pc.indices_nonzero(pc.equal(types, kind)) if len(kinds) > 1 else None
        part = batch if rows is None else batch.take(rows)
        fields = [(f, _column_values(part.column(c), c)) for f, c in WIRE_FIELDS[kind]]
        for j, i in enumerate(range(n) if rows is None else rows.to_pylist()):
            event: dict[str, Any] = {k: v[i] for k, v in first if v[i] is not None}
            event["type"], event["component"] = kind, components[i]
            for k, v in middle:
                if v[i] is not None:
                    event[k] = v[i]
            for f, values in fields:
                if (value := values[j]) is not None:
                    event[f] = value
            for k, v in last:
                if v[i] is not None:
                    event[k] = v[i]
            events[i] = event
    return events


def _column_values(column: pa.Array, name: str) -> list[Any]:
    values = column.to_pylist()
    if name == "params":  # JSON text in the log: embedded as it is
        return [None if v is None else msgspec.Raw(v) for v in values]
    return values


def row_to_event(row: dict[str, Any]) -> dict[str, Any]:
    """A log row (as a dict) back in wire form, plus `seq` and `received_at`."""
    out: dict[str, Any] = {"seq": row["seq"], "type": row["type"], "component": row["component"]}
    wire = {col: attr for (tag, attr), col in _RENAMED.items() if tag == row["type"]}
    for col in COLUMNS[4:]:
        v = row.get(col)
        if v is None or col == "ts":
            continue
        out[wire.get(col, col)] = msgspec.json.decode(v) if col == "params" else v
    out["id"] = row.get("id") or f"@{row['seq']}"
    out["ts"] = row["ts"]
    out["received_at"] = row["received_at"]
    return out
