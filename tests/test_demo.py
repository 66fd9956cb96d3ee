"""runlake.demo: deterministic, realistic, wire-valid (DESIGN §1) synthetic events."""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime
from typing import Any

import msgspec
import pytest

from runlake.demo import generate, ndjson_batches

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
COMMON = {"type", "component", "run_id", "id", "ts"}
# type -> (required fields, optional fields), besides COMMON; mirrors DESIGN §1.
FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "run": (set(), {"model", "hardware", "batch_id", "name", "params"}),
    "status": ({"status"}, {"error"}),
    "step": ({"step", "status"}, {"progress", "message"}),
    "metric": ({"name", "value"}, {"unit", "step"}),
    "tag": ({"key", "value"}, set()),
    "log": ({"level", "message"}, set()),
    "artifact": ({"name"}, {"uri", "size_bytes", "media_type"}),
    "result": ({"test", "outcome"}, {"duration_s", "message"}),
    "batch": ({"batch_id"}, {"description", "expected_count"}),
}
ENUMS = {
    ("status", "status"): {"pending", "running", "completed", "failed", "cancelled"},
    ("step", "status"): {"pending", "running", "completed", "failed", "skipped"},
    ("log", "level"): {"debug", "info", "warning", "error", "critical"},
    ("result", "outcome"): {"passed", "failed", "skipped", "error", "xfailed", "xpassed"},
}
SLUG = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return list(generate(2000, seed=7, now=NOW))


def _ts(ev: dict[str, Any]) -> float:
    ts = ev["ts"]
    if isinstance(ts, str):
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return float(ts)


def test_deterministic_bytes() -> None:
    a = b"".join(ndjson_batches(300, seed=3, now=NOW, batch_size=100))
    b = b"".join(ndjson_batches(300, seed=3, now=NOW, batch_size=777))
    assert a == b
    assert a != b"".join(ndjson_batches(300, seed=4, now=NOW))
    assert a != b"".join(ndjson_batches(300, seed=3, now=NOW + 86400))


def test_default_now_is_deterministic() -> None:
    assert list(generate(50, seed=1)) == list(generate(50, seed=1))


def test_ndjson_lines_parse_and_batch_size() -> None:
    chunks = list(ndjson_batches(200, seed=1, now=NOW, batch_size=500))
    assert all(c.endswith(b"\n") for c in chunks)
    assert all(c.count(b"\n") == 500 for c in chunks[:-1])
    lines = b"".join(chunks).splitlines()
    parsed = [msgspec.json.decode(line) for line in lines]
    assert parsed == list(generate(200, seed=1, now=NOW))


def test_events_per_run(events: list[dict[str, Any]]) -> None:
    runs = {e["run_id"] for e in events if e["type"] != "batch"}
    assert len(runs) == 2000
    assert 26 <= len(events) / len(runs) <= 34


def test_fields_and_enums(events: list[dict[str, Any]]) -> None:
    for ev in events:
        required, optional = FIELDS[ev["type"]]
        keys = set(ev)
        assert required <= keys, ev
        assert keys <= COMMON | required | optional, ev
        assert "id" not in ev
        assert None not in ev.values(), ev
        assert SLUG.match(ev["component"]), ev
        if ev["type"] == "batch":
            assert "run_id" not in ev
        else:
            assert isinstance(ev["run_id"], str) and 1 <= len(ev["run_id"]) <= 256
        for (typ, field), allowed in ENUMS.items():
            if ev["type"] == typ:
                assert ev[field] in allowed, ev
        if ev["type"] == "metric":
            assert isinstance(ev["value"], (int, float)) and math.isfinite(ev["value"])
            assert "step" not in ev or (isinstance(ev["step"], int) and ev["step"] >= 0)
        if ev["type"] == "step" and "progress" in ev:
            assert 0 <= ev["progress"] <= 1
        if ev["type"] == "tag":
            assert isinstance(ev["value"], str)
        if ev["type"] == "run":
            assert isinstance(ev["params"], dict)
        assert _ts(ev) <= NOW


def test_mix_and_outcomes(events: list[dict[str, Any]]) -> None:
    comps = Counter(e["component"] for e in events if e["type"] == "run")
    assert set(comps) == {"test", "generator", "benchmark"}
    assert comps["generator"] > comps["test"] * 0.9
    terminal = Counter(
        e["status"]
        for e in events
        if e["type"] == "status" and e["status"] in {"completed", "failed", "cancelled"}
    )
    total = sum(terminal.values())
    assert 0.09 <= terminal["failed"] / total <= 0.15
    assert 0.80 <= terminal["completed"] / total <= 0.90
    assert all(
        "error" in e for e in events if e.get("status") == "failed" and e["type"] == "status"
    )
    assert 0.005 <= 1 - total / 2000 <= 0.04  # in flight: no terminal status
    assert {e["outcome"] for e in events if e["type"] == "result"} >= {"passed", "failed"}
    assert all(e["component"] == "test" for e in events if e["type"] == "result")
    models = Counter(e["model"] for e in events if e["type"] == "run")
    assert len(models) >= 40 and models.most_common(1)[0][1] > 10 * min(models.values())
    assert len({e["hardware"] for e in events if e["type"] == "run"}) == 8


def test_batches(events: list[dict[str, Any]]) -> None:
    batches = {e["batch_id"]: e for e in events if e["type"] == "batch"}
    assert batches
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for i, ev in enumerate(events):
        if ev["type"] == "batch":
            seen.add(ev["batch_id"])
        elif ev["type"] == "run" and "batch_id" in ev:
            counts[ev["batch_id"]] += 1
            assert ev["batch_id"] in seen, f"run before its batch at {i}"
    for bid, n in counts.items():
        assert 1 <= n <= batches[bid]["expected_count"] <= 53
    unbatched = sum(1 for e in events if e["type"] == "run" and "batch_id" not in e)
    assert 0 < unbatched < 2000


def test_roughly_time_ordered(events: list[dict[str, Any]]) -> None:
    ts = [_ts(e) for e in events]
    backwards = sum(1 for a, b in zip(ts, ts[1:], strict=False) if b < a)
    assert 0 < backwards / len(ts) < 0.05
    assert NOW - 61 * 86400 <= min(ts) and max(ts) - min(ts) > 50 * 86400
    kinds = Counter(type(e["ts"]) for e in events)
    assert kinds[str] > 5 * kinds[float] > 0


def test_with_ids_unique() -> None:
    evs = list(generate(100, seed=2, now=NOW, with_ids=True))
    ids = [e["id"] for e in evs]
    assert len(set(ids)) == len(ids) and all(1 <= len(i) <= 128 for i in ids)
    plain = list(generate(100, seed=2, now=NOW))
    assert [{k: v for k, v in e.items() if k != "id"} for e in evs] == plain


def test_run_ids_unique_and_small_inputs() -> None:
    runs = [e["run_id"] for e in generate(500, seed=5, now=NOW) if e["type"] == "run"]
    assert len(runs) == len(set(runs)) == 500
    assert list(generate(0, now=NOW)) == []
    assert len({e["run_id"] for e in generate(1, now=NOW)}) == 1
