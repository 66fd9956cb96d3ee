"""The old job runner's calls against a real server (issue 17, docs/compat.md "Job
runner"): a job runner posts its jobs as the doc says, and `/api/jobs…` and
`/api/stats` answer with exactly the runner's keys, each value recomputed here from
the events posted."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.server import Reply, ThreadedServer, serve_in_thread

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JOB_KEYS = {"job_id", "tool_name", "status", "created_at", "started_at", "completed_at",
            "duration"}
DETAIL_KEYS = JOB_KEYS | {"parameters", "stdout", "stderr", "return_code", "output_files",
                          "total_size"}
LOG_KEYS = {"timestamp", "level", "message"}
PAGE_KEYS = {"items", "limit", "offset", "total"}
TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Job:
    """One job as the runner ran it; `events` gives what it posts."""

    job_id: str
    tool: str
    status: str  # final: pending, running, completed, failed or cancelled
    created: datetime
    params: dict[str, Any]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    files: list[tuple[str, int | None]] = field(default_factory=list)
    return_code: int | None = None
    run_seconds: float = 0.0

    @property
    def started(self) -> datetime | None:
        return None if self.status == "pending" else self.created + timedelta(seconds=2)

    @property
    def completed(self) -> datetime | None:
        if self.status not in TERMINAL:
            return None
        return (self.started or self.created) + timedelta(seconds=self.run_seconds)

    def logs(self) -> list[tuple[datetime, str, str]]:
        """The runner's own log lines (timestamp, level, message)."""
        lines = [(self.created, "info", f"queued {self.tool}")]
        if self.started is not None:
            lines.append((self.started, "debug", "started"))
        if self.completed is not None:
            level = "error" if self.status == "failed" else "info"
            lines.append((self.completed, level, f"finished: {self.status}"))
        return lines

    def events(self) -> list[dict[str, Any]]:
        def at(t: datetime) -> str:
            return t.isoformat().replace("+00:00", "Z")

        base = {"run_id": self.job_id}
        events = [{**base, "type": "run", "name": self.tool, "params": self.params,
                   "ts": at(self.created)}]
        if self.started is not None:
            events.append({**base, "type": "status", "status": "running", "ts": at(self.started)})
        out_at = (self.started or self.created) + timedelta(seconds=0.5)
        for i, line in enumerate(self.stdout):
            events.append({**base, "type": "log", "level": "info", "message": f"[stdout] {line}",
                           "ts": at(out_at + timedelta(milliseconds=i))})
        for i, line in enumerate(self.stderr):
            events.append({**base, "type": "log", "level": "warning",
                           "message": f"[stderr] {line}",
                           "ts": at(out_at + timedelta(milliseconds=i))})
        for name, size in self.files:
            artifact: dict[str, Any] = {**base, "type": "artifact", "name": name,
                                        "uri": f"file:///jobs/{self.job_id}/{name}"}
            if size is not None:
                artifact["size_bytes"] = size
            events.append(artifact)
        if self.return_code is not None:
            events.append({**base, "type": "tag", "key": "return_code",
                           "value": str(self.return_code)})
        if self.completed is not None:
            events.append({**base, "type": "status", "status": self.status,
                           "ts": at(self.completed)})
        # The runner's log lines last and newest first: oldest first is by their time.
        events += [{**base, "type": "log", "level": level, "message": message, "ts": at(ts)}
                   for ts, level, message in reversed(self.logs())]
        return events


def make_jobs() -> list[Job]:
    # ffmpeg 4, pandoc 3, convert 2, grep 2, then awk, sed, zip once each: the top 5
    # cuts among the ties at 1, by name.
    tools = ["ffmpeg", "pandoc", "sed", "ffmpeg", "convert", "grep", "pandoc", "zip",
             "ffmpeg", "awk", "convert", "grep", "pandoc", "ffmpeg"]
    statuses = ["completed", "failed", "completed", "running", "completed", "cancelled",
                "completed", "pending", "failed", "completed", "completed", "running",
                "completed", "completed"]
    jobs = []
    for i, (tool, status) in enumerate(zip(tools, statuses, strict=True)):
        job = Job(f"job-{i:02d}", tool, status, T0 + timedelta(minutes=7 * i),
                  {"input": f"in{i}.dat", "threads": i % 3 + 1, "opts": {"fast": i % 2 == 0}},
                  run_seconds=10.25 * (i + 1))
        if status != "pending":
            job.stdout = [f"{tool} line {k}" for k in range(i % 4)]
            job.stderr = [f"warning {k}" for k in range(i % 3)]
        if status in ("completed", "failed"):
            job.return_code = 0 if status == "completed" else 100 + i
            job.files = [(f"out{i}.bin", 1000 * i + 7), (f"out{i}.log", None),
                         (f"report{i}.json", 33)][: 1 + i % 3]
        jobs.append(job)
    return jobs


JOBS = make_jobs()
# Another component's runs, one with a job's id: the jobs routes never show them.
OTHER = [{"component": "test", "run_id": "job-00", "type": "run", "name": "ffmpeg"},
         {"component": "test", "run_id": "only-test", "type": "status", "status": "completed"}]


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def parse(value: str | None) -> str | None:
    """A returned time in one form (the server writes `Z`), to compare with iso()."""
    return None if value is None else datetime.fromisoformat(value).isoformat()


def expected_job(job: Job) -> dict[str, Any]:
    end = job.completed
    return {"job_id": job.job_id, "tool_name": job.tool, "status": job.status,
            "created_at": iso(job.created), "started_at": iso(job.started),
            "completed_at": iso(end),
            "duration": None if end is None else (end - (job.started or job.created)
                                                  ).total_seconds()}


def as_seen(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, **{k: parse(item[k]) for k in ("created_at", "started_at", "completed_at")}}


@dataclass
class Lake:
    server: ThreadedServer
    last_seq: int

    def get(self, path: str) -> Reply:
        sep = "&" if "?" in path else "?"
        return self.server.run(self.server.client.get(f"{path}{sep}min_seq={self.last_seq}"))

    def ok(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, (path, reply.body)
        return reply.json()


def post_ndjson(server: ThreadedServer, path: str, events: list[dict[str, Any]]) -> int:
    reply = server.run(server.client.post_events(events, path=path, ndjson=True))
    assert reply.status == 202, reply.body
    return int(reply.json()["last_seq"])


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    with serve_in_thread(tmp_path_factory.mktemp("jobs")) as server:
        # As the doc's example: each job's events, NDJSON, to the jobs component.
        for job in JOBS:
            post_ndjson(server, "/api/jobs/events", job.events())
        last = post_ndjson(server, "/api/events", OTHER)
        yield Lake(server, last)


def test_jobs_newest_first_with_the_runners_keys(lake: Lake) -> None:
    newest_first = sorted(JOBS, key=lambda j: j.created, reverse=True)
    page = lake.ok("/api/jobs")
    assert set(page) == PAGE_KEYS | {"next"}  # keyset paging (docs/facets.md)
    assert (page["limit"], page["offset"], page["total"]) == (50, 0, len(JOBS))
    assert all(set(item) == JOB_KEYS for item in page["items"])
    assert [as_seen(i) for i in page["items"]] == [expected_job(j) for j in newest_first]

    page = lake.ok("/api/jobs?limit=4&offset=3")
    assert (page["limit"], page["offset"], page["total"]) == (4, 3, len(JOBS))
    assert [i["job_id"] for i in page["items"]] == [j.job_id for j in newest_first[3:7]]


def test_each_job_in_detail(lake: Lake) -> None:
    for job in JOBS:
        detail = lake.ok(f"/api/jobs/{job.job_id}")
        assert set(detail) == DETAIL_KEYS, job.job_id
        assert as_seen({k: detail[k] for k in JOB_KEYS}) == expected_job(job)
        assert detail["parameters"] == job.params
        assert detail["stdout"] == ("\n".join(job.stdout) if job.stdout else None), job.job_id
        assert detail["stderr"] == ("\n".join(job.stderr) if job.stderr else None), job.job_id
        assert detail["return_code"] == job.return_code
        assert detail["output_files"] == [name for name, _ in job.files]
        assert detail["total_size"] == sum(size or 0 for _, size in job.files)
    # the cases the data must hold for those checks to mean something
    assert any(j.stdout and len(j.stdout) > 1 for j in JOBS)
    assert any(j.return_code not in (None, 0) for j in JOBS)
    assert any(len(j.files) > 2 and None in (s for _, s in j.files) for j in JOBS)


def test_job_logs_oldest_first_without_its_output(lake: Lake) -> None:
    for job in JOBS:
        page = lake.ok(f"/api/jobs/{job.job_id}/logs")
        assert set(page) == PAGE_KEYS | {"next"}  # keyset paging (docs/facets.md)
        want = [{"timestamp": iso(ts), "level": level, "message": message}
                for ts, level, message in sorted(job.logs())]
        assert page["total"] == len(want)
        assert all(set(line) == LOG_KEYS for line in page["items"])
        assert [{**line, "timestamp": parse(line["timestamp"])} for line in page["items"]] == want
    page = lake.ok(f"/api/jobs/{JOBS[0].job_id}/logs?limit=1&offset=1")
    assert [line["message"] for line in page["items"]] == [JOBS[0].logs()[1][2]]


def test_stats_as_the_runner_reported_them(lake: Lake) -> None:
    status = collections.Counter(j.status for j in JOBS)
    tools = collections.Counter(j.tool for j in JOBS)
    top = sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    body = lake.ok("/api/stats")
    assert set(body) == {"database"}
    db = body["database"]
    assert set(db) == {"total_jobs", "completed_jobs", "failed_jobs", "success_rate",
                       "top_tools"}
    assert (db["total_jobs"], db["completed_jobs"], db["failed_jobs"]) == (
        len(JOBS), status["completed"], status["failed"])
    finished = status["completed"] + status["failed"]
    assert db["success_rate"] == pytest.approx(100 * status["completed"] / finished)
    assert db["top_tools"] == [{"tool_name": t, "count": n} for t, n in top]
    assert [t["tool_name"] for t in db["top_tools"]][-1] == "awk"  # the cut, by name


@pytest.mark.parametrize("path", ["/api/jobs/nope", "/api/jobs/nope/logs",
                                  "/api/jobs/only-test", "/api/jobs/only-test/logs"])
def test_unknown_job_is_404(lake: Lake, path: str) -> None:
    reply = lake.get(path)
    assert reply.status == 404, reply.body
    error = reply.json()["error"]
    assert error["code"] == "not_found"
    assert f"job {path.split('/')[3]!r}" in error["message"]  # not just an unknown route


@pytest.mark.parametrize(("path", "parameter"), [
    ("/api/jobs?limit=0", "limit"), ("/api/jobs?offset=-1", "offset"),
    ("/api/jobs?status=failed", "status"), ("/api/jobs/job-00/logs?limit=x", "limit"),
    ("/api/stats?days=3", "days")])
def test_bad_parameters_are_400(lake: Lake, path: str, parameter: str) -> None:
    reply = lake.get(path)
    assert reply.status == 400, reply.body
    assert parameter in reply.json()["error"]["message"]


def test_jobs_component_is_a_setting(tmp_path: Path) -> None:
    job = JOBS[0]
    with serve_in_thread(tmp_path, jobs_component="tools") as server:
        post_ndjson(server, "/api/jobs/events", JOBS[1].events())
        last = post_ndjson(server, "/api/tools/events", job.events())
        lake = Lake(server, last)
        assert [as_seen(i) for i in lake.ok("/api/jobs")["items"]] == [expected_job(job)]
        assert lake.ok(f"/api/jobs/{job.job_id}")["job_id"] == job.job_id
        assert lake.get(f"/api/jobs/{JOBS[1].job_id}").status == 404
        assert lake.ok("/api/stats")["database"]["total_jobs"] == 1


def test_no_jobs_yet(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server:
        lake = Lake(server, 0)
        assert lake.ok("/api/jobs") == {"items": [], "limit": 50, "offset": 0, "total": 0,
                                      "next": None}
        assert lake.ok("/api/stats") == {"database": {
            "total_jobs": 0, "completed_jobs": 0, "failed_jobs": 0, "success_rate": 0.0,
            "top_tools": []}}


def doc_example() -> list[dict[str, Any]]:
    """The lifecycle example of docs/compat.md's "Job runner" section."""
    text = (Path(__file__).parents[1] / "docs" / "compat.md").read_text()
    section = text[text.index("## Job runner"):]
    block = section.split("```\n", 2)[1]
    return [msgspec.json.decode(line) for line in block.splitlines()]


def test_the_docs_example_answers_as_the_docs_say(tmp_path: Path) -> None:
    events = doc_example()
    with serve_in_thread(tmp_path) as server:
        lake = Lake(server, post_ndjson(server, "/api/jobs/events", events))
        detail = lake.ok("/api/jobs/job-42")
        assert {k: detail[k] for k in ("tool_name", "parameters", "stdout", "stderr",
                                       "return_code", "output_files", "total_size",
                                       "duration", "status")} == {
            "tool_name": "ffmpeg", "parameters": {"input": "a.mov", "crf": 23},
            "stdout": "frame=  100 fps=25", "stderr": "deprecated pixel format",
            "return_code": 0, "output_files": ["a.mp4"], "total_size": 1048576,
            "duration": 60.0, "status": "completed"}
        assert [line["message"] for line in lake.ok("/api/jobs/job-42/logs")["items"]] == [
            "queued"]
