"""Layer 1: the event schema and the durable Parquet log."""

from runlake.events.columns import (
    COLUMNS,
    LOG_SCHEMA,
    SCHEMA_VERSION,
    events_to_table,
    row_to_event,
)
from runlake.events.decode import decode_events
from runlake.events.log import EventLog
from runlake.events.schema import EVENT_TYPES, TERMINAL_STATUSES, Event

__all__ = [
    "COLUMNS",
    "EVENT_TYPES",
    "LOG_SCHEMA",
    "SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "Event",
    "EventLog",
    "decode_events",
    "events_to_table",
    "row_to_event",
]
