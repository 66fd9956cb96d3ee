"""Reading event files (NDJSON, JSON, Parquet, optionally gzip) for `runlake ingest`
and the watched folder. A file is validated whole: all of it, or an error.

Parquet files take a vectorized path first (`parquet_table`): every rule of the
event schema checked per column with Arrow compute, giving a table in the log's
schema without building an event object per row. Only when that path finds
anything wrong, or a column type it does not handle, does the row-by-row path
(`load_parquet`) run, which decides and names each bad row and field.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runlake.errors import InvalidEvents, Problem
from runlake.events.columns import (
    COLUMNS,
    LOG_SCHEMA,
    SERVER_COLUMNS,
    TS_MAX_US,
    TS_MIN_US,
    WIRE_FIELDS,
    column_of,
    events_to_table,
)
from runlake.events.decode import validate
from runlake.events.problems import invalid
from runlake.events.schema import (
    EVENT_TYPES,
    MAX_PARAMS_BYTES,
    MAX_PARAMS_DEPTH,
    TYPE_NAMES,
    AnyEvent,
    Event,
    RunEvent,
    check_rules,
    problem,
    problem_of,
    ts_problem,
)
from runlake.ingest.reports import RunAttributes, load_report, sniff

SUFFIXES = (".ndjson", ".jsonl", ".json", ".parquet", ".xml")
MAX_FILE_EVENTS = 10_000_000
MAX_FILE_BYTES = 1 << 30  # after gunzip

_WIRE = {"step_name": "step", "tag_value": "value"}  # log column -> wire field
# Per type: {log column: wire field} of the columns its events fill.
_FIELDS = {tag: {"type": "type", "component": "component", "id": "id", "ts": "ts",
                 **{column: wire for wire, column in fields}}
           for tag, fields in WIRE_FIELDS.items()}
_SERVER = frozenset(SERVER_COLUMNS)


class FileChanged(Exception):
    """The file changed while it was read (a writer still at work): try again later."""


def file_format(path: Path) -> str | None:
    """'ndjson', 'json', 'parquet' or 'xml' (JUnit) from the name (a .gz suffix
    allowed), else None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".ndjson", "ndjson"), (".jsonl", "ndjson"), (".json", "json"),
                        (".parquet", "parquet"), (".xml", "xml")):
        if name.endswith(suffix):
            return fmt
    return None


def read_bytes(path: Path, max_bytes: int = MAX_FILE_BYTES, *,
               follow_symlinks: bool = True) -> bytes:
    """The content of a regular file, gunzipped if its name ends in .gz.

    A FIFO or device is refused rather than opened (which could block), and so is
    a symbolic link unless `follow_symlinks`. Raises InvalidEvents for a file that
    cannot be events, FileChanged if it changed while being read, OSError if it
    vanished.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:  # the name is a symbolic link
            raise InvalidEvents(f"{path.name}: is a symbolic link; links are not followed") from e
        if isinstance(e, FileNotFoundError):
            raise
        raise InvalidEvents(f"{path.name}: cannot be read: {e.strerror}") from e
    with open(fd, "rb", closefd=True) as f:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise InvalidEvents(f"{path.name}: is not a regular file")
        if before.st_size > max_bytes:
            raise InvalidEvents(f"{path.name}: is {before.st_size} bytes; at most {max_bytes}")
        try:
            data = f.read(before.st_size + 1)  # one more: a file still growing shows
        except OSError as e:
            raise InvalidEvents(f"{path.name}: cannot be read: {e.strerror}") from e
        after = os.fstat(fd)
    if len(data) != before.st_size or (before.st_size, before.st_mtime_ns) != (
        after.st_size, after.st_mtime_ns
    ):
        raise FileChanged(f"{path.name}: changed while being read")
    if path.name.lower().endswith(".gz"):
        data = gunzip(data, path.name, max_bytes)
    return data


def gunzip(data: bytes, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Every gzip member of `data`, refusing more than `max_bytes` of output."""
    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(wbits=31)
            chunk = d.decompress(rest, max_bytes - size + 1)
            size += len(chunk)
            out.append(chunk)
            if size > max_bytes:
                raise InvalidEvents(f"{name}: unzips to more than {max_bytes} bytes")
            if not d.eof:
                raise InvalidEvents(f"{name}: not a readable gzip file: it is truncated")
            rest = d.unused_data.lstrip(b"\0")  # members may be zero-padded
    except zlib.error as e:
        raise InvalidEvents(f"{name}: not a readable gzip file: {e}") from e
    if not data:
        raise InvalidEvents(f"{name}: not a readable gzip file: it is empty")
    return b"".join(out)


def load_file(path: Path, max_events: int = MAX_FILE_EVENTS,
              attrs: RunAttributes | None = None) -> list[Event]:
    """Validated events of one file, or InvalidEvents naming each bad line and field.
    A test report (JUnit XML, pytest report-log) is recognised by its content, whatever
    its name; `attrs` describe the run it becomes."""
    fmt = file_format(path)
    if fmt is None:
        data = read_bytes(path)
        if sniff(data) is None:
            raise InvalidEvents(f"{path.name}: unknown file type; expected one of {SUFFIXES} "
                                "(+ .gz), or a JUnit XML or pytest report-log file")
        return decode_file(data, "report", path.name, max_events, attrs)
    return decode_file(read_bytes(path), fmt, path.name, max_events, attrs)


def decode_file(data: bytes, fmt: str, name: str, max_events: int = MAX_FILE_EVENTS,
                attrs: RunAttributes | None = None) -> list[Event]:
    """Validated events of a file's content in format `fmt` (see `file_format`).

    Problems name `line` (1-based: NDJSON line, JSON line where the event starts,
    Parquet row), plus `event` (0-based) for JSON arrays. An XML file, and JSON
    lines whose first holds `$report_type`, are test reports (issue 20).
    """
    if fmt in ("xml", "report") or (fmt == "ndjson" and sniff(data) == "reportlog"):
        return load_report(data, name, attrs or RunAttributes(), max_events,
                           "junit" if fmt == "xml" else None)
    if fmt == "parquet":
        return load_parquet(data, name, max_events)
    events, problems = validate(data, ndjson=fmt == "ndjson", max_events=max_events,
                                unit="file")
    if problems:
        raise invalid("invalid events", problems)
    return events


def load_parquet(data: bytes, name: str, max_events: int = MAX_FILE_EVENTS) -> list[Event]:
    """Events of a Parquet file in the log's column schema, validated row by row
    with the same rules as JSON (server-assigned columns, if present, are ignored:
    the log assigns them). `line` in errors is the 1-based row number."""
    table = _read_parquet(data, name, max_events)
    return _parquet_rows(table, name)


def parquet_table(data: bytes, name: str, max_events: int = MAX_FILE_EVENTS) -> pa.Table:
    """A Parquet file as a table in LOG_SCHEMA, `seq` and `received_at` zero and `ts`
    null where the file has none (`EventLog.submit_table` assigns all three).

    Accepts and rejects exactly what `load_parquet` does, with its error details.
    """
    table = _read_parquet(data, name, max_events)
    fast = _vectorized(table)
    if fast is not None:
        return fast
    events = _parquet_rows(table, name)
    out = events_to_table(events, 0, 0)
    if "ts" in table.column_names:
        missing = pc.is_null(table.column("ts").combine_chunks())
    else:
        missing = pa.repeat(True, table.num_rows)
    ts_type = LOG_SCHEMA.field("ts").type
    ts = pc.if_else(missing, pa.scalar(None, ts_type), out.column("ts").combine_chunks())
    return out.set_column(COLUMNS.index("ts"), LOG_SCHEMA.field("ts"), ts)


# -- Parquet -------------------------------------------------------------------


def _read_parquet(data: bytes, name: str, max_events: int) -> pa.Table:
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        if pf.metadata.num_rows > max_events:
            n = pf.metadata.num_rows
            raise InvalidEvents(f"{name}: {n} events; at most {max_events} per file")
        table = pf.read()
    except (pa.ArrowException, OSError) as e:
        raise InvalidEvents(f"{name}: not a readable Parquet file: {e}") from e
    unknown = [c for c in table.column_names if c not in COLUMNS]
    if unknown:
        problems = [Problem(line=None, field=c, message="unknown column") for c in unknown]
        raise InvalidEvents(f"{name}: unknown columns {unknown}", problems)
    if len(set(table.column_names)) < table.num_columns:
        raise InvalidEvents(f"{name}: a column name appears twice")
    if table.num_rows == 0:
        raise InvalidEvents(f"{name}: no events")
    return table


def _parquet_rows(table: pa.Table, name: str) -> list[Event]:
    """The events of `table`, or InvalidEvents naming every bad row and field."""
    table, problems = _ts_beyond_python(table)
    events: list[Event] = []
    positions: list[int] = []
    for i, row in enumerate(table.to_pylist(), start=1):
        given = {k: v for k, v in row.items() if v is not None and k not in _SERVER}
        tag = row.get("type")
        fields = _FIELDS.get(tag)  # type: ignore[arg-type]
        if fields is None:  # no type, or not a type: msgspec names that problem
            wire = {_WIRE.get(k, k): v for k, v in given.items()}
        else:  # problems name the file's columns, not the wire's fields
            wire = {fields[k]: v for k, v in given.items() if k in fields}
            problems += [problem("line", i, k, f"is set, but {tag} events have no such field")
                         for k in given if k not in fields]
        try:
            if isinstance(wire.get("params"), str):
                wire["params"] = msgspec.json.decode(wire["params"])
            events.append(msgspec.convert(wire, AnyEvent))
            positions.append(i)
        except msgspec.ValidationError as e:
            bad = problem_of(e, "line", i, tag)
            if fields is not None and bad.field:
                bad.field = column_of(tag, bad.field)  # type: ignore[arg-type]
            problems.append(bad)
        except msgspec.DecodeError as e:
            problems.append(problem("line", i, "params", f"is not JSON: {e}"))
    problems += check_rules(events, None, "line", positions)  # component, delete, params, ts
    if problems:
        raise invalid("invalid events", problems, position="row")
    return events


_UNIT_US = {"s": 1_000_000, "ms": 1000, "us": 1}


def _ts_beyond_python(table: pa.Table) -> tuple[pa.Table, list[Problem]]:
    """A timestamp `ts` column's times outside years 1-9999, which no datetime holds
    (so `to_pylist` would fail on them), as problems, and the table with them null."""
    if "ts" not in table.column_names:
        return table, []
    array = table.column("ts").combine_chunks()
    if not pa.types.is_timestamp(array.type) or array.type.unit not in _UNIT_US:
        return table, []  # not a time (the schema says so), or ns: 1677-2262, all fine
    unit, factor = array.type.unit, _UNIT_US[array.type.unit]
    values = array.cast(pa.int64())
    beyond = pc.or_(pc.less(values, TS_MIN_US // factor), pc.greater(values, TS_MAX_US // factor))
    rows = pc.indices_nonzero(pc.fill_null(beyond, False)).to_pylist()
    if not rows:
        return table, []
    problems = [problem("line", i + 1, "ts", ts_problem(f"{values[i].as_py()} {unit} from 1970"))
                for i in rows]
    cleared = pc.if_else(beyond, pa.scalar(None, array.type), array)
    return table.set_column(table.column_names.index("ts"), "ts", cleared), problems


@dataclass
class _Rule:
    """One column's rule (msgspec type info), and the event types it applies to."""

    column: str
    info: Any
    types: list[str] = field(default_factory=list)


def _rules() -> tuple[list[_Rule], dict[str, list[str]], dict[str, list[str]]]:
    """Rules per (column, distinct type info); {column: types having it};
    {column: types requiring it}. Read from the msgspec schema itself (the column
    of each field by `column_of`), so the two paths cannot drift."""
    rules: dict[tuple[str, str], _Rule] = {}
    having: dict[str, list[str]] = {}
    requiring: dict[str, list[str]] = {}
    for cls in EVENT_TYPES:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        tag = str(info.tag)
        for f in info.fields:
            column = column_of(tag, f.name)
            rule = rules.setdefault((column, repr(f.type)), _Rule(column, f.type))
            rule.types.append(tag)
            having.setdefault(column, []).append(tag)
            if f.required:
                requiring.setdefault(column, []).append(tag)
    return list(rules.values()), having, requiring


_RULES, _HAVING, _REQUIRING = _rules()
_STRING = pa.string()
_TYPE_NAMES = pa.array(TYPE_NAMES)


def _vectorized(table: pa.Table) -> pa.Table | None:
    """The table in LOG_SCHEMA if every row passes every rule, else None."""
    n = table.num_rows
    cols: dict[str, pa.Array] = {}
    for column in table.column_names:
        if column in _SERVER:
            continue
        array = _as_log_type(column, table.column(column).combine_chunks())
        if array is None:
            return None
        if array.null_count < n:
            cols[column] = array
    kind = cols.get("type")
    if kind is None or "component" not in cols or cols["component"].null_count:
        return None
    codes = pc.index_in(kind, value_set=_TYPE_NAMES)  # small ints compare faster
    if codes.null_count:  # a missing type, or one that is not a type
        return None
    present = set(pc.unique(kind).to_pylist())
    masks: list[pa.Array] = []
    seen: dict[frozenset[str], pa.Array | bool] = {}

    def of_types(types: list[str]) -> pa.Array | bool:
        """Rows whose type is one of `types` (True/False when that is every/no row)."""
        hit = frozenset(present.intersection(types))
        if hit not in seen:
            wanted = pa.array([TYPE_NAMES.index(t) for t in hit], codes.type)
            seen[hit] = True if hit == present else bool(hit) and pc.is_in(codes, wanted)
        return seen[hit]

    for column, types in _REQUIRING.items():
        where = of_types(types)
        if where is False:
            continue
        if column not in cols:
            return None
        masks.append(_and(where, pc.is_null(cols[column])))
    for column, array in cols.items():
        having = of_types(_HAVING.get(column, []))
        if column != "type" and having is not True:  # a value in a column the type lacks
            masks.append(_and(pc.invert(_bool(having, n)), pc.is_valid(array)))
    for rule in _RULES:
        where = of_types(rule.types)
        if where is False or rule.column not in cols:
            continue
        broken = _breaks(cols[rule.column], rule.info)
        if broken is None:
            return None
        if broken is not False:
            masks.append(_and(where, broken))
    if "delete" in present:
        no_run, no_batch = (
            pc.is_null(cols[c]) if c in cols else pa.repeat(True, n) for c in ("run_id", "batch_id")
        )
        masks.append(_and(pc.equal(kind, "delete"), pc.equal(no_run, no_batch)))
    bad = _any(masks)
    if bad is not False and pc.any(pc.fill_null(bad, False)).as_py():
        return None
    if "params" in cols and not _normalize_params(cols):
        return None
    arrays = [
        cols[c] if c in cols else pa.nulls(n, LOG_SCHEMA.field(c).type) for c in COLUMNS[2:]
    ]
    zero = pa.repeat(pa.scalar(0, LOG_SCHEMA.field("received_at").type), n)
    return pa.Table.from_arrays([pa.repeat(0, n).cast(pa.int64()), zero, *arrays],
                                schema=LOG_SCHEMA)


def _bool(mask: pa.Array | bool, n: int) -> pa.Array:
    return pa.repeat(mask, n) if isinstance(mask, bool) else mask


# Kleene logic throughout: a null (an absent optional value) never hides a True.
def _and(where: pa.Array | bool, mask: pa.Array) -> pa.Array:
    return mask if where is True else pc.and_kleene(where, mask)


def _as_log_type(column: str, array: pa.Array) -> pa.Array | None:
    """`array` as the log column's type, or None where the row path must decide."""
    want = LOG_SCHEMA.field(column).type
    t = array.type
    if pa.types.is_null(t):
        return pa.nulls(len(array), want)
    if pa.types.is_dictionary(t):
        array, t = array.dictionary_decode(), t.value_type
    if column == "ts":
        return _ts_array(array)
    if want == _STRING:
        ok = pa.types.is_string(t) or pa.types.is_large_string(t)
    elif pa.types.is_integer(want):
        ok = pa.types.is_integer(t)
    else:  # float64
        ok = pa.types.is_floating(t) or pa.types.is_integer(t)
    if not ok:
        return None
    try:
        return array.cast(want)
    except pa.ArrowInvalid:  # e.g. a uint64 beyond int64
        return None


def _ts_array(array: pa.Array) -> pa.Array | None:
    """Event times as µs UTC, the way `events_to_table` stores them; None if the
    column holds anything else (strings, naive or nanosecond timestamps)."""
    t = array.type
    if pa.types.is_null(t):
        return pa.nulls(len(array), LOG_SCHEMA.field("ts").type)
    if pa.types.is_timestamp(t):
        if t.tz is None or t.unit == "ns":
            return None
        try:
            us = array.cast(LOG_SCHEMA.field("ts").type)
        except pa.ArrowInvalid:  # seconds or ms beyond what µs hold
            return None
        low, high = pc.min_max(us.cast(pa.int64())).values()
        if low.is_valid and (low.as_py() < TS_MIN_US or high.as_py() > TS_MAX_US):
            return None  # outside years 1-9999: the row path names the rows
        return us
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        secs = array.cast(pa.float64())
        low, high = pc.min_max(secs).values()
        if low.is_valid and (low.as_py() < 0 or high.as_py() > 4_102_444_800.0):
            return None  # outside EpochSeconds: the row path names the rows
        us = pc.round(pc.multiply(secs, 1_000_000.0))
        return us.cast(pa.int64()).cast(LOG_SCHEMA.field("ts").type)
    return None


def _breaks(array: pa.Array, rule: Any) -> pa.Array | bool | None:
    """A mask of values breaking `rule` (False: none can), or None if not checkable here."""
    if isinstance(rule, mi.UnionType):
        kinds = [t for t in rule.types if not isinstance(t, mi.NoneType)]
        if len(kinds) != 1:
            return False if _is_timestamp_rule(kinds) else None  # ts: _ts_array checks it
        rule = kinds[0]
    if isinstance(rule, mi.Metadata):  # an identifier: its pattern is the schema's
        broken = _breaks(array, rule.type)
        pattern = (rule.extra_json_schema or {}).get("pattern")
        if broken is None or pattern is None:
            return broken
        return _any([m for m in (broken, _mismatch(array, pattern)) if m is not False])
    if isinstance(rule, mi.StrType):
        if not pa.types.is_string(array.type):
            return None
        masks = []
        if rule.min_length is not None or rule.max_length is not None:
            length = pc.utf8_length(array)
            if rule.min_length is not None:
                masks.append(pc.less(length, rule.min_length))
            if rule.max_length is not None:
                masks.append(pc.greater(length, rule.max_length))
        if rule.pattern is not None:
            masks.append(_mismatch(array, rule.pattern))
        return _any(masks)
    if isinstance(rule, mi.LiteralType):
        if not pa.types.is_string(array.type):
            return None
        return pc.invert(pc.is_in(array, pa.array(rule.values, _STRING)))
    if isinstance(rule, mi.IntType | mi.FloatType):
        if isinstance(rule, mi.IntType) != pa.types.is_integer(array.type):
            return None
        if getattr(rule, "multiple_of", None) is not None:
            return None
        masks = [pc.is_nan(array)] if pa.types.is_floating(array.type) else []
        for bound, op in (("ge", pc.less), ("gt", pc.less_equal), ("le", pc.greater),
                          ("lt", pc.greater_equal)):
            limit = getattr(rule, bound)
            if limit is not None:
                masks.append(op(array, limit))
        return _any(masks)
    if isinstance(rule, mi.DictType):
        return False  # params: checked by _normalize_params
    return None


def _mismatch(array: pa.Array, pattern: str) -> pa.Array:
    """Values that Python's `re.search(pattern)` (msgspec's rule) does not match."""
    # "(?!\n)$" and "\Z" both mean the end of the string, RE2's "\z". With no other
    # "$" or "(?", RE2 agrees with Python (and runs without a Python call per value).
    re2 = pattern.replace(r"(?!\n)$", r"\z").replace(r"\Z", r"\z")
    if "$" not in re2 and "(?" not in re2:
        try:
            return pc.invert(pc.match_substring_regex(array, re2))
        except pa.ArrowInvalid:
            pass
    search = re.compile(pattern).search
    values = pc.unique(array).drop_null()
    misses = [v for v in values.to_pylist() if not search(v)]
    return pc.is_in(array, pa.array(misses, _STRING))


def _is_timestamp_rule(kinds: list[Any]) -> bool:
    return {type(k) for k in kinds} == {mi.DateTimeType, mi.FloatType}


def _any(masks: list[pa.Array]) -> pa.Array | bool:
    if not masks:
        return False
    out = masks[0]
    for m in masks[1:]:
        out = pc.or_kleene(out, m)
    return out


_params = msgspec.json.Decoder(dict[str, Any])
_json = msgspec.json.Encoder()


def _normalize_params(cols: dict[str, pa.Array]) -> bool:
    """Check `params` the row path's way (a JSON object within the size and depth
    limits) on the rows that have them, and store each as compact JSON text, as
    `events_to_table` does. False if any is bad."""
    params = cols["params"]
    texts = params.to_pylist()
    rows = [i for i, t in enumerate(texts) if t is not None]
    given = [texts[i] for i in rows]
    try:
        objects = [_params.decode(t) for t in given]
    except msgspec.DecodeError:
        return False
    encoded = [_json.encode(o) for o in objects]
    # Only a text with more than MAX_PARAMS_DEPTH brackets, or too long, can break the
    # size or depth rule: let the schema's own check judge just those.
    doubtful = [
        RunEvent(component="x", run_id="-", params=o)
        for o, b in zip(objects, encoded, strict=True)
        if len(b) > MAX_PARAMS_BYTES or b.count(b"{") + b.count(b"[") > MAX_PARAMS_DEPTH
    ]
    if doubtful and check_rules(doubtful, None, "line", range(len(doubtful))):  # type: ignore[arg-type]
        return False
    for i, b in zip(rows, encoded, strict=True):
        texts[i] = b.decode()
    cols["params"] = pa.array(texts, _STRING)
    return True


__all__ = [
    "MAX_FILE_BYTES",
    "MAX_FILE_EVENTS",
    "SUFFIXES",
    "FileChanged",
    "decode_file",
    "file_format",
    "gunzip",
    "load_file",
    "load_parquet",
    "parquet_table",
    "read_bytes",
]
