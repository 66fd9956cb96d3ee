"""The event wire format (DESIGN §1): every type round-trips, every rule rejects with a
detail naming the event (JSON index / NDJSON line) and the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runlake.errors import InvalidEvents
from runlake.events import EVENT_TYPES, decode_events
from runlake.events.schema import (
    MAX_METRIC_VALUE,
    TYPE_NAMES,
    AnyEvent,
    DeleteEvent,
    MetricEvent,
    RunEvent,
)

# One event of each type with every field it accepts set.
FULL: dict[str, dict[str, Any]] = {
    "run": {
        "type": "run", "component": "generator", "run_id": "gen-1", "id": "e-1",
        "ts": "2024-05-01T12:00:00.123456Z", "model": "llama-3.1-8b", "hardware": "nvidia-h100",
        "batch_id": "b-1", "name": "nightly chat",
        "params": {"lr": 0.001, "layers": [1, 2, 3], "opt": {"name": "adam", "eps": None}},
    },
    "status": {
        "type": "status", "component": "test", "run_id": "ci-7", "ts": 1714564800.25,
        "status": "failed", "error": "AssertionError: 1 != 2",
    },
    "step": {
        "type": "step", "component": "test", "run_id": "ci-7", "step": "unit-tests",
        "status": "running", "progress": 0.5, "message": "half way",
    },
    "metric": {
        "type": "metric", "component": "benchmark", "run_id": "mmlu-3", "name": "accuracy",
        "value": 0.6875, "unit": "ratio", "step": 12, "ts": "2024-05-01T14:00:00+02:00",
    },
    "tag": {"type": "tag", "component": "jobs", "run_id": "j", "key": "branch", "value": "main"},
    "log": {
        "type": "log", "component": "jobs", "run_id": "j", "level": "critical",
        "message": "out of memory ✗",
    },
    "artifact": {
        "type": "artifact", "component": "generator", "run_id": "gen-1", "name": "out.wav",
        "uri": "s3://bucket/out.wav", "size_bytes": 123456, "media_type": "audio/wav",
    },
    "result": {
        "type": "result", "component": "test", "run_id": "ci-7",
        "test": "tests/test_x.py::test_y[1]", "outcome": "xfailed", "duration_s": 0.012,
        "message": "known bug",
    },
    "batch": {
        "type": "batch", "component": "benchmark", "batch_id": "sweep-1",
        "description": "hardware sweep", "expected_count": 8,
    },
    "delete": {"type": "delete", "component": "test", "run_id": "ci-7"},
}
# The same with only the required fields.
MINIMAL: dict[str, dict[str, Any]] = {
    "run": {"type": "run", "component": "generator", "run_id": "gen-1"},
    "status": {"type": "status", "component": "test", "run_id": "r", "status": "running"},
    "step": {"type": "step", "component": "test", "run_id": "r", "step": "s", "status": "pending"},
    "metric": {"type": "metric", "component": "test", "run_id": "r", "name": "n", "value": -3},
    "tag": {"type": "tag", "component": "test", "run_id": "r", "key": "k", "value": ""},
    "log": {"type": "log", "component": "test", "run_id": "r", "level": "info", "message": ""},
    "artifact": {"type": "artifact", "component": "test", "run_id": "r", "name": "a"},
    "result": {"type": "result", "component": "test", "run_id": "r", "test": "t",
               "outcome": "passed"},
    "batch": {"type": "batch", "component": "test", "batch_id": "b"},
    "delete": {"type": "delete", "component": "test", "batch_id": "b"},
}


Wire = dict[str, Any] | bytes  # an event, or raw JSON text for what json.dumps cannot write


def raw(event: Wire) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


def body(*events: Wire) -> bytes:
    return b"[" + b",".join(raw(e) for e in events) + b"]"


def ndjson(*events: Wire) -> bytes:
    return b"".join(raw(e) + b"\n" for e in events)


def rejected(data: bytes, **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidEvents) as info:
        decode_events(data, **kwargs)
    err = info.value
    assert err.status == 400 and err.code == "invalid_events"
    assert err.message.startswith("invalid events")
    assert err.details, "an InvalidEvents must say what was wrong"
    for d in err.details:
        assert d["message"]
    return err.details


def test_the_examples_cover_every_event_type() -> None:
    assert set(FULL) == set(MINIMAL) == set(TYPE_NAMES)
    assert len(EVENT_TYPES) == len(TYPE_NAMES) == 10


@pytest.mark.parametrize("kind", TYPE_NAMES)
@pytest.mark.parametrize("examples", [FULL, MINIMAL], ids=["full", "minimal"])
def test_every_type_round_trips(kind: str, examples: dict[str, dict[str, Any]]) -> None:
    wire = examples[kind]
    (event,) = decode_events(json.dumps(wire).encode())
    assert event.__struct_config__.tag == kind
    encoded = msgspec.json.encode(event)
    (again,) = decode_events(encoded)
    assert again == event
    # Nothing is lost or invented on the way: the encoding is the input.
    assert msgspec.json.decode(encoded) == wire


def test_timestamps_keep_their_instant() -> None:
    (rfc,) = decode_events(json.dumps(FULL["metric"]).encode())
    assert rfc.ts == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert rfc.ts.utcoffset() == timedelta(hours=2)
    (epoch,) = decode_events(json.dumps(FULL["status"]).encode())
    assert epoch.ts == 1714564800.25
    (none,) = decode_events(json.dumps(MINIMAL["status"]).encode())
    assert none.ts is None


def test_one_event_array_and_ndjson_bodies_decode_the_same() -> None:
    events = list(FULL.values())
    from_array = decode_events(body(*events))
    from_ndjson = decode_events(ndjson(*events), ndjson=True)
    from_singles = [decode_events(json.dumps(e).encode())[0] for e in events]
    assert from_array == from_ndjson == from_singles
    assert [e.__struct_config__.tag for e in from_array] == list(FULL)


@pytest.mark.parametrize(
    "data",
    [
        b"\n".join(json.dumps(e).encode() for e in FULL.values()),  # no final newline
        b"\r\n".join(json.dumps(e).encode() for e in FULL.values()) + b"\r\n",
        b"\n\n".join(json.dumps(e).encode() for e in FULL.values()) + b"\n\n",  # blank lines
        b"  " + ndjson(*FULL.values()) + b"   \n",
    ],
    ids=["no-final-newline", "crlf", "blank-lines", "padding"],
)
def test_ndjson_variants(data: bytes) -> None:
    assert decode_events(data, ndjson=True) == decode_events(body(*FULL.values()))


def test_array_body_may_hold_one_event() -> None:
    assert decode_events(body(FULL["tag"])) == decode_events(json.dumps(FULL["tag"]).encode())


def good(kind: str = "metric", drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    event = {k: v for k, v in FULL[kind].items() if k not in drop}
    event.update(changes)
    return event


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# (case id, bad event, the field the error must name). One rule of DESIGN §1 per row.
BAD: list[tuple[str, Wire, str]] = [
    ("unknown-type", good(type="metrik"), "type"),
    ("type-not-string", good(type=3), "type"),
    ("missing-type", good(drop=("type",)), "type"),
    ("missing-component", good(drop=("component",)), "component"),
    ("component-uppercase", good(component="Test"), "component"),
    ("component-starts-with-digit", good(component="1test"), "component"),
    ("component-trailing-newline", good(component="test\n"), "component"),
    ("component-too-long", good(component="c" * 65), "component"),
    ("component-not-string", good(component=7), "component"),
    ("run-id-too-long", good(run_id="r" * 257), "run_id"),
    ("run-id-empty", good(run_id=""), "run_id"),
    ("run-id-missing", good(drop=("run_id",)), "run_id"),
    ("run-id-not-string", good(run_id=12), "run_id"),
    ("id-too-long", good(id="i" * 129), "id"),
    ("id-empty", good(id=""), "id"),
    ("id-reserved-at", good(id="@17"), "id"),
    ("ts-bad-string", good(ts="yesterday"), "ts"),
    ("ts-date-only", good(ts="2024-05-01"), "ts"),
    ("ts-naive", good(ts="2024-05-01T12:00:00"), "ts"),
    ("ts-negative-epoch", good(ts=-1), "ts"),
    ("ts-after-2100", good(ts=4_200_000_000), "ts"),
    ("ts-bool", good(ts=True), "ts"),
    ("status-missing", good("status", drop=("status",)), "status"),
    ("status-unknown", good("status", status="done"), "status"),
    ("status-step-only-value", good("status", status="skipped"), "status"),
    ("error-too-long", good("status", error="e" * 16_385), "error"),
    ("step-name-missing", good("step", drop=("step",)), "step"),
    ("step-name-too-long", good("step", step="s" * 257), "step"),
    ("step-status-missing", good("step", drop=("status",)), "status"),
    ("step-status-run-only-value", good("step", status="cancelled"), "status"),
    ("progress-above-1", good("step", progress=1.01), "progress"),
    ("progress-negative", good("step", progress=-0.1), "progress"),
    ("metric-name-missing", good(drop=("name",)), "name"),
    ("metric-name-empty", good(name=""), "name"),
    ("value-missing", good(drop=("value",)), "value"),
    ("value-null", good(value=None), "value"),
    ("value-string", good(value="0.5"), "value"),
    ("value-bool", good(value=True), "value"),
    ("value-out-of-range", raw(good(value=0.5)).replace(b"0.5", b"1e999"), "value"),
    ("value-negative-out-of-range", raw(good(value=0.5)).replace(b"0.5", b"-2e308"), "value"),
    ("metric-step-negative", good(step=-1), "step"),
    ("metric-step-float", good(step=1.5), "step"),
    ("unit-not-string", good(unit=1), "unit"),
    ("unknown-extra-field", good(colour="red"), "colour"),
    ("misspelt-field", good(drop=("value",), vaule=1.0), "vaule"),
    ("client-sent-seq", good(seq=5), "seq"),
    ("client-sent-received-at", good(received_at="2024-05-01T12:00:00Z"), "received_at"),
    ("tag-key-missing", good("tag", drop=("key",)), "key"),
    ("tag-value-missing", good("tag", drop=("value",)), "value"),
    ("tag-value-number", good("tag", value=3), "value"),
    ("tag-value-too-long", good("tag", value="v" * 1025), "value"),
    ("log-level-unknown", good("log", level="fatal"), "level"),
    ("log-level-missing", good("log", drop=("level",)), "level"),
    ("log-message-missing", good("log", drop=("message",)), "message"),
    ("log-message-too-long", good("log", message="m" * 16_385), "message"),
    ("artifact-name-missing", good("artifact", drop=("name",)), "name"),
    ("artifact-size-negative", good("artifact", size_bytes=-1), "size_bytes"),
    ("artifact-uri-empty", good("artifact", uri=""), "uri"),
    ("result-test-missing", good("result", drop=("test",)), "test"),
    ("result-outcome-unknown", good("result", outcome="flaky"), "outcome"),
    ("result-outcome-missing", good("result", drop=("outcome",)), "outcome"),
    ("result-duration-negative", good("result", duration_s=-0.5), "duration_s"),
    ("batch-id-missing", good("batch", drop=("batch_id",)), "batch_id"),
    ("batch-with-run-id", good("batch", run_id="r"), "run_id"),
    ("batch-expected-negative", good("batch", expected_count=-2), "expected_count"),
    ("delete-neither", good("delete", drop=("run_id",)), "run_id"),
    ("delete-both", good("delete", batch_id="b"), "run_id"),
    ("params-not-object", good("run", params=[1, 2]), "params"),
    ("params-string", good("run", params="{}"), "params"),
    ("params-too-deep", good("run", params=deep(9)), "params"),
    ("params-too-big", good("run", params={"blob": "x" * 17_000}), "params"),
    ("run-name-too-long", good("run", name="n" * 257), "name"),
    ("run-model-empty", good("run", model=""), "model"),
]


def test_the_bad_table_has_one_row_per_rule() -> None:
    ids = [case_id for case_id, _, _ in BAD]
    assert len(ids) == len(set(ids)) >= 30


@pytest.mark.parametrize(
    ("event", "field"), [(e, f) for _, e, f in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_event_is_rejected_naming_position_and_field(event: Wire, field: str) -> None:
    (alone,) = rejected(raw(event))
    assert (alone["event"], alone["field"]) == (0, field)
    # The same event third in a JSON array, and on line 3 of NDJSON, among good ones.
    others = [FULL["tag"], MINIMAL["run"]]
    (in_array,) = rejected(body(*others, event))
    assert (in_array["event"], in_array["field"]) == (2, field)
    (in_ndjson,) = rejected(ndjson(*others, event), ndjson=True)
    assert (in_ndjson["line"], in_ndjson["field"]) == (3, field)
    assert "event" not in in_ndjson


def test_reject_messages_say_what_is_wrong() -> None:
    (unknown,) = rejected(raw(good(type="metrik")))
    assert "metric" in unknown["message"] and "tag" in unknown["message"]  # lists valid types
    (status,) = rejected(raw(good("status", status="done")))
    assert "done" in status["message"] or "completed" in status["message"]
    (extra,) = rejected(raw(good(colour="red")))
    assert "unknown" in extra["message"] and "colour" in extra["message"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_nan_and_infinity_are_rejected(literal: bytes) -> None:
    data = b'{"type":"metric","component":"t","run_id":"r","name":"x","value":' + literal + b"}"
    (detail,) = rejected(data)
    assert detail["event"] == 0
    if literal in (b"1e999", b"-1e999"):  # NaN and Infinity are not JSON: no field to name
        assert detail["field"] == "value"
    (line,) = rejected(ndjson(FULL["tag"]) + data, ndjson=True)
    assert line["line"] == 2


def test_all_bad_events_of_a_json_array_are_listed() -> None:
    events = [
        good(value="x"),  # 0
        FULL["tag"],  # 1
        good("delete", batch_id="b"),  # 2: a rule msgspec cannot state
        good(drop=("component",)),  # 3
        good(type="nope"),  # 4
        MINIMAL["batch"],  # 5
        good("run", params=deep(12)),  # 6
    ]
    details = rejected(body(*events))
    assert [(d["event"], d["field"]) for d in details] == [
        (0, "value"), (2, "run_id"), (3, "component"), (4, "type"), (6, "params"),
    ]
    with pytest.raises(InvalidEvents, match=r"event 0 field 'value'.*\(and 4 more\)"):
        decode_events(body(*events))


def test_all_bad_lines_of_ndjson_are_listed_one_based() -> None:
    lines = [
        json.dumps(FULL["metric"]),  # 1
        json.dumps(good(value=True)),  # 2
        "",  # 3: blank lines are skipped but still counted
        "{not json",  # 4
        json.dumps(good("log", level="loud")),  # 5
        json.dumps(good("delete", drop=("run_id",))),  # 6
        json.dumps(MINIMAL["batch"]),  # 7
    ]
    details = rejected("\n".join(lines).encode(), ndjson=True)
    assert [(d["line"], d["field"]) for d in details] == [
        (2, "value"), (4, None), (5, "level"), (6, "run_id"),
    ]
    assert all("event" not in d for d in details)


def test_a_raw_newline_inside_a_string_is_not_joined_into_one_event() -> None:
    # Two lines that only parse if the newline is taken for a comma inside the string.
    data = (
        b'{"type":"log","component":"t","run_id":"r","level":"info","message":"a\n'
        b'b"},' + json.dumps(MINIMAL["tag"]).encode()
    )
    details = rejected(data, ndjson=True)
    assert [d["line"] for d in details] == [1, 2]


@pytest.mark.parametrize(
    ("data", "nd"),
    [(b"", False), (b"  ", False), (b"[]", False), (b"", True), (b"\n \n", True)],
)
def test_empty_bodies_are_rejected(data: bytes, nd: bool) -> None:
    (detail,) = rejected(data, ndjson=nd)
    assert "no events" in detail["message"] or "empty" in detail["message"]


@pytest.mark.parametrize(
    "data", [b"42", b'"metric"', b"[1]", b"[{}]", b"{", b"[{}", b"null"]
)
def test_bodies_that_are_not_events(data: bytes) -> None:
    rejected(data)


def test_too_many_events_are_rejected_for_json_and_ndjson() -> None:
    events = [MINIMAL["tag"]] * 5
    assert len(decode_events(body(*events), max_events=5)) == 5
    (detail,) = rejected(body(*events), max_events=4)
    assert "at most 4" in detail["message"] and detail["event"] is None
    (detail,) = rejected(ndjson(*events), ndjson=True, max_events=4)
    assert "at most 4" in detail["message"] and detail["line"] is None
    bad_and_many = ndjson(*events) + b"\n{oops\n"
    (detail,) = rejected(bad_and_many, ndjson=True, max_events=4)
    assert "at most 4" in detail["message"]


def test_implied_component_fills_missing_ones() -> None:
    events = [good(drop=("component",)), good("tag", drop=("component",))]
    decoded = decode_events(body(*events), component="benchmark")
    assert [e.component for e in decoded] == ["benchmark", "benchmark"]
    decoded = decode_events(ndjson(*events), ndjson=True, component="jobs")
    assert [e.component for e in decoded] == ["jobs", "jobs"]


def test_implied_component_accepts_matching_and_rejects_mismatching() -> None:
    events = [good(component="test"), good(drop=("component",)), good(component="generator")]
    details = rejected(body(*events), component="test")
    assert [(d["event"], d["field"]) for d in details] == [(2, "component")]
    assert "generator" in details[0]["message"] and "test" in details[0]["message"]
    assert len(decode_events(body(*events[:2]), component="test")) == 2
    details = rejected(ndjson(*events), ndjson=True, component="test")
    assert [(d["line"], d["field"]) for d in details] == [(3, "component")]


def test_implied_component_must_itself_be_a_slug() -> None:
    (detail,) = rejected(body(good(drop=("component",))), component="Not A Slug")
    assert detail["field"] == "component"


def test_delete_names_a_run_or_a_batch() -> None:
    by_run, by_batch = decode_events(body(FULL["delete"] | {"batch_id": None}, MINIMAL["delete"]))
    assert isinstance(by_run, DeleteEvent) and isinstance(by_batch, DeleteEvent)
    assert (by_run.run_id, by_run.batch_id) == ("ci-7", None)
    assert (by_batch.run_id, by_batch.batch_id) == (None, "b")


def test_params_at_the_limits_are_accepted() -> None:
    (ev,) = decode_events(json.dumps(good("run", params=deep(8))).encode())
    assert isinstance(ev, RunEvent) and ev.params == deep(8)
    big = {"blob": "x" * (16_384 - len('{"blob":""}'))}
    (ev,) = decode_events(json.dumps(good("run", params=big)).encode())
    assert isinstance(ev, RunEvent) and ev.params == big


def test_timestamps_with_offsets_and_epochs_at_the_edges() -> None:
    for ts in ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5-07:30", 0, 4_102_444_800):
        decode_events(json.dumps(good(ts=ts)).encode())
    (ev,) = decode_events(raw(good(ts="2024-05-01T05:00:00-07:00")))
    assert ev.ts == datetime(2024, 5, 1, 12, tzinfo=UTC)


finite = st.floats(min_value=-MAX_METRIC_VALUE, max_value=MAX_METRIC_VALUE)
# Identifiers hold any character but a control one (category Cc: C0, DEL and C1).
text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=256)


@given(
    run_id=text, name=text, value=finite, step=st.none() | st.integers(0, 2**62),
    ts=st.none() | st.floats(0, 4_102_444_800) | st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31),
        timezones=st.just(UTC),
    ),
)
def test_metric_round_trips_for_any_valid_values(
    run_id: str, name: str, value: float, step: int | None, ts: Any
) -> None:
    event = MetricEvent(run_id=run_id, name=name, value=value, step=step, ts=ts, component="c")
    data = msgspec.json.encode(event)
    (decoded,) = decode_events(data)
    assert decoded == event
    (from_ndjson,) = decode_events(data + b"\n", ndjson=True)
    assert from_ndjson == event
    assert msgspec.convert(msgspec.to_builtins(event), AnyEvent) == event


WHOLE = [  # (event, the integer field given as a float with a zero fraction)
    ({"type": "metric", "run_id": "r", "name": "loss", "value": 1.5, "step": 3.0}, "step"),
    ({"type": "result", "run_id": "r", "test": "t", "outcome": "passed", "attempt": 2.0},
     "attempt"),
    ({"type": "artifact", "run_id": "r", "name": "a", "size_bytes": 1024.0}, "size_bytes"),
    ({"type": "batch", "batch_id": "b", "expected_count": 5.0}, "expected_count"),
]


@pytest.mark.parametrize(("event", "field"), WHOLE, ids=[f for _, f in WHOLE])
@pytest.mark.parametrize("shape", ["object", "array", "ndjson"])
def test_a_whole_number_float_is_an_integer(event: Wire, field: str, shape: str) -> None:
    """JSON Schema (and so the OpenAPI document) counts 3.0 as an integer: an integer
    field takes it as 3, in every body shape; 3.5 stays refused, naming the field."""
    event = {"component": "c", **event}
    body = {"object": json.dumps(event), "array": json.dumps([event, event]),
            "ndjson": json.dumps(event) + "\n" + json.dumps(event)}[shape].encode()
    events = decode_events(body, ndjson=shape == "ndjson")
    got = getattr(events[0], field)
    assert got == int(event[field]) and type(got) is int
    fraction = {**event, field: event[field] + 0.5}
    with pytest.raises(InvalidEvents) as info:
        decode_events(json.dumps(fraction).encode())
    assert info.value.problems[0].field == field
