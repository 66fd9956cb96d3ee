"""Typed answers of the read routes. Unknown fields are ignored, so a newer server's
additions do not break an older client; fields a server may leave out have defaults."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import msgspec


class Run(msgspec.Struct):
    component: str
    run_id: str
    status: str
    created_at: datetime
    updated_at: datetime
    model: str | None = None
    hardware: str | None = None
    batch_id: str | None = None
    name: str | None = None
    params: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None


class Step(msgspec.Struct):
    step: str
    status: str
    ts: datetime
    progress: float | None = None
    message: str | None = None


class MetricSummary(msgspec.Struct):
    name: str
    count: int
    mean: float
    min: float
    max: float
    last: float
    unit: str | None = None


class LogLine(msgspec.Struct):
    level: str
    message: str
    ts: datetime
    seq: int


class Artifact(msgspec.Struct):
    name: str
    ts: datetime
    uri: str | None = None
    size_bytes: int | None = None
    media_type: str | None = None


class RunDetail(Run):
    events: int = 0
    steps: list[Step] = []
    tags: dict[str, str] = {}
    metrics: list[MetricSummary] = []
    results: dict[str, int] = {}
    logs: list[LogLine] = []
    artifacts: list[Artifact] = []


class Stats(msgspec.Struct):
    """One model's or one machine's runs (`key` is the model or the hardware)."""

    runs: int
    by_status: dict[str, int]
    success_rate: float | None = None
    duration_avg_s: float | None = None
    duration_p50_s: float | None = None
    duration_p95_s: float | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    model: str | None = None
    hardware: str | None = None


class TrendDay(msgspec.Struct):
    day: date
    count: int
    mean: float
    min: float
    max: float


class PerformanceItem(msgspec.Struct):
    metric: str
    count: int
    mean: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    model: str | None = None
    hardware: str | None = None
    unit: str | None = None
    trend: list[TrendDay] = []


class SearchResults(msgspec.Struct):
    query: str
    results: dict[str, list[Run]]
    result_counts: dict[str, int]


class Totals(msgspec.Struct):
    runs: int
    by_status: dict[str, int]
    events: int = 0
    success_rate: float | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class Overview(msgspec.Struct):
    components: dict[str, Totals]
    total: Totals


class Facet(msgspec.Struct):
    value: Any
    runs: int
    by_status: dict[str, int] = {}
    success_rate: float | None = None
    last_seen: datetime | None = None


class Facets(msgspec.Struct):
    """`GET /api/{c}/db/facets` (docs/facets.md)."""

    items: list[Facet]
    total_values: int | None = None
    truncated: bool | None = None


class Page(msgspec.Struct):
    items: list[msgspec.Raw]
    total: int | None = None
    next: str | None = None


# -- the live stream (`client.follow`, docs/stream.md) -------------------------------


class StreamEvent(msgspec.Struct):
    """One event of the log; `event` holds all of it as the log holds it (wire fields
    plus `seq`, `received_at`, `id`), the other fields are the ones filters use."""

    seq: int
    type: str
    component: str
    id: str
    event: dict[str, Any]
    run_id: str | None = None
    batch_id: str | None = None


class CaughtUp(msgspec.Struct):
    """The catch-up read the log to `seq`; live events follow."""

    seq: int


class FoldedRun(msgspec.Struct):
    component: str
    run_id: str
    status: str | None = None  # None: the run was deleted


class Folded(msgspec.Struct):
    """The fold committed up to `seq`: a read with `min_seq=seq` sees `runs` changed."""

    seq: int
    runs: list[FoldedRun] = []


class Heartbeat(msgspec.Struct):
    """The stream is idle at position `seq`."""

    seq: int


StreamMessage = StreamEvent | CaughtUp | Folded | Heartbeat
