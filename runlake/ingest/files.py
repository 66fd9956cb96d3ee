"""Reading event files (NDJSON, JSON, Parquet, optionally gzip) for `runlake ingest`
and the watched folder. A file is validated whole: all of it, or an error."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from runlake.errors import InvalidEvents
from runlake.events.columns import COLUMNS, SERVER_COLUMNS
from runlake.events.schema import AnyEvent, Event, decode_events, split_error

SUFFIXES = (".ndjson", ".jsonl", ".json", ".parquet")
MAX_FILE_EVENTS = 10_000_000

_WIRE = {"step_name": "step", "tag_value": "value"}  # log column -> wire field
_SERVER = frozenset(SERVER_COLUMNS)


def file_format(path: Path) -> str | None:
    """'ndjson', 'json' or 'parquet' from the name (a .gz suffix allowed), else None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".ndjson", "ndjson"), (".jsonl", "ndjson"), (".json", "json"),
                        (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    return None


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise InvalidEvents(f"{path.name}: not a readable gzip file: {e}") from e
    return data


def load_file(path: Path, max_events: int = MAX_FILE_EVENTS) -> list[Event]:
    """Validated events of one file, or InvalidEvents naming each bad line and field."""
    fmt = file_format(path)
    if fmt is None:
        raise InvalidEvents(f"{path.name}: unknown file type; expected one of {SUFFIXES} (+ .gz)")
    data = read_bytes(path)
    if fmt == "parquet":
        return load_parquet(data, path.name, max_events)
    return decode_events(data, ndjson=fmt == "ndjson", max_events=max_events)


def load_parquet(data: bytes, name: str, max_events: int = MAX_FILE_EVENTS) -> list[Event]:
    """Events of a Parquet file in the log's column schema, validated row by row
    with the same rules as JSON (server-assigned columns, if present, are ignored:
    the log assigns them). `line` in errors is the 1-based row number."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise InvalidEvents(f"{name}: not a readable Parquet file: {e}") from e
    unknown = [c for c in table.column_names if c not in COLUMNS]
    if unknown:
        details = [{"line": None, "field": c, "message": "unknown column"} for c in unknown]
        raise InvalidEvents(f"{name}: unknown columns {unknown}", details)
    if table.num_rows == 0:
        raise InvalidEvents(f"{name}: no events")
    if table.num_rows > max_events:
        raise InvalidEvents(f"{name}: {table.num_rows} events; at most {max_events} per file")
    events: list[Event] = []
    errors: list[dict[str, object]] = []
    for i, row in enumerate(table.to_pylist(), start=1):
        wire = {_WIRE.get(k, k): v for k, v in row.items() if v is not None and k not in _SERVER}
        try:
            if isinstance(wire.get("params"), str):
                wire["params"] = msgspec.json.decode(wire["params"])
            events.append(msgspec.convert(wire, AnyEvent))
        except msgspec.ValidationError as e:
            field, message = split_error(e)
            errors.append({"line": i, "field": field, "message": message})
        except msgspec.DecodeError as e:
            errors.append({"line": i, "field": "params", "message": f"is not JSON: {e}"})
    if errors:
        raise InvalidEvents(f"{name}: {len(errors)} bad rows", errors[:1000])
    return events
