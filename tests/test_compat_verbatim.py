"""Every documented call of the five old systems, verbatim (issue 17, docs/compat.md):
same method, path, parameters and body, against a real server with data posted here,
each key its client reads checked against what this test computes from the events it
sent. The deeper cases live beside it (test_compat_gateway.py, test_compat_jobs.py,
test_run_filters.py); this file is the one list a switching team can read."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helpers.server import Reply, ThreadedServer, serve_in_thread

from runlake.api.keys import add_key

NOW = datetime.now(UTC).replace(microsecond=0)
LLAMA = "meta-llama/Llama-3.1-8B"
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class R:
    """A run as posted: component, id, model, hardware, final status, batch, how many
    minutes ago it was created, its latency metric, and params."""

    c: str
    run_id: str
    model: str | None
    hardware: str | None
    status: str
    batch: str | None = None
    ago_min: int = 60
    latency: float = 1.0
    params: dict[str, Any] | None = None
    name: str | None = None

    @property
    def created(self) -> datetime:
        return NOW - timedelta(minutes=self.ago_min)


RUNS = (
    R("test", "t1", "bert-base-uncased", "h100", "completed", "tb", 50, 10.0),
    R("test", "t2", "gpt2", "a100", "failed", "tb", 40, 30.0),
    R("test", "t3", LLAMA, "h100", "completed", None, 30, 20.0),
    R("test", "t4", "gpt2", "h100", "running", None, 20, 50.0),
    R("generator", "g1", LLAMA, "h100", "completed", "gb", 59, 2.0),
    R("generator", "g2", LLAMA, "h100", "failed", "gb", 58, 4.0),
    R("generator", "g3", "gpt2", "a100", "pending", None, 57, 6.0),
    R("benchmark", "b1", "bert-base-cased", "h100", "completed", None, 45),
    R("benchmark", "b2", "gpt2", "h100", "cancelled", None, 44),
    # The music service: generations with a prompt, some still pending.
    *(R("music", f"m{i}", "musicgen", None, status, None, 100 - i, params={"prompt": prompt})
      for i, (status, prompt) in enumerate([
          ("pending", "calm piano"), ("completed", "calm piano"), ("pending", "fast drums"),
          ("failed", "calm piano"), ("completed", "fast drums"), ("pending", "rain"),
          ("completed", "calm piano")])),
)
COMPONENTS = sorted({r.c for r in RUNS} | {"jobs"})

# The job runner's jobs, posted as docs/compat.md says: (id, tool, status, stdout,
# stderr, return code, output files as (name, size), minutes ago).
JOBS = (
    ("job-1", "ffmpeg", "completed", ["frame=1", "frame=2"], ["warn"], "0",
     [("a.mp4", 100), ("a.log", 5)], 30),
    ("job-2", "ffmpeg", "failed", [], ["boom"], "1", [], 20),
    ("job-3", "sox", "running", ["50%"], [], None, [], 10),
)


def run_events(r: R) -> list[dict[str, Any]]:
    base = {"component": r.c, "run_id": r.run_id}
    ts = r.created.isoformat()
    run: dict[str, Any] = {**base, "type": "run", "ts": ts}
    for key, value in (("model", r.model), ("hardware", r.hardware), ("batch_id", r.batch),
                       ("params", r.params), ("name", r.name)):
        if value is not None:
            run[key] = value
    out = [run,
           {**base, "type": "step", "step": "load", "status": "completed", "ts": ts},
           {**base, "type": "metric", "name": "latency_ms", "value": r.latency, "ts": ts},
           {**base, "type": "log", "level": "info", "message": "started", "ts": ts},
           {**base, "type": "result", "test": "t::a", "outcome": "passed", "ts": ts},
           {**base, "type": "artifact", "name": "out.json", "size_bytes": 3, "ts": ts}]
    if r.status != "pending":
        out.append({**base, "type": "status", "status": r.status,
                    "ts": (r.created + timedelta(seconds=30)).isoformat()})
    return out


def job_events(job: tuple[Any, ...]) -> list[dict[str, Any]]:
    job_id, tool, status, out, err, code, files, ago = job
    t0 = NOW - timedelta(minutes=ago)
    base = {"component": "jobs", "run_id": job_id}
    at = [(t0 + timedelta(seconds=s)).isoformat() for s in range(0, 200, 2)]
    ev: list[dict[str, Any]] = [
        {**base, "type": "run", "name": tool, "params": {"n": ago}, "ts": at[0]},
        {**base, "type": "log", "level": "info", "message": "queued", "ts": at[0]},
        {**base, "type": "status", "status": "running", "ts": at[1]}]
    ev += [{**base, "type": "log", "level": "info", "message": f"[stdout] {line}", "ts": at[2 + i]}
           for i, line in enumerate(out)]
    ev += [{**base, "type": "log", "level": "warning", "message": f"[stderr] {line}",
            "ts": at[10 + i]} for i, line in enumerate(err)]
    ev += [{**base, "type": "artifact", "name": n, "size_bytes": s, "ts": at[20]} for n, s in files]
    if code is not None:
        ev.append({**base, "type": "tag", "key": "return_code", "value": code, "ts": at[20]})
    if status in TERMINAL:
        ev.append({**base, "type": "status", "status": status, "ts": at[30]})
    return ev


EVENTS = [e for r in RUNS for e in run_events(r)] + [e for j in JOBS for e in job_events(j)]


@dataclass
class Lake:
    server: ThreadedServer
    key: str

    def send(self, method: str, path: str, body: Any = None) -> Reply:
        return self.server.run(self.server.client.request(
            method, path, json=body, headers={"X-API-Key": self.key},
            content_type="application/json" if body is not None else None))

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        reply = self.send(method, path, body)
        assert reply.status == status, (method, path, reply.body[:400])
        return reply.json()


def _serve(tmp: Path) -> Iterator[Lake]:
    key = add_key(tmp / "data" / "keys.json", "admin", name="admin")[1]
    with serve_in_thread(tmp) as server:
        lake = Lake(server, key)
        last = lake.call("POST", "/api/events", EVENTS, status=202)["last_seq"]
        lake.call("GET", f"/api/db/overview?min_seq={last}")
        yield lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    yield from _serve(tmp_path_factory.mktemp("verbatim"))


def of(c: str, **match: Any) -> list[R]:
    return [r for r in RUNS if r.c == c and all(getattr(r, k) == v for k, v in match.items())]


def by_status(runs: list[R]) -> dict[str, int]:
    n = Counter(r.status for r in runs)
    return {s: n[s] for s in STATUSES}


def rate(runs: list[R]) -> float | None:
    n = Counter(r.status for r in runs)
    return n["completed"] / (n["completed"] + n["failed"]) if n["completed"] + n["failed"] else None


def group(runs: list[R], key: str) -> dict[Any, list[R]]:
    out: dict[Any, list[R]] = {}
    for r in runs:
        out.setdefault(getattr(r, key), []).append(r)
    return out


# -- the calls: (method, path as the old client sends it, body, what the client reads) --

Check = Callable[[Any], None]


def _ids(runs: list[R]) -> Check:
    def check(body: Any) -> None:
        assert sorted(i["run_id"] for i in body["items"]) == sorted(r.run_id for r in runs)
        assert body["total"] == len(runs)
    return check


def _stats(c: str, key: str) -> Check:
    def check(body: Any) -> None:
        got = {i[key]: (i["runs"], i["by_status"], i["success_rate"]) for i in body["items"]}
        assert got == {v: (len(rs), by_status(rs), rate(rs))
                       for v, rs in group(of(c), key).items()}
    return check


def _task(r: R) -> Check:
    def check(body: Any) -> None:
        assert (body["run_id"], body["model"], body["status"]) == (r.run_id, r.model, r.status)
        assert [s["step"] for s in body["steps"]] == ["load"]
        assert [(m["name"], m["count"], m["mean"]) for m in body["metrics"]] == \
            [("latency_ms", 1, r.latency)]
        assert body["results"]["total"] == body["results"]["passed"] == 1
        assert [line["message"] for line in body["logs"]] == ["started"]
        assert [a["name"] for a in body["artifacts"]] == ["out.json"]
    return check


def _performance(c: str) -> Check:
    def check(body: Any) -> None:
        got = {(i["model"], i["hardware"], i["metric"]): (i["count"], i["mean"])
               for i in body["items"]}
        want: dict[Any, list[float]] = {}
        for r in of(c):
            want.setdefault((r.model, r.hardware, "latency_ms"), []).append(r.latency)
        assert got == {k: (len(v), sum(v) / len(v)) for k, v in want.items()}
    return check


def _search(text: str, components: list[str]) -> Check:
    """Runs whose id, model, hardware or batch holds `text` (the data puts it nowhere else)."""
    def check(body: Any) -> None:
        hits = {c: [r for r in of(c) if any(text in (v or "") for v in
                                            (r.run_id, r.model, r.hardware, r.batch))]
                for c in components}
        assert body["result_counts"] == {**{c: len(h) for c, h in hits.items()},
                                         "total": sum(map(len, hits.values()))}
        assert {c: sorted(i["run_id"] for i in body["results"][c]) for c in components} == \
            {c: sorted(r.run_id for r in h) for c, h in hits.items()}
    return check


def _overview(body: Any) -> None:
    assert set(body["components"]) == set(COMPONENTS)
    runs = {c: len(of(c)) for c in COMPONENTS} | {"jobs": len(JOBS)}
    assert body["total"]["runs"] == sum(runs.values())
    for c in COMPONENTS:
        assert body[f"{c}_stats"]["runs"] == runs[c]
        if c != "jobs":
            assert body[f"{c}_stats"]["by_status"] == by_status(of(c))


def _model(body: Any) -> None:
    assert body["model"] == LLAMA
    want = {c: len(of(c, model=LLAMA)) for c in COMPONENTS}
    assert body["overview"] == {**{f"total_{c}_runs": n for c, n in want.items()},
                                "total_generator_tasks": want["generator"]}


def _jobs(body: Any) -> None:
    assert [i["job_id"] for i in body["items"]] == [j[0] for j in sorted(JOBS, key=lambda j: j[7])]
    assert (body["limit"], body["offset"], body["total"]) == (10, 0, len(JOBS))
    for item, job in zip(body["items"], sorted(JOBS, key=lambda j: j[7]), strict=True):
        assert set(item) >= {"job_id", "tool_name", "status", "created_at", "started_at",
                             "completed_at", "duration"}
        assert (item["tool_name"], item["status"]) == (job[1], job[2])
        assert item["duration"] == (58.0 if job[2] in TERMINAL else None)


def _job(body: Any) -> None:
    job_id, tool, status, out, err, code, files, _ = JOBS[0]
    assert (body["job_id"], body["tool_name"], body["status"]) == (job_id, tool, status)
    assert body["parameters"] == {"n": JOBS[0][7]}
    assert (body["stdout"], body["stderr"]) == ("\n".join(out), "\n".join(err))
    assert body["return_code"] == int(code)
    assert body["output_files"] == [n for n, _ in files]
    assert body["total_size"] == sum(s for _, s in files)


def _job_logs(body: Any) -> None:
    assert [(i["level"], i["message"]) for i in body["items"]] == [("info", "queued")]
    assert set(body["items"][0]) >= {"timestamp", "level", "message"}


def _job_stats(body: Any) -> None:
    n = Counter(j[2] for j in JOBS)
    tools = Counter(j[1] for j in JOBS)
    assert body == {"database": {
        "total_jobs": len(JOBS), "completed_jobs": n["completed"], "failed_jobs": n["failed"],
        "success_rate": 100 * n["completed"] / (n["completed"] + n["failed"]),
        "top_tools": [{"tool_name": t, "count": k}
                      for t, k in sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))]}}


def _pending_oldest_first(body: Any) -> None:
    pending = sorted(of("music", status="pending"), key=lambda r: r.created)
    assert [i["run_id"] for i in body["items"]] == [r.run_id for r in pending]


def _generation_counts(body: Any) -> None:
    runs = of("music")
    counts = by_status(runs)
    assert body["total_generations"] == len(runs)
    assert {s: body[f"{s}_generations"] for s in STATUSES} == counts
    assert body["success_rate"] == rate(runs)


def _top_prompts(body: Any) -> None:
    uses = Counter(r.params["prompt"] for r in of("music") if r.params)
    assert [(i["value"], i["runs"]) for i in body["items"]] == \
        sorted(uses.items(), key=lambda kv: (-kv[1], kv[0]))
    assert body["total_values"] == len(uses) and body["truncated"] is False


ALL = ["benchmark", "generator", "jobs", "music", "test"]
VERBATIM: list[tuple[str, str, Any, Check]] = [
    # Component APIs
    ("GET", "/api/generator/db/tasks?limit=10", None, _ids(of("generator"))),
    ("GET", "/api/generator/db/models/stats", None, _stats("generator", "model")),
    ("GET", "/api/generator/db/task/g1", None, _task(of("generator")[0])),
    ("GET", "/api/test/db/runs?limit=10", None, _ids(of("test"))),
    ("GET", "/api/test/db/performance?days=30", None, _performance("test")),
    ("GET", "/api/test/db/hardware/stats", None, _stats("test", "hardware")),
    ("POST", "/api/test/db/search?query=gpt2&limit=10", None, _search("gpt2", ["test"])),
    ("POST", "/api/test/db/search", {"query": "gpt2", "limit": 10}, _search("gpt2", ["test"])),
    # The Unified API gateway
    ("GET", "/api/db/test/runs", None, _ids(of("test"))),
    ("GET", "/api/db/generator/tasks", None, _ids(of("generator"))),
    ("GET", "/api/db/benchmark/models/stats", None, _stats("benchmark", "model")),
    ("GET", "/api/db/overview", None, _overview),
    ("GET", f"/api/db/model/{LLAMA}", None, _model),
    ("GET", "/api/db/model/" + LLAMA.replace("/", "%2F"), None, _model),
    ("POST", "/api/db/search?query=bert-base&limit=10", None, _search("bert-base", ALL)),
    # The job runner
    ("GET", "/api/jobs?limit=10&offset=0", None, _jobs),
    ("GET", "/api/jobs/job-1", None, _job),
    ("GET", "/api/jobs/job-1/logs", None, _job_logs),
    ("GET", "/api/stats", None, _job_stats),
    # The music service's three questions
    ("GET", "/api/music/db/runs?status=pending&sort=created_at", None, _pending_oldest_first),
    ("GET", "/api/music/db/generations/stats", None, _generation_counts),
    ("GET", "/api/music/db/facets?field=param:prompt&limit=10", None, _top_prompts),
]

# -- the exports: the old clients post a file name and load the file they save --------


def _documents(c: str, decode: Callable[[bytes], list[dict[str, Any]]]) -> Callable[[bytes], None]:
    """Each run of `c` once, with the children run_events posted for it."""
    def check(raw: bytes) -> None:
        docs = {d["run_id"]: d for d in decode(raw)}
        assert sorted(docs) == sorted(r.run_id for r in of(c))
        for r in of(c):
            d = docs[r.run_id]
            assert (d["model"], d["status"], d["batch_id"]) == (r.model, r.status, r.batch)
            assert [s["step"] for s in d["steps"]] == ["load"]
            assert [(m["name"], m["count"], m["last"]) for m in d["metrics"]] == \
                [("latency_ms", 1, r.latency)]
            assert (d["results"]["total"], d["results"]["passed"]) == (1, 1)
            assert [a["name"] for a in d["artifacts"]] == ["out.json"]
    return check


def _json(raw: bytes) -> list[dict[str, Any]]:
    return json.loads(raw)


def _ndjson(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line]


def _parquet(raw: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(raw)).to_pylist()


EXPORT_CALLS: list[tuple[str, str, Any, Callable[[bytes], None]]] = [
    ("POST", "/api/generator/db/export", {"filename": "generator_export.json"},
     _documents("generator", _json)),
    ("POST", "/api/test/db/export", {"filename": "test_export.json"}, _documents("test", _json)),
    ("POST", "/api/db/benchmark/export", {"filename": "benchmark_export.json"},
     _documents("benchmark", _json)),
    ("POST", "/api/generator/db/export", {"filename": "generator_export.ndjson"},
     _documents("generator", _ndjson)),
    ("POST", "/api/generator/db/export", {"filename": "generator_export.parquet"},
     _documents("generator", _parquet)),
]


@pytest.mark.parametrize(("method", "path", "body", "check"), VERBATIM,
                         ids=[f"{m} {p}" for m, p, _, _ in VERBATIM])
def test_documented_call(lake: Lake, method: str, path: str, body: Any, check: Check) -> None:
    check(lake.call(method, path, body))


@pytest.mark.parametrize(("method", "path", "body", "check"), EXPORT_CALLS,
                         ids=[f"{m} {p}" for m, p, _, _ in EXPORT_CALLS])
def test_export_call(lake: Lake, method: str, path: str, body: Any,
                     check: Callable[[bytes], None]) -> None:
    reply = lake.send(method, path, body)
    assert reply.status == 200, reply.body[:400]
    check(reply.body)


def test_the_data_makes_every_check_bite() -> None:
    """Each component has runs of several statuses, and the queries hit some runs and
    miss others, so a call answering the wrong rows would fail its check."""
    for c in ("test", "generator", "benchmark", "music"):
        assert len({r.status for r in of(c)}) > 1
    assert 0 < sum("gpt2" in (r.model or "") for r in of("test")) < len(of("test"))
    assert of("benchmark", model="bert-base-cased") and not of("generator", model="bert-base-cased")


def test_deletes(tmp_path: Path) -> None:
    """`DELETE /api/generator/db/task/{task_id}` and `DELETE /api/{c}/db/batch/{id}`:
    202, and the task, or the batch and its runs, are gone."""
    for lake in _serve(tmp_path):
        for path in ("/api/generator/db/task/g3", "/api/test/db/batch/tb"):
            last = lake.call("DELETE", path, status=202)["last_seq"]
            lake.call("GET", f"/api/db/overview?min_seq={last}")
        left = {c: sorted(i["run_id"] for i in lake.call("GET", f"/api/{c}/db/runs")["items"])
                for c in ("generator", "test")}
        assert left == {"generator": [r.run_id for r in of("generator") if r.run_id != "g3"],
                        "test": [r.run_id for r in of("test") if r.batch != "tb"]}
        assert lake.send("GET", "/api/generator/db/task/g3").status == 404


def test_unknown_component_is_a_404_naming_the_known(lake: Lake) -> None:
    reply = lake.send("GET", "/api/generatr/db/tasks?limit=10")
    assert reply.status == 404
    assert reply.json()["error"]["details"][0]["allowed"] == COMPONENTS
