"""Streamed export (DESIGN §4): `POST /api/{component}/db/export` and `GET /api/db/export`.

Runs (from DuckDB) or events (from the log) go out as NDJSON, one JSON array, or
Parquet, in chunked encoding, batch by batch: each record batch is read, filtered
and encoded on a thread, then written with back-pressure (the next batch is read
only once the client has taken the previous one), so server memory stays flat
whatever the size. Nothing is written to disk: the Parquet writer writes into
memory that is drained after each row group. The download name is made up by the
server; a client `filename` only replaces it after sanitizing (`download_name`).

Events go out in the wire format (DESIGN §1), so an NDJSON or JSON export
re-ingests as it is (`POST /api/events`, `runlake ingest`, the inbox); the Parquet
export is the log's own schema (docs/log.md), which the inbox also takes (its
`seq` and `received_at` are ignored there). Runs go out as `/runs` items; documents
as runs with their steps, tags, metric and result summaries and artifacts
(docs/compat.md, "Export"): what the old Generator/Test APIs' exports gave.

The requested file name's extension chooses the format, and with it documents, as
old clients sent only `{"filename": "generator_export.json"}` and `json.load`ed the
file (`resolve`). A component that never had an event is a 404 naming the known
ones, as on the read routes.
An error after the first byte cannot become a status any more: the connection is
cut, so the client sees an incomplete chunked body, never a truncated "success".
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from aiohttp import hdrs, web
from msgspec import Meta

from runlake.api.auth import visible_components
from runlake.api.params import MAX_PARAM_CHARS, NoQuery, decode_body
from runlake.api.reads import db_read, wait_for_fold
from runlake.api.state import DATABASE, EVENT_LOG
from runlake.errors import BadRequest, NotFound
from runlake.events import LOG_SCHEMA, EventLog
from runlake.events.columns import wire_rows
from runlake.views.db import Database
from runlake.views.export import run_document_batches, runs_batches

log = logging.getLogger("runlake.api")

MAX_BODY_BYTES = 64 * 1024
DOWNLOAD_NAME_CHARS = 100
JSON_BATCH_ROWS = 16_384  # ~2.5 MB of NDJSON per chunk
PARQUET_BATCH_ROWS = 32_768  # one row group per batch
DOCUMENT_BATCH_ROWS = 1_024  # runs per page of documents: each carries its children
AwareDatetime = Annotated[datetime, Meta(tz=True)]


class Format(NamedTuple):
    extension: str
    media_type: str
    also: tuple[str, ...] = ()  # other extensions a requested name may keep


FORMATS = {
    "ndjson": Format("ndjson", "application/x-ndjson", ("jsonl",)),
    "json": Format("json", "application/json"),
    "parquet": Format("parquet", "application/vnd.apache.parquet"),
}
# A requested name's extension (case-insensitive) -> the format it asks for.
EXTENSIONS = {ext: name for name, f in FORMATS.items() for ext in (f.extension, *f.also)}


class ExportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to export; `since` inclusive, `until` exclusive, on the events' `ts` or
    the runs' `created_at`."""

    what: Literal["events", "runs", "documents"] | None = None
    format: Literal["ndjson", "json", "parquet"] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    filename: Annotated[str, Meta(max_length=MAX_PARAM_CHARS)] | None = None
    min_seq: Annotated[int, Meta(ge=0)] = 0  # runs, documents: wait (bounded) for the fold


# Each field's description: the GET's query parameters and the POST's body, in OpenAPI.
FIELD_DOCS = {
    "what": "events, runs or documents (runs with their steps, tags, metric and result "
            "summaries, artifacts); default: documents when the filename's extension is "
            ".json, .ndjson, .jsonl or .parquet, else events",
    "format": "ndjson, json or parquet; default: the filename's extension's, else ndjson; "
              "one that contradicts the extension is a 400",
    "since": "events with ts, runs created, at or after (RFC 3339)",
    "until": "... before (RFC 3339)",
    "filename": "download name; sanitized, never a server path; its extension chooses "
                "the format (see format, what)",
    "min_seq": "runs, documents: wait (bounded) until the fold has passed this seq",
}
assert set(FIELD_DOCS) == set(ExportRequest.__struct_fields__)

# OpenAPI's description of the success body: the shapes (docs/compat.md, "Export").
RESPONSE_DOC = (
    "The export, streamed: events in the wire format (NDJSON lines, one JSON array, or "
    "Parquet in the log's schema); runs as /runs items; documents as /runs items each "
    "with steps [{step, status, progress, message, ts}], tags {key: value}, metrics "
    "[{name, unit, count, mean, min, max, last}], results {total, passed, failed, "
    "skipped, error, xfailed, xpassed} and artifacts [{name, uri, size_bytes, "
    "media_type, ts}]: one JSON array (.json), one per line (.ndjson/.jsonl), or "
    "Parquet with nested columns and params as JSON text (.parquet).")


class Resolved(NamedTuple):
    what: str
    format: str


def resolve(spec: ExportRequest, where: str) -> Resolved:
    """What to export and how: explicit fields, else what the requested name's
    extension asks for (documents in that format), else events as NDJSON. A `format`
    that contradicts the extension is a 400 (`where`: parameter or field): serving
    NDJSON under a `.json` name is what broke the old clients."""
    asked = _extension_format(spec.filename)
    if asked is not None and spec.format is not None and spec.format != asked:
        raise BadRequest(
            f"{where} 'format' is {spec.format!r} but 'filename' asks for {asked!r} by its "
            "extension; send one of them, or both agreeing",
            [{where: "format", "message": f"contradicts the filename's extension ({asked})",
              "allowed": [asked]}])
    fmt = spec.format or asked or "ndjson"
    what = spec.what or ("documents" if asked is not None else "events")
    return Resolved(what, fmt)


def _extension_format(requested: str | None) -> str | None:
    """The format a requested name's extension names (its last path segment's, as
    sanitized), if any; a name with nothing usable left names none."""
    if requested is None or sanitize_filename(requested, "x") is None:
        return None
    return EXTENSIONS.get(_requested_extension(requested) or "")


# -- handlers -------------------------------------------------------------------


async def post_export(request: web.Request, query: NoQuery) -> web.StreamResponse:
    component = request.match_info["component"]
    body = await request.read()
    spec = decode_body(request, body, ExportRequest) if body.strip() else ExportRequest()
    chosen = resolve(spec, "field")
    await _known_component(request, chosen.what)
    return await _export(request, spec, chosen, [component], component)


async def get_export(request: web.Request, query: ExportRequest) -> web.StreamResponse:
    return await _export(request, query, resolve(query, "parameter"),
                         visible_components(request), "all")


async def _known_component(request: web.Request, what: str) -> None:
    """404 for a component that never had an event, as the read routes answer. The
    events export reads the log, which may hold events the fold has not reached: it
    waits (bounded) for the fold to pass them before it concludes."""
    try:
        await db_read(request, lambda cur: None)
    except NotFound:
        if what != "events":
            raise
        await wait_for_fold(request, request.app[EVENT_LOG].last_seq)
        await db_read(request, lambda cur: None)


async def _export(request: web.Request, spec: ExportRequest, chosen: Resolved,
                  components: list[str] | None, label: str) -> web.StreamResponse:
    if spec.min_seq and chosen.what != "events":
        await wait_for_fold(request, spec.min_seq,
                            "parameter" if request.method == "GET" else "field")
    if chosen.what == "events":
        chunks = _event_chunks(request.app[EVENT_LOG], components, chosen.format, spec)
    elif chosen.what == "runs":
        chunks = _run_chunks(request.app[DATABASE], components, chosen.format, spec)
    else:
        chunks = _document_chunks(request.app[DATABASE], components, chosen.format, spec)
    pump = _Pump(chunks)
    loop = asyncio.get_running_loop()
    try:
        # The first step opens the source: an error there still gets the envelope.
        chunk = await loop.run_in_executor(None, pump.next)
        fmt = FORMATS[chosen.format]
        name = download_name(label, chosen.what, fmt, spec.filename)
        response = web.StreamResponse(headers={
            hdrs.CONTENT_TYPE: fmt.media_type,
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="{name}"',
            hdrs.CACHE_CONTROL: "no-store",
            "X-Content-Type-Options": "nosniff",
        })
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while chunk is not None:
                if chunk:
                    await response.write(chunk)  # waits while the client is behind
                chunk = await loop.run_in_executor(None, pump.next)
            await response.write_eof()
        except ConnectionError:
            log.info("export to %s stopped: the client went away", request.remote)
        except Exception:
            log.exception("export failed after it began; cutting the connection")
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        # Shielded: a cancelled handler must still release the cursor or log reader.
        await asyncio.shield(loop.run_in_executor(None, pump.close))


class _Pump:
    """Steps a blocking chunk iterator on executor threads, one step at a time;
    `close` waits for a step still running (its handler may have been cancelled)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._lock = threading.Lock()

    def next(self) -> bytes | None:
        with self._lock:
            return next(self._chunks, None)

    def close(self) -> None:
        with self._lock:
            self._chunks.close()  # type: ignore[attr-defined]


# -- the download name ------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SEPARATORS = re.compile(r"[/\\]")


def download_name(label: str, what: str, fmt: Format, requested: str | None,
                  now: datetime | None = None) -> str:
    """`<component|all>-<what>-<UTC time>.<ext>`, or the client's name made safe
    (keeping its extension when it is one of the format's: `.jsonl` stays).

    Only ever a name for the client's download: the server writes no file.
    """
    if requested is not None:
        extension = fmt.extension
        if (asked := _requested_extension(requested)) in fmt.also:
            extension = asked
        safe = sanitize_filename(requested, extension)
        if safe is not None:
            return safe
    now = now or datetime.now(UTC)
    return f"{label}-{what}-{now:%Y%m%dT%H%M%SZ}.{fmt.extension}"


def _requested_extension(requested: str) -> str | None:
    base = _UNSAFE.sub("", _SEPARATORS.split(requested.replace("\0", ""))[-1]).lstrip(".")
    return base.rsplit(".", 1)[1].lower() if "." in base else None


def sanitize_filename(requested: str, extension: str) -> str | None:
    """The last path segment, NULs and anything outside [A-Za-z0-9._-] dropped, no
    leading dot, the extension forced to `extension`, at most 100 characters;
    None when nothing usable is left."""
    base = _SEPARATORS.split(requested.replace("\0", ""))[-1]
    base = _UNSAFE.sub("", base).lstrip(".")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = stem[: DOWNLOAD_NAME_CHARS - len(extension) - 1].rstrip(".")
    return f"{stem}.{extension}" if stem else None


# -- sources ----------------------------------------------------------------------


def _event_chunks(event_log: EventLog, components: list[str] | None, fmt: str,
                  spec: ExportRequest) -> Iterator[bytes]:
    rows = PARQUET_BATCH_ROWS if fmt == "parquet" else JSON_BATCH_ROWS
    batches = (
        _select(batch, components, spec.since, spec.until)
        for batch in event_log.read(1, event_log.last_seq, batch_rows=rows)
    )
    return _encode((b for b in batches if b.num_rows), LOG_SCHEMA, fmt, wire_events)


def _run_chunks(db: Database, components: list[str] | None, fmt: str,
                spec: ExportRequest) -> Iterator[bytes]:
    rows = PARQUET_BATCH_ROWS if fmt == "parquet" else JSON_BATCH_ROWS
    batches = runs_batches(db, components, spec.since, spec.until, rows)
    first = next(batches)  # always one, maybe empty: it carries the schema
    # A generator: nothing above runs until the pump pulls it, on an executor thread;
    # each page's query runs on the database's reader threads (`read_sync`).
    yield from _encode(itertools.chain([first], batches), first.schema, fmt, run_items)


def _document_chunks(db: Database, components: list[str] | None, fmt: str,
                     spec: ExportRequest) -> Iterator[bytes]:
    batches = run_document_batches(db, components, spec.since, spec.until, DOCUMENT_BATCH_ROWS)
    first = next(batches)  # always one, maybe empty: it carries the schema
    yield from _encode(itertools.chain([first], batches), first.schema, fmt, run_documents)


def _select(batch: pa.RecordBatch, components: list[str] | None, since: datetime | None,
            until: datetime | None) -> pa.RecordBatch:
    """The events of `batch` in `components` with since ≤ ts < until."""
    masks = []
    if components is not None:
        masks.append(pc.is_in(batch.column("component"), value_set=pa.array(components,
                                                                              pa.string())))
    ts = batch.column("ts")
    if since is not None:
        masks.append(pc.greater_equal(ts, pa.scalar(since, ts.type)))
    if until is not None:
        masks.append(pc.less(ts, pa.scalar(until, ts.type)))
    if not masks:
        return batch
    return batch.filter(functools.reduce(pc.and_, masks))


# -- encodings ---------------------------------------------------------------------

_json = msgspec.json.Encoder()
Items = Callable[[pa.RecordBatch], list[Any]]


def _encode(batches: Iterator[pa.RecordBatch], schema: pa.Schema,
            fmt: str, items: Items) -> Iterator[bytes]:
    """The export's bytes, one chunk per batch (possibly empty ones)."""
    if fmt == "ndjson":
        for batch in batches:
            yield _json.encode_lines(items(batch))
    elif fmt == "json":
        yield b"["
        sep = b""
        for batch in batches:
            if batch.num_rows:
                yield sep + _json.encode(items(batch))[1:-1]  # "[a,b]" -> "a,b"
                sep = b","
        yield b"]"
    else:
        sink = _Drain()
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
        try:
            for batch in batches:
                writer.write_batch(batch)  # one row group
                yield sink.take()
        finally:
            writer.close()
        yield sink.take()


class _Drain(io.RawIOBase):
    """A write-only in-memory file whose content is taken away as it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def wire_events(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Log rows back in the wire format, in order: what `row_to_event` gives, minus
    `seq` and `received_at` (the schema refuses them), with a missing `id` left out
    (not `@seq`, which the schema reserves)."""
    times = pc.strftime(batch.column("ts"), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    return wire_rows(batch, middle=(("id", batch.column("id").to_pylist()), ("ts", times)))


def run_items(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows of `views.export.runs_batches` as `/runs` items (params as a JSON object)."""
    rows = batch.to_pylist()
    for row in rows:
        if row["params"] is not None:
            row["params"] = msgspec.Raw(row["params"])
    return rows


def run_documents(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows of `views.export.run_document_batches` as documents: `/runs` items with
    tags as an object (Arrow's map comes out as pairs). Times become their JSON text
    in Arrow first: making a datetime per value took half of the export's time."""
    batch = pa.RecordBatch.from_arrays([_times_as_text(c) for c in batch.columns],
                                       names=batch.schema.names)
    rows = run_items(batch)
    for row in rows:
        row["tags"] = dict(row["tags"])
    return rows


def _times_as_text(array: pa.Array) -> pa.Array:
    """`array` with every UTC timestamp in it, nested ones too, as the text msgspec
    writes for a UTC datetime (RFC 3339, `Z`, microseconds only when not zero)."""
    kind = array.type
    if pa.types.is_timestamp(kind):
        # "2026-12-07 03:04:05.000000" from a cast (cheaper than strftime or regexes:
        # BENCHMARKS.md, the run-documents export), then the fraction dropped when
        # zero, the T and the Z put in.
        text = pc.cast(array.cast(pa.timestamp(kind.unit)), pa.string())
        text = pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, 19),
                          text)
        return pc.binary_join_element_wise(pc.utf8_replace_slice(text, 10, 11, "T"), "Z", "")
    if pa.types.is_struct(kind):
        fields = [_times_as_text(array.field(i)) for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(fields, names=[f.name for f in kind],
                                          mask=array.is_null() if array.null_count else None)
    if pa.types.is_list(kind) and _has_time(kind):
        return pa.ListArray.from_arrays(array.offsets, _times_as_text(array.values),
                                        mask=array.is_null() if array.null_count else None)
    return array


def _has_time(kind: pa.DataType) -> bool:
    if pa.types.is_timestamp(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_has_time(f.type) for f in kind)
    return pa.types.is_list(kind) and _has_time(kind.value_type)
