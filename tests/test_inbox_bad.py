"""Bad files in the watched folder: each goes to `.rejected/` beside an error file that
names the problem (and each bad line and field), changes nothing in the log or the
database, and the watcher carries on with the next good file. Also: the vectorized
Parquet check accepts exactly what the row-by-row one accepts."""

from __future__ import annotations

import asyncio
import copy
import gzip
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers.inbox_proc import (
    drop,
    json_bytes,
    ndjson_bytes,
    parquet_bytes,
    run_events,
    running_inbox,
)

from runlake import demo
from runlake.errors import InvalidEvents
from runlake.events import LOG_SCHEMA, decode_events, events_to_table
from runlake.ingest import files

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

MAX_EVENTS = 2000
MAX_BYTES = 1 << 20

GOOD = run_events("good", metrics=2)


def lines(*events: dict[str, Any]) -> bytes:
    return ndjson_bytes(list(events))


def with_(index: int, **change: Any) -> list[dict[str, Any]]:
    """GOOD with event `index` changed (a value of None removes the field)."""
    events = copy.deepcopy(GOOD)
    for k, v in change.items():
        if v is None:
            events[index].pop(k, None)
        else:
            events[index][k] = v
    return events


def parquet_of(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def good_table() -> pa.Table:
    return pq.read_table(io.BytesIO(parquet_bytes(GOOD)))


def gz_bomb() -> bytes:
    return gzip.compress(b" " * (MAX_BYTES + 10), compresslevel=9)


Mutation = Callable[[pa.Table], pa.Table]


def set_cell(column: str, row_type: str, value: Any, type_: pa.DataType | None = None
             ) -> Mutation:
    """Put `value` in `column` of the first row of type `row_type`."""
    def mutate(table: pa.Table) -> pa.Table:
        row = table.column("type").to_pylist().index(row_type)
        values = table.column(column).to_pylist() if column in table.column_names else [
            None] * table.num_rows
        values[row] = value
        field_type = type_ or LOG_SCHEMA.field(column).type
        array = pa.array(values, field_type)
        if column in table.column_names:
            return table.set_column(table.column_names.index(column), column, array)
        return table.append_column(column, array)
    return mutate


def json_line(events: list[dict[str, Any]], index: int) -> int:
    """The line where event `index` starts in `json_bytes(events)`."""
    text = json_bytes(events).decode().splitlines()
    return [n for n, t in enumerate(text, start=1) if t == "  {"][index]


# name -> (content, what the error must say, (line, field) one detail must name or None)
Case = tuple[bytes, str, tuple[int | None, str | None] | None]
CASES: dict[str, Case] = {
    "malformed.ndjson": (lines(*GOOD[:2]) + b'{"type": "tag", "component": \n', "malformed",
                         (3, None)),
    "unknown_field.ndjson": (ndjson_bytes(with_(3, colour="red")), "colour", (4, "colour")),
    "wrong_type.jsonl": (ndjson_bytes(with_(8, value="high")), "Expected `float`", (9, "value")),
    "infinite.ndjson": (ndjson_bytes(GOOD).replace(b'"value": 0.5', b'"value": 1e400'),
                        "value", (9, "value")),
    "bad_status.ndjson": (ndjson_bytes(with_(1, status="exploded")), "status", (2, "status")),
    "no_component.json": (json_bytes(with_(4, component=None)), "component",
                          (json_line(with_(4, component=None), 4), "component")),
    "one_bad_object.json": (json_bytes(with_(0, run_id=None)[0]), "run_id", (1, "run_id")),
    "not_objects.json": (b"[1, 2]", "Expected `object`", (1, None)),
    "delete_both.ndjson": (lines({"type": "delete", "component": "test", "run_id": "r",
                                  "batch_id": "b"}), "exactly one", (1, "run_id")),
    "reserved_id.ndjson": (ndjson_bytes(with_(2, id="@7")), "id", (3, "id")),
    "empty.ndjson": (b"", "no events", None),
    "blank.json": (b"  \n\n ", "empty", None),
    "binary.ndjson": (bytes(range(256)) * 4, "malformed", None),
    "truncated.ndjson.gz": (gzip.compress(ndjson_bytes(GOOD))[:-30], "gzip", None),
    "not_really.json.gz": (json_bytes(GOOD), "gzip", None),
    "bomb.ndjson.gz": (gz_bomb(), "unzips to more than", None),
    "too_big.ndjson": (b" " * (MAX_BYTES + 1), f"at most {MAX_BYTES}", None),
    "too_many.ndjson": (ndjson_bytes(run_events("many", metrics=MAX_EVENTS)),
                        f"at most {MAX_EVENTS} per file", None),
    "garbage.parquet": (b"PAR1" + bytes(range(200)) + b"PAR1", "not a readable Parquet", None),
    "wrong_schema.parquet": (parquet_of(good_table().append_column("colour", pa.array(
        ["red"] * len(GOOD)))), "unknown column", (None, "colour")),
    "no_type_column.parquet": (parquet_of(good_table().drop_columns(["type"])), "type",
                               (1, "type")),
    "bad_row.parquet": (parquet_of(set_cell("status", "status", "exploded")(good_table())),
                        "status", (2, "status")),
    "bad_row.parquet.gz": (gzip.compress(parquet_of(
        set_cell("size_bytes", "artifact", -1)(good_table()))), "size_bytes", (6, "size_bytes")),
    "notes.txt": (b"hello", "unknown file type", None),
    "_SUCCESS": (b"", "unknown file type", None),
}
SPECIAL = {  # not plain files: made by `make_special`
    "link.ndjson": "symbolic link",
    "dangling.json": "symbolic link",
    "fifo.ndjson": "not a regular file",
}


def many_errors() -> bytes:
    """1500 bad lines among good ones: the error file lists 1000 and counts 1500."""
    bad = {"type": "metric", "component": "test", "run_id": "r", "name": "x", "value": "no"}
    return ndjson_bytes([bad] * 1500 + GOOD)


def make_special(inbox: Path, outside: Path) -> None:
    os.symlink(outside, inbox / "link.ndjson")  # a good file, but outside the inbox
    os.symlink(inbox / "nowhere.json", inbox / "dangling.json")
    os.mkfifo(inbox / "fifo.ndjson")  # opening it for reading would block forever


def error_file(rejected: Path, name: str, dropped_as: str | None = None) -> dict[str, Any]:
    report = json.loads((rejected / f"{name}.error.json").read_text())
    assert set(report) == {"file", "error", "errors", "error_count"}
    assert report["file"] == (dropped_as or name) and report["error"] and report["errors"]
    for e in report["errors"]:
        assert {"line", "field", "message"} <= set(e), e
    return report


def test_bad_files_are_rejected_and_change_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside.ndjson"
    outside.write_bytes(ndjson_bytes(run_events("outside")))

    async def main() -> None:
        async with running_inbox(tmp_path / "data", max_events=MAX_EVENTS,
                                 max_bytes=MAX_BYTES) as h:
            for name, (content, _, _) in CASES.items():
                drop(h.dir, name, content)
            drop(h.dir, "many_errors.ndjson", many_errors())
            make_special(h.dir, outside)
            (h.dir / "folder.ndjson").mkdir()  # a directory: skipped, not rejected
            total = len(CASES) + 1 + len(SPECIAL)
            await h.settled(total)
            assert (h.inbox.files_ingested, h.inbox.files_rejected) == (0, total)
            assert h.event_log.last_seq == 0
            assert await h.sql("SELECT count(*) FROM runs") == [(0,)]

            rejected = h.dir / ".rejected"
            for name, (_, says, detail) in CASES.items():
                assert (rejected / name).exists(), name
                report = error_file(rejected, name)
                text = json.dumps(report)
                assert says in text, (name, report)
                if detail is not None:
                    found = [(e["line"], e["field"]) for e in report["errors"]]
                    assert detail in found, (name, found)
            report = error_file(rejected, "many_errors.ndjson")
            assert report["error_count"] == 1500 and len(report["errors"]) == 1000
            assert [e["line"] for e in report["errors"][:3]] == [1, 2, 3]
            assert report["errors"][0]["field"] == "value"
            for name, says in SPECIAL.items():
                assert os.path.lexists(rejected / name), name
                assert says in error_file(rejected, name)["error"], name
            assert (rejected / "link.ndjson").is_symlink()  # the link moved, not its target
            assert outside.read_bytes() == ndjson_bytes(run_events("outside"))
            assert h.files() == [] and (h.dir / "folder.ndjson").is_dir()

            # Still watching: the next good file goes in, and a bad one with a name
            # already in .rejected/ gets a suffix.
            drop(h.dir, "after.ndjson", ndjson_bytes(GOOD))
            drop(h.dir, "malformed.ndjson", b"{nope\n")
            await h.settled(total + 2)
            assert h.inbox.files_ingested == 1
            assert h.event_log.last_seq == len(GOOD)
            assert await h.sql("SELECT run_id, status FROM runs") == [("good", "completed")]
            assert (rejected / "malformed.1.ndjson").exists()
            again = error_file(rejected, "malformed.1.ndjson", "malformed.ndjson")
            assert again["errors"][0]["line"] == 1

    asyncio.run(main())


def test_a_file_that_cannot_be_moved_is_not_ingested_again(tmp_path: Path) -> None:
    """If .done/ cannot take the file, the watcher says so, leaves it, and does not
    append it again and again (it tries once more only if the file changes)."""
    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            (h.dir / ".done").rmdir()
            (h.dir / ".done").write_bytes(b"")  # a file where the folder should be
            drop(h.dir, "stuck.ndjson", ndjson_bytes(GOOD))
            await h.settled(1)
            await asyncio.sleep(1.0)  # several more looks at the folder
            assert h.inbox.files_ingested == 1 and h.event_log.last_seq == len(GOOD)
            assert h.files() == [".done", "stuck.ndjson"]

    asyncio.run(main())


# -- the vectorized Parquet check against the row-by-row one --------------------

def recast(column: str, type_: pa.DataType) -> Mutation:
    def mutate(table: pa.Table) -> pa.Table:
        i = table.column_names.index(column)
        return table.set_column(i, pa.field(column, type_), table.column(i).cast(type_))
    return mutate


def ts_as(values: Callable[[pa.Array], pa.Array]) -> Mutation:
    def mutate(table: pa.Table) -> pa.Table:
        i = table.column_names.index("ts")
        return table.set_column(i, "ts", values(table.column(i).combine_chunks()))
    return mutate


SECONDS = pa.timestamp("s", tz="UTC")
MUTATIONS: dict[str, Mutation] = {
    "as is": lambda t: t,
    "run status on a step": set_cell("status", "step", "cancelled"),
    "step status on a status": set_cell("status", "status", "skipped"),
    "unknown status": set_cell("status", "status", "exploded"),
    "capital component": set_cell("component", "metric", "Test"),
    "component with newline": set_cell("component", "metric", "test\n"),
    "empty component": set_cell("component", "tag", ""),
    "no component": set_cell("component", "tag", None),
    "no type": set_cell("type", "tag", None),
    "unknown type": set_cell("type", "tag", "bogus"),
    "empty run_id": set_cell("run_id", "log", ""),
    "no run_id on a metric": set_cell("run_id", "metric", None),
    "long run_id": set_cell("run_id", "log", "r" * 257),
    "run_id of 256": set_cell("run_id", "log", "é" * 256),
    "reserved id": set_cell("id", "log", "@12"),
    "long id": set_cell("id", "log", "i" * 129),
    "empty id": set_cell("id", "log", ""),
    "NaN value": set_cell("value", "metric", float("nan")),
    "infinite value": set_cell("value", "metric", float("inf")),
    "value on a tag": set_cell("value", "tag", 1.0),
    "progress above 1": set_cell("progress", "step", 1.5),
    "negative progress": set_cell("progress", "step", -0.1),
    "negative step": set_cell("step", "metric", -1),
    "huge step": set_cell("step", "metric", 2**62 + 1),
    "unknown level": set_cell("level", "log", "loud"),
    "params not JSON": set_cell("params", "run", "{nope"),
    "params an array": set_cell("params", "run", "[1, 2]"),
    "params empty": set_cell("params", "run", "{}"),
    "params spaced": set_cell("params", "run", '{ "a" : [1, 2.50, "x"] }'),
    "params too deep": set_cell("params", "run", '{"a":' * 9 + "1" + "}" * 9),
    "params too big": set_cell("params", "run", json.dumps({"a": "x" * 17_000})),
    "long name": set_cell("name", "metric", "n" * 257),
    "long message": set_cell("message", "log", "m" * 16_385),
    "long tag value": set_cell("tag_value", "tag", "v" * 1025),
    "tag value on a metric": set_cell("tag_value", "metric", "v"),
    "step_name on a metric": set_cell("step_name", "metric", "s"),
    "negative expected_count": set_cell("expected_count", "batch", -1),
    "long duration": set_cell("duration_s", "result", 1e10),
    "unknown outcome": set_cell("outcome", "result", "meh"),
    "delete with both": lambda t: set_cell("batch_id", "delete", "b")(
        set_cell("run_id", "delete", "r")(t)),
    "delete with neither": lambda t: set_cell("run_id", "delete", None)(
        set_cell("batch_id", "delete", None)(t)),
    "delete of a batch": lambda t: set_cell("batch_id", "delete", "b")(
        set_cell("run_id", "delete", None)(t)),
    "batch with run_id": set_cell("run_id", "batch", "r"),
    "batch without run_id": set_cell("run_id", "batch", None),
    "no ts": set_cell("ts", "tag", None),
    "value as int column": lambda t: set_cell("value", "metric", 3, pa.int64())(
        t.set_column(t.column_names.index("value"), "value",
                     pc.cast(pc.round(t.column("value")), pa.int64()))),
    "step as float column": recast("step", pa.float64()),
    "step as int32": recast("step", pa.int32()),
    "large strings": recast("message", pa.large_string()),
    "dictionary component": recast("component", pa.dictionary(pa.int32(), pa.string())),
    "ts in ms": recast("ts", pa.timestamp("ms", tz="UTC")),
    "ts in another zone": recast("ts", pa.timestamp("us", tz="Europe/Paris")),
    "ts naive": recast("ts", pa.timestamp("us")),
    "ts in ns": recast("ts", pa.timestamp("ns", tz="UTC")),
    "ts as epoch seconds": ts_as(lambda a: pc.divide(a.cast(pa.int64()).cast(pa.float64()),
                                                     1e6)),
    "ts as negative epoch": ts_as(lambda a: pa.array([-1.0] * len(a))),
    "ts as strings": ts_as(lambda a: pa.array(["2024-05-01T12:00:00Z"] * len(a))),
    "ts after year 9999": ts_as(lambda a: pa.array([253_402_300_800] * len(a), SECONDS)),
    "ts before year 1": ts_as(lambda a: pa.array([-62_135_596_801] * len(a), SECONDS)),
    "ts beyond what µs hold": ts_as(lambda a: pa.array([10**14] * len(a), SECONDS)),
    "ts at the edges": ts_as(lambda a: pa.array(
        [-62_135_596_800_000_000, 253_402_300_799_999_999] * (len(a) // 2) + [0] * (len(a) % 2),
        pa.timestamp("us", tz="UTC"))),
    "NUL in run_id": set_cell("run_id", "metric", "a\x00b"),
    "C1 control in id": set_cell("id", "log", "x\x85y"),
    "newline ending a tag key": set_cell("key", "tag", "k\n"),
    "tab in a metric name": set_cell("name", "metric", "a\tb"),
    "value beyond 1e100": set_cell("value", "metric", 1e101),
    "value at -1e100": set_cell("value", "metric", -1e100),
    "server columns kept": lambda t: t.append_column("seq", pa.array(range(t.num_rows))),
    "all-null column": lambda t: t.drop_columns(["media_type"]).append_column(
        "media_type", pa.nulls(t.num_rows)),
    "bool column": lambda t: t.drop_columns(["unit"]).append_column(
        "unit", pa.array([True] * t.num_rows)),
    "columns left out": lambda t: t.select(["type", "component", "run_id", "name", "value",
                                            "status", "step_name", "batch_id", "key",
                                            "tag_value", "level", "message", "test",
                                            "outcome", "ts"]),
}


def every_type_table() -> pa.Table:
    """Demo events plus one of each type the demo lacks (delete), with ids on some."""
    chunk = next(demo.ndjson_batches(40, seed=5, batch_size=2000))
    events = decode_events(chunk, ndjson=True, max_events=10_000)
    events += decode_events(json.dumps([
        {"type": "delete", "component": "test", "run_id": "gone", "id": "del-1"},
        {"type": "batch", "component": "test", "batch_id": "b9", "expected_count": 3},
    ]).encode())
    return events_to_table(events, 1, 0).drop_columns(["seq", "received_at"])


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_vectorized_parquet_check_agrees_with_the_row_check(mutation: str) -> None:
    table = MUTATIONS[mutation](every_type_table())
    data = parquet_of(table)
    try:
        events = files.load_parquet(data, "x.parquet")
    except InvalidEvents as e:
        row_error: InvalidEvents | None = e
    else:
        row_error = None
    read = pq.read_table(io.BytesIO(data))
    fast = files._vectorized(read)
    if row_error is not None:
        assert fast is None, "the vectorized check accepted a file the row check rejects"
        with pytest.raises(InvalidEvents) as raised:
            files.parquet_table(data, "x.parquet")
        assert raised.value.details == row_error.details
        return
    expected = events_to_table(events, 0, 0)
    got = files.parquet_table(data, "x.parquet")
    assert got.schema.equals(LOG_SCHEMA, check_metadata=False)
    ts_nulls = pc.is_null(read.column("ts")) if "ts" in read.column_names else None
    for name in LOG_SCHEMA.names[2:]:
        if name == "ts" and ts_nulls is not None:
            assert got.column("ts").null_count == pc.sum(ts_nulls).as_py()
            assert pc.if_else(ts_nulls, None, expected.column("ts")).equals(got.column("ts"))
            continue
        assert got.column(name).equals(expected.column(name)), name
    if mutation in {"as is", "params empty", "params spaced", "value as int column",
                    "step as int32", "large strings", "dictionary component", "ts in ms",
                    "ts in another zone", "ts as epoch seconds", "no ts", "delete of a batch",
                    "batch without run_id", "server columns kept", "all-null column",
                    "run_id of 256", "ts at the edges",
                    "value at -1e100"}:
        assert fast is not None, "an ordinary file should take the vectorized path"


def test_json_errors_name_the_line_where_the_event_starts() -> None:
    events = with_(4, level="loud")
    data = json_bytes(events)
    with pytest.raises(InvalidEvents) as raised:
        files.decode_file(data, "json", "x.json")
    (detail,) = raised.value.details
    line = json_line(events, 4)
    assert (detail["line"], detail["event"], detail["field"]) == (line, 4, "level")
    assert f"line {line}" in raised.value.message


def test_when_the_log_refuses_files_wait_in_the_inbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed (or failed) log is not the file's fault: it stays, is not rejected, and
    goes in once the log takes appends again."""
    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            await asyncio.to_thread(h.event_log.close)
            drop(h.dir, "waits.ndjson", ndjson_bytes(GOOD))
            # Until the inbox has tried and been refused (a fixed sleep may end before it
            # even looks, on a loaded machine, and the test would then prove nothing).
            await h.until(lambda: "cannot append waits.ndjson" in caplog.text)
            assert h.files() == ["waits.ndjson"]
            assert (h.inbox.files_ingested, h.inbox.files_rejected) == (0, 0)
            await asyncio.to_thread(h.event_log.open)
            drop(h.dir, "next.ndjson", ndjson_bytes(run_events("next")))
            await h.settled(2)
            assert h.files() == [] and h.files(".done") == ["next.ndjson", "waits.ndjson"]

    asyncio.run(main())
