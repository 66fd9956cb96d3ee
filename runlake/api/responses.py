"""Response bodies as msgspec Structs (also the OpenAPI schemas), and JSON responses."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

import msgspec
from aiohttp import web

from runlake.events.schema import LogLevel, Outcome, RunStatus, StepStatus

_encoder = msgspec.json.Encoder()


class Accepted(msgspec.Struct):
    """The events of one request are durable in the log, numbered first_seq..last_seq."""

    accepted: int
    first_seq: int
    last_seq: int


class ErrorInfo(msgspec.Struct):
    code: str
    message: str
    details: list[dict[str, Any]]


class ErrorResponse(msgspec.Struct):
    """Every error, whatever its status (DESIGN §4)."""

    error: ErrorInfo


class Health(msgspec.Struct):
    status: Literal["ok"] = "ok"


ReadyStatus = Literal["ready", "lagging", "not_running", "failing"]


class Readiness(msgspec.Struct, omit_defaults=True):
    """How far the fold is behind the log. `ready` when it runs and is at most
    `max_lag_seconds` behind; `lagging` when further; `not_running` when the fold
    thread has stopped (lag then only grows); `failing` when its last attempt
    failed, with the error in `fold_error` (it retries every second)."""

    status: ReadyStatus
    last_seq: int
    folded_seq: int
    lag_events: int
    lag_seconds: float
    max_lag_seconds: float
    fold_error: str | None = None


# -- reads: the shapes the read routes answer (queries.py builds them as dicts; the
# OpenAPI document and the schema test check they agree) ------------------------

T = TypeVar("T")
Time = datetime
ByStatus = dict[RunStatus, int]


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    total: int


class Run(msgspec.Struct):
    component: str
    run_id: str
    model: str | None
    hardware: str | None
    batch_id: str | None
    name: str | None
    params: dict[str, Any] | None
    status: RunStatus
    error: str | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    duration_s: float | None
    updated_at: Time


class Step(msgspec.Struct):
    step: str
    status: StepStatus
    progress: float | None
    message: str | None
    ts: Time


class MetricSummary(msgspec.Struct):
    name: str
    unit: str | None
    count: int
    mean: float
    min: float
    max: float
    last: float


class ResultCounts(msgspec.Struct):
    total: int
    passed: int
    failed: int
    skipped: int
    error: int
    xfailed: int
    xpassed: int
    # Issue 20: tests run more than once in the run, and those whose attempts both
    # failed and passed. Every count above takes a test once, by its last attempt.
    retried: int = 0
    flaky: int = 0


class LogLine(msgspec.Struct):
    level: LogLevel
    message: str
    ts: Time
    seq: int


class Artifact(msgspec.Struct):
    name: str
    uri: str | None
    size_bytes: int | None
    media_type: str | None
    ts: Time


class RunDetail(Run):
    """A run with its steps, tags, metric and result summaries, its most recent
    logs (oldest first) and artifacts; `events` counts the events folded into it."""

    events: int
    steps: list[Step]
    tags: dict[str, str]
    metrics: list[MetricSummary]
    results: ResultCounts
    logs: list[LogLine]
    artifacts: list[Artifact]


class MetricPoint(msgspec.Struct):
    name: str
    value: float
    unit: str | None
    step: int | None
    ts: Time
    seq: int


class Result(msgspec.Struct):
    test: str
    outcome: Outcome
    duration_s: float | None
    message: str | None
    ts: Time
    seq: int
    attempt: int = 1
    file: str | None = None
    classname: str | None = None
    worker: str | None = None


class Batch(msgspec.Struct):
    component: str
    batch_id: str
    description: str | None
    expected_count: int | None
    runs: int
    by_status: ByStatus
    finished: int
    progress: float | None
    declared_at: Time | None
    first_seen: Time | None
    last_seen: Time | None


class BatchDetail(Batch):
    runs_list: list[Run]


class _Stats(msgspec.Struct):
    runs: int
    by_status: ByStatus
    success_rate: float | None
    duration_avg_s: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    first_seen: Time | None
    last_seen: Time | None


class ModelStats(_Stats):
    model: str | None


class HardwareStats(_Stats):
    hardware: str | None


class TrendDay(msgspec.Struct):
    day: date
    count: int
    mean: float
    min: float
    max: float


class PerformanceItem(msgspec.Struct):
    """Percentiles lie within [min, max]; exact (`approximate` false) for a window of
    at most 64 points or one whose min = max, else within `relative_error` (0.01)."""

    model: str | None
    hardware: str | None
    metric: str
    unit: str | None
    count: int
    mean: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    approximate: bool
    relative_error: float
    trend: list[TrendDay]


class Performance(Page[PerformanceItem]):
    component: str
    days: int
    since: date
    until: date
    next: str | None = None  # the token of the page after it (null on the last)


class SearchResults(msgspec.Struct):
    query: str
    results: dict[str, list[Run]]
    result_counts: dict[str, int]


class Totals(msgspec.Struct):
    runs: int
    by_status: ByStatus
    success_rate: float | None
    events: int
    first_seen: Time | None
    last_seen: Time | None


class Overview(msgspec.Struct):
    """Totals per component and overall. Also one `<component>_stats` key (a Totals)
    for every component the key may see, as the Unified API gateway's clients read
    them (docs/compat.md); msgspec cannot name keys made from data, so they are
    described here and the schema allows them."""

    components: dict[str, Totals]
    total: Totals


class ModelInComponent(_Stats):
    recent_runs: list[Run]


class ModelTotals(msgspec.Struct):
    runs: int
    by_status: ByStatus
    success_rate: float | None


class ModelOverview(msgspec.Struct):
    model: str
    components: dict[str, ModelInComponent]
    total: ModelTotals
    # `total_<component>_runs` for every component the key may see (0 where the model
    # has none) and `total_generator_tasks`, as the gateway's clients read them.
    overview: dict[str, int]


RunPage = Page[Run]
MetricPointPage = Page[MetricPoint]
LogLinePage = Page[LogLine]
ResultPage = Page[Result]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers,
        content_type="application/json",
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorResponse(ErrorInfo(code, message, details or []))
    return json_response(body, status, headers)


# -- the job runner (docs/compat.md "Job runner"): the old runner's names --------


class Job(msgspec.Struct):
    """A job is a run of the jobs component: tool_name is its `name`, completed_at its
    `finished_at`, duration its `duration_s` (seconds)."""

    job_id: str
    tool_name: str | None
    status: RunStatus
    created_at: Time
    started_at: Time | None
    completed_at: Time | None
    duration: float | None


class JobDetail(Job):
    """stdout/stderr: its output lines joined by newlines (the last 1 MiB; null: none
    posted); return_code: the `return_code` tag as an integer; output_files: its
    artifacts' names, total_size the sum of their size_bytes."""

    parameters: dict[str, Any] | None
    stdout: str | None
    stderr: str | None
    return_code: int | None
    output_files: list[str]
    total_size: int


class JobLogLine(msgspec.Struct):
    timestamp: Time
    level: LogLevel
    message: str


class ToolCount(msgspec.Struct):
    tool_name: str
    count: int


class JobTotals(msgspec.Struct):
    """success_rate: a percent (0-100) of the finished jobs, 0 when none has finished."""

    total_jobs: int
    completed_jobs: int
    failed_jobs: int
    success_rate: float
    top_tools: list[ToolCount]


class JobStats(msgspec.Struct):
    database: JobTotals


JobPage = Page[Job]


# -- runs list paging, facets, generation counts (docs/facets.md, docs/compat.md) --


class KeysetRunPage(Page[Run]):
    """A page of runs; `next` is the token of the page after it (null on the last)."""

    next: str | None = None


class FacetItem(msgspec.Struct):
    value: str
    runs: int
    by_status: ByStatus
    success_rate: float | None
    last_seen: Time | None


class Facets(msgspec.Struct):
    """A field's top values, most runs first (ties by value); `truncated` when the
    facet's time budget ran out first: counts then cover the runs counted so far."""

    component: str
    field: str
    items: list[FacetItem]
    total_values: int
    truncated: bool
    limit: int
    offset: int


class GenerationStats(msgspec.Struct):
    component: str
    total_generations: int
    pending_generations: int
    running_generations: int
    completed_generations: int
    failed_generations: int
    cancelled_generations: int
    success_rate: float | None

# -- a run's metric downsampled for charts (docs/dashboard.md) --------------------


class MetricBucket(msgspec.Struct):
    """Consecutive points (by seq): their min and max, the last one's value, step (of
    the last point that has one) and the latest ts."""

    step: int | None
    ts: Time
    count: int
    min: float
    max: float
    last: float
    first_seq: int
    last_seq: int


class MetricBuckets(msgspec.Struct):
    """`points` counts the metric's points, `unit` is the last one's."""

    name: str
    unit: str | None
    points: int
    buckets: list[MetricBucket]


class ModelHardwareCell(msgspec.Struct):
    """Runs of one (model, hardware); success_rate = completed / (completed + failed)."""

    model: str | None
    hardware: str | None
    runs: int
    by_status: ByStatus
    success_rate: float | None




# -- test history (issue 20, docs/tests.md) ------------------------------------


class TestOutcomes(msgspec.Struct):
    """Runs by the test's outcome in each (its last attempt there)."""

    passed: int
    failed: int
    error: int
    skipped: int
    xfailed: int
    xpassed: int


class TestFailure(msgspec.Struct):
    run_id: str
    message: str | None
    ts: Time


class FlakyWindow(msgspec.Struct):
    """Flakiness (b) over the test's last `size` pass/fail results: `transitions`
    between pass and fail among the `results` there, `score` = transitions /
    (results - 1), null with fewer than 2."""

    size: int
    results: int
    transitions: int
    score: float | None


class TestStats(msgspec.Struct):
    component: str
    test: str
    runs: int
    attempts: int
    outcomes: TestOutcomes
    pass_rate: float | None
    failure_rate: float | None
    last_outcome: Outcome
    last_run_id: str
    last_ts: Time
    last_failure: TestFailure | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    first_seen: Time
    last_seen: Time
    retried_runs: int
    flaky_runs: int
    flaky_commits: int
    flaky: bool
    window: FlakyWindow


class TestResult(msgspec.Struct):
    """One attempt in a test's history strip, with its run's commit."""

    run_id: str
    attempt: int
    outcome: Outcome
    duration_s: float | None
    message: str | None
    worker: str | None
    commit: str | None
    ts: Time
    seq: int


class TestDetail(TestStats):
    """A test's figures and its latest results, newest first."""

    history: list[TestResult]


TestPage = Page[TestStats]


# -- keyset pages of the tests and jobs lists (docs/facets.md "Paging") ---------


class KeysetTestPage(Page[TestStats]):
    """A page of tests; `next` is the token of the page after it (null on the last)."""

    next: str | None = None


class KeysetJobPage(Page[Job]):
    """A page of jobs; `next` is the token of the page after it (null on the last)."""

    next: str | None = None


class KeysetMetricPointPage(Page[MetricPoint]):
    """A page of a run's metric points; `next` pages on by seq (null on the last)."""

    next: str | None = None


class KeysetLogLinePage(Page[LogLine]):
    """A page of a run's log lines; `next` pages on by seq (null on the last)."""

    next: str | None = None


class KeysetResultPage(Page[Result]):
    """A page of a run's test results; `next` pages on by seq (null on the last)."""

    next: str | None = None


class KeysetEventPage(Page[dict[str, Any]]):
    """A page of a run's raw events; `next` pages on by seq (null on the last)."""

    next: str | None = None


class KeysetBatchPage(Page[Batch]):
    """A page of batches; `next` is the token of the page after it (null on the last)."""

    next: str | None = None


class KeysetModelStatsPage(Page[ModelStats]):
    """A page of run statistics per model; `next` pages on (null on the last)."""

    next: str | None = None


class KeysetHardwareStatsPage(Page[HardwareStats]):
    """A page of run statistics per hardware; `next` pages on (null on the last)."""

    next: str | None = None


class KeysetJobLogPage(Page[JobLogLine]):
    """A page of a job's log lines; `next` pages on by (time, seq) (null on the last)."""

    next: str | None = None


class KeysetModelHardwarePage(Page[ModelHardwareCell]):
    """A page of (model, hardware) cells; `next` pages on by the key (null on the last)."""

    next: str | None = None
