"""The events the browser tests send, and the figures they expect, computed here in
plain Python from those events (never read back from the API)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

STATUSES = ["pending", "running", "completed", "failed", "cancelled"]
ALPHA_STATUS = ["completed", "failed", "running", "completed", "cancelled", "completed"]
LEVELS = ["info", "warning", "error"]
OUTCOMES = ["passed", "failed", "passed", "skipped", "passed"]


@dataclass
class Run:
    component: str
    run_id: str
    model: str
    hardware: str
    status: str
    created: datetime
    params: dict[str, Any]
    batch_id: str | None = None
    tps: list[float] = field(default_factory=list)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def make_runs(now: datetime) -> list[Run]:
    runs = [Run("alpha", f"r{i:02d}", "m1" if i % 2 else "m2", "h1" if i % 3 else "h2",
                ALPHA_STATUS[(i - 1) % len(ALPHA_STATUS)], now - timedelta(minutes=60 - i),
                {"lr": round(0.1 * i, 3), "opt": "adam"}, "b1" if i <= 4 else None,
                [10.0 * i + k for k in range(3)])
            for i in range(1, 13)]
    runs += [Run("beta", f"b{i:02d}", "m1", "h9", s, now - timedelta(minutes=30 - i),
                 {"lr": 0.5}) for i, s in enumerate(["completed", "completed", "failed"], 1)]
    return runs


def events(runs: list[Run], now: datetime) -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = [
        {"type": "batch", "component": "alpha", "batch_id": "b1", "expected_count": 5,
         "ts": _iso(now - timedelta(hours=2))}]
    for r in runs:
        t = r.created
        base = {"component": r.component, "run_id": r.run_id}
        run = {**base, "type": "run", "model": r.model, "hardware": r.hardware,
               "name": f"job {r.run_id}", "params": r.params, "ts": _iso(t)}
        if r.batch_id:
            run["batch_id"] = r.batch_id
        evs.append(run)
        evs.append({**base, "type": "status", "status": "running",
                    "ts": _iso(t + timedelta(seconds=1))})
        if r.status != "running":
            evs.append({**base, "type": "status", "status": r.status,
                        "ts": _iso(t + timedelta(seconds=30))})
        evs += [{**base, "type": "metric", "name": "tps", "value": v,
                 "ts": _iso(t + timedelta(seconds=2 + k))} for k, v in enumerate(r.tps)]
    return evs


DETAIL_RUN = "r01"  # the run whose detail page the tests read
LOSS = [round(1.0 / (s + 1), 6) for s in range(30)]
LONG_POINTS = 5000  # more than a chart draws: the server buckets them


def detail_events(now: datetime) -> list[dict[str, Any]]:
    """Steps, metrics, logs, results and an artifact for alpha/r01."""
    base = {"component": "alpha", "run_id": DETAIL_RUN}
    t = now - timedelta(minutes=5)
    evs: list[dict[str, Any]] = [
        {**base, "type": "step", "step": "train", "status": "running", "progress": 0.5,
         "ts": _iso(t)},
        {**base, "type": "artifact", "name": "model.bin", "uri": "s3://bucket/model.bin",
         "size_bytes": 1234, "ts": _iso(t)},
        {**base, "type": "tag", "key": "team", "value": "vision", "ts": _iso(t)}]
    evs += [{**base, "type": "metric", "name": "loss", "value": v, "step": s,
             "ts": _iso(t + timedelta(seconds=s))} for s, v in enumerate(LOSS)]
    evs += [{**base, "type": "metric", "name": "long", "value": float(s % 97), "step": s,
             "ts": _iso(t)} for s in range(LONG_POINTS)]
    evs += [{**base, "type": "log", "level": LEVELS[i % 3], "message": f"line {i}",
             "ts": _iso(t + timedelta(seconds=i))} for i in range(7)]
    evs += [{**base, "type": "result", "test": f"test_{i}", "outcome": o,
             "ts": _iso(t + timedelta(seconds=i))} for i, o in enumerate(OUTCOMES)]
    return evs


def by_status(runs: list[Run]) -> dict[str, int]:
    return {s: sum(r.status == s for r in runs) for s in STATUSES}


def success_rate(runs: list[Run]) -> str:
    n = by_status(runs)
    done = n["completed"] + n["failed"]
    return f"{100 * n['completed'] / done:.1f}%" if done else "—"


def tps_p50(runs: list[Run]) -> dict[tuple[str, str], float]:
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r.component == "alpha":
            cells.setdefault((r.model, r.hardware), []).extend(r.tps)
    return {k: statistics.median(v) for k, v in cells.items()}


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
