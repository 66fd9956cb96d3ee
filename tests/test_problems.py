"""Validation problems as data (issue 16): every source of events reports each bad
event as a `Problem` (position, field, message, and an enum field's allowed values),
`InvalidEvents.details` are those problems encoded and `total` counts them all. The
two Parquet paths (`runlake ingest` and the watched folder) share one contract: the
same problems for the same bad file."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.inbox_proc import drop, ndjson_bytes, run_events, running_inbox
from helpers.server import make_server

from runlake.errors import InvalidEvents, Problem
from runlake.events import LOG_SCHEMA, decode_events, events_to_table
from runlake.ingest import files

pytestmark = pytest.mark.timeout(120)

# The enum fields' values, in the order DESIGN §1 lists them.
RUN_STATUSES = ["pending", "running", "completed", "failed", "cancelled"]
STEP_STATUSES = ["pending", "running", "completed", "failed", "skipped"]
LEVELS = ["debug", "info", "warning", "error", "critical"]
OUTCOMES = ["passed", "failed", "skipped", "error", "xfailed", "xpassed"]
TYPES = ["run", "status", "step", "metric", "tag", "log", "artifact", "result", "batch",
         "delete"]
AFTER_9999_US = 253_402_300_800 * 1_000_000  # 10000-01-01T00:00:00Z


def metric(**changes: Any) -> dict[str, Any]:
    return {"type": "metric", "component": "test", "run_id": "r", "name": "x", "value": 1.5,
            **changes}


def invalid(call: Callable[[], object]) -> InvalidEvents:
    with pytest.raises(InvalidEvents) as raised:
        call()
    return raised.value


# -- the shape of a problem -------------------------------------------------------

BAD = [metric(), metric(value="high"), {"type": "status", "component": "test", "run_id": "r",
                                        "status": "done"}]
STATUS_MESSAGE = ("Invalid enum value 'done'; expected one of pending, running, completed, "
                  "failed, cancelled")


@pytest.mark.parametrize("source", ["request-json", "request-ndjson", "file-json",
                                    "file-ndjson"])
def test_details_are_the_problems_encoded(source: str) -> None:
    ndjson = source.endswith("ndjson")
    data = (ndjson_bytes(BAD) if ndjson
            else ("[\n" + ",\n".join(json.dumps(e) for e in BAD) + "\n]").encode())
    if source.startswith("request"):
        e = invalid(lambda: decode_events(data, ndjson=ndjson))
    else:
        e = invalid(lambda: files.decode_file(data, "ndjson" if ndjson else "json", "f"))
    assert all(isinstance(p, Problem) for p in e.problems) and e.total == 2
    assert e.details == msgspec.to_builtins(e.problems)
    # Where: the index in a JSON array, the NDJSON line, and for a JSON file both
    # (the line where the event starts: event n is on line n + 2).
    where = {"request-json": [{"event": 1}, {"event": 2}],
             "request-ndjson": [{"line": 2}, {"line": 3}],
             "file-json": [{"line": 3, "event": 1}, {"line": 4, "event": 2}],
             "file-ndjson": [{"line": 2}, {"line": 3}]}[source]
    assert e.details == [
        where[0] | {"field": "value", "message": "Expected `float`, got `str`"},
        where[1] | {"field": "status", "message": STATUS_MESSAGE, "allowed": RUN_STATUSES},
    ]
    first = next(iter(where[0].items()))
    assert e.message == (f"invalid events: {first[0]} {first[1]} field 'value': "
                         "Expected `float`, got `str` (and 1 more)")


@pytest.mark.parametrize(("event", "field", "allowed"), [
    ({"type": "step", "component": "t", "run_id": "r", "step": "s", "status": "cancelled"},
     "status", STEP_STATUSES),
    ({"type": "step", "component": "t", "run_id": "r", "step": "s"}, "status", STEP_STATUSES),
    ({"type": "log", "component": "t", "run_id": "r", "level": "loud", "message": ""},
     "level", LEVELS),
    ({"type": "result", "component": "t", "run_id": "r", "test": "t", "outcome": "flaky"},
     "outcome", OUTCOMES),
    ({"type": "metrik", "component": "t", "run_id": "r"}, "type", TYPES),
    ({"component": "t", "run_id": "r"}, "type", TYPES),
], ids=["step-status", "step-status-missing", "level", "outcome", "type", "type-missing"])
def test_an_enum_fields_problem_lists_its_allowed_values(
    event: dict[str, Any], field: str, allowed: list[str]
) -> None:
    for ndjson in (False, True):
        (problem,) = invalid(lambda nd=ndjson: decode_events(  # type: ignore[misc]
            json.dumps(event).encode(), ndjson=nd)).details
        assert (problem["field"], problem["allowed"]) == (field, allowed)


@pytest.mark.parametrize("name", ["colour", "", "a`b", "params", "ünï cödé"])
def test_an_unknown_field_is_named(name: str) -> None:
    data = json.dumps([metric(), metric(**{name: 1})]).encode()
    (problem,) = invalid(lambda: decode_events(data)).details
    assert (problem["event"], problem["field"]) == (1, name)
    (problem,) = invalid(lambda: files.decode_file(data, "json", "f.json")).details
    assert (problem["line"], problem["event"], problem["field"]) == (1, 1, name)


def test_json_that_is_not_json_names_the_event_and_field() -> None:
    """NaN and Infinity are not JSON: the whole array fails to parse, yet the problem
    still says which event and which field the bad byte is in."""
    good = json.dumps(metric())
    data = f'[{good},\n {good},\n {{"type": "metric", "value": NaN}}]'.encode()
    (problem,) = invalid(lambda: decode_events(data)).details
    assert (problem["event"], problem["field"]) == (2, "value")
    (problem,) = invalid(lambda: files.decode_file(data, "json", "f.json")).details
    assert (problem["line"], problem["event"], problem["field"]) == (3, 2, "value")
    line = b'{"type": "run", "component": "t", "run_id": "r", "params": {"a": Infinity}}'
    (problem,) = invalid(lambda: decode_events(line, ndjson=True)).details
    assert (problem["line"], problem["field"]) == (1, "params")


def test_the_total_counts_every_problem_and_the_details_keep_1000() -> None:
    data = ndjson_bytes([metric(value="no")] * 1500 + [metric()])
    e = invalid(lambda: files.decode_file(data, "ndjson", "many.ndjson"))
    assert (e.total, len(e.problems), len(e.details)) == (1500, 1000, 1000)
    assert [p.line for p in e.problems[:3]] == [1, 2, 3]
    assert e.message.endswith("(and 1499 more)")
    assert not hasattr(e, "error_count")  # the count is `total`, not a patched attribute


@pytest.mark.parametrize(("unit", "decode"), [
    ("request", lambda d: decode_events(d, ndjson=True, max_events=2)),
    ("file", lambda d: files.decode_file(d, "ndjson", "f", max_events=2)),
])
def test_limits_are_worded_for_what_was_sent(unit: str, decode: Callable[[bytes], Any]) -> None:
    (problem,) = invalid(lambda: decode(ndjson_bytes([metric()] * 3))).details
    assert problem["message"].endswith(f"at most 2 per {unit}")
    assert problem["line"] is None and problem["field"] is None


def test_the_server_answers_with_the_problems(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            reply = await client.post_events([*BAD, metric(colour="red")])
            assert reply.status == 400
            assert reply.json()["error"]["details"] == [
                {"event": 1, "field": "value", "message": "Expected `float`, got `str`"},
                {"event": 2, "field": "status", "message": STATUS_MESSAGE,
                 "allowed": RUN_STATUSES},
                {"event": 3, "field": "colour",
                 "message": "Object contains unknown field `colour`"},
            ]

    asyncio.run(main())


# -- the Parquet contract ------------------------------------------------------------

GOOD = run_events("good", metrics=2)  # rows: 1 run, 2 status, 3 step, 4 tag, 5 log,
# 6 artifact, 7 result, 8 and 9 metric, 10 status


def parquet_with(changes: dict[int, dict[str, Any]]) -> bytes:
    """GOOD as a Parquet file in the log's columns, with the cells of `changes`
    ({row: {column: value}}, rows 1-based) set; a `ts` is µs since 1970."""
    table = events_to_table(decode_events(json.dumps(GOOD).encode()), 1, 0)
    table = table.drop_columns(["seq", "received_at"])
    for row, cells in changes.items():
        for column, value in cells.items():
            i = table.column_names.index(column)
            values = table.column(i).to_pylist() if column != "ts" else (
                table.column(i).cast(pa.int64()).to_pylist())
            values[row - 1] = value
            kind = LOG_SCHEMA.field(column).type
            array = (pa.array(values, pa.int64()).cast(kind) if column == "ts"
                     else pa.array(values, kind))
            table = table.set_column(i, column, array)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


Expected = list[tuple[int, str, list[str] | None]]  # (row, column, allowed values)
PARQUET_CASES: dict[str, tuple[dict[int, dict[str, Any]], Expected]] = {
    "unknown run status": ({2: {"status": "exploded"}}, [(2, "status", RUN_STATUSES)]),
    "run status on a step": ({3: {"status": "cancelled"}}, [(3, "status", STEP_STATUSES)]),
    "unknown level": ({5: {"level": "loud"}}, [(5, "level", LEVELS)]),
    "NUL in run_id": ({5: {"run_id": "a\x00b"}}, [(5, "run_id", None)]),
    "C1 control in id": ({6: {"id": "x\x85"}}, [(6, "id", None)]),
    "value beyond 1e100": ({8: {"value": 1e101}}, [(8, "value", None)]),
    "ts after year 9999": ({9: {"ts": AFTER_9999_US}}, [(9, "ts", None)]),
    "a tag without its value": ({4: {"tag_value": None}}, [(4, "tag_value", None)]),
    "a step name on a metric": ({8: {"step_name": "s"}}, [(8, "step_name", None)]),
    "several": ({2: {"status": "exploded"}, 7: {"outcome": "meh"}, 9: {"value": -1e200}},
                [(2, "status", RUN_STATUSES), (7, "outcome", OUTCOMES), (9, "value", None)]),
}


def problems_of_ingest(path: Path) -> tuple[list[dict[str, Any]], int]:
    """What `runlake ingest FILE` reports (it loads the file with `load_file`)."""
    e = invalid(lambda: files.load_file(path))
    return e.details, e.total


def problems_of_inbox(path: Path) -> tuple[list[dict[str, Any]], int]:
    """What the watched folder writes in `<name>.error.json`."""
    async def main() -> dict[str, Any]:
        async with running_inbox(path.parent / "data", start=False) as h:
            h.dir.mkdir(parents=True, exist_ok=True)
            drop(h.dir, path.name, path.read_bytes())
            result = await h.inbox.ingest_file(h.dir / path.name)
            assert result.outcome == "rejected"
            assert h.event_log.last_seq == 0
            return dict(json.loads((h.dir / ".rejected" / f"{path.name}.error.json")
                                   .read_text()))

    report = asyncio.run(main())
    return report["errors"], report["error_count"]


PATHS = {"runlake ingest": problems_of_ingest, "inbox": problems_of_inbox}


@pytest.mark.parametrize("case", list(PARQUET_CASES))
@pytest.mark.parametrize("path", list(PATHS))
def test_both_parquet_paths_report_the_same_problems(tmp_path: Path, path: str, case: str
                                                     ) -> None:
    changes, expected = PARQUET_CASES[case]
    data = parquet_with(changes)
    assert files._vectorized(pq.read_table(io.BytesIO(data))) is None, "fast path accepted it"
    file = tmp_path / "bad.parquet"
    file.write_bytes(data)
    problems, total = PATHS[path](file)
    assert [(p["line"], p["field"], p.get("allowed")) for p in problems] == expected
    assert total == len(expected)
    assert all(p["message"] and "event" not in p for p in problems)
    # The other path, on the same bytes, says exactly the same.
    (other,) = set(PATHS) - {path}
    other_file = tmp_path / "other" / "bad.parquet"
    other_file.parent.mkdir()
    other_file.write_bytes(data)
    assert PATHS[other](other_file) == (problems, total)
