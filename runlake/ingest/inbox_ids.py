"""Idempotency ids for inbox files (DESIGN §5).

An event without an `id` gets `<key>:<n>`: `key` is the first 24 hex digits of
the SHA-256 of the file's content (after gunzip) and `n` the event's 1-based
position in the file (its line in NDJSON without blank lines, its row in
Parquet, its element in a JSON array). The same content always gets the same
ids, so dropping a file twice, or ingesting it again after a crash between its
append and its move to `.done/`, adds nothing: the fold keeps the first event
of each id. Events that carry an `id` keep it.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from runlake.events.schema import Event

KEY_DIGITS = 24  # 96 bits: no two different files meet by chance


def content_key(content: bytes) -> str:
    """The id prefix of a file with this content (hex: never starts with '@')."""
    return hashlib.sha256(content).hexdigest()[:KEY_DIGITS]


def assign_ids(events: list[Event], key: str) -> None:
    """Give each event without an id the id `<key>:<position>`, in place."""
    prefix = key + ":"
    for n, event in enumerate(events, start=1):
        if event.id is None:
            event.id = f"{prefix}{n}"


def assign_table_ids(table: pa.Table, key: str) -> pa.Table:
    """`assign_ids` for a table in the log's schema: null ids become `<key>:<row>`."""
    ids = table.column("id")
    if ids.null_count == 0:
        return table
    rows = pa.array(range(1, table.num_rows + 1), pa.int64()).cast(pa.string())
    derived = pc.binary_join_element_wise(pa.scalar(key + ":"), rows, "")
    filled = pc.if_else(pc.is_null(ids), derived, ids.combine_chunks())
    return table.set_column(table.column_names.index("id"), table.field("id"), filled)
