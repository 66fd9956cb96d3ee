"""Old clients' calls, verbatim (issue 17, docs/compat.md): `task` aliases of every
`run` route, the Unified API gateway (`/api/db/{c}/…`), its overview / model / search
keys, and 404 for a component that has never had an event.

A real server and keys file; every expected value is counted here from the events
the test posts, not read back from runlake."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from runlake.api.keys import add_key
from tests.helpers.server import Reply, ThreadedServer, serve_in_thread

TS = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
LLAMA = "meta-llama/Llama-3.1-8B"
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
# (component, run_id, model, status, batch_id)
RUNS = (
    ("test", "t1", "bert-base-uncased", "completed", "tb"),
    ("test", "t2", "gpt2", "failed", "tb"),
    ("test", "t3", LLAMA, "completed", None),
    ("generator", "g1", LLAMA, "completed", None),
    ("generator", "g2", LLAMA, "running", None),
    ("generator", "g3", "bert-base-cased", "failed", None),
    ("benchmark", "b1", "gpt2", "completed", "bb"),
    ("benchmark", "b2", "gpt2", "completed", "bb"),
)
COMPONENTS = sorted({r[0] for r in RUNS})


def events_of(runs: tuple[tuple[str, str, str, str, str | None], ...]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for c, run_id, model, status, batch in runs:
        base = {"component": c, "run_id": run_id, "ts": TS}
        run = {**base, "type": "run", "model": model, "hardware": "h100"}
        if batch:
            run["batch_id"] = batch
        events += [run, {**base, "type": "status", "status": status},
                   {**base, "type": "metric", "name": "latency_ms", "value": 2.0},
                   {**base, "type": "log", "level": "info", "message": "step one"},
                   {**base, "type": "result", "test": "t::a", "outcome": "passed"}]
    return events


EVENTS = events_of(RUNS)


@dataclass
class Lake:
    server: ThreadedServer
    admin: str
    limited: str  # read, only components test and benchmark

    def send(self, method: str, path: str, key: str | None = None, body: Any = None) -> Reply:
        headers = {"X-API-Key": key or self.admin}
        return self.server.run(self.server.client.request(
            method, path, json=body, headers=headers,
            content_type="application/json" if body is not None else None))

    def ok(self, method: str, path: str, key: str | None = None, body: Any = None,
           status: int = 200) -> Any:
        reply = self.send(method, path, key, body)
        assert reply.status == status, (method, path, reply.body[:400])
        return reply.json()

    def post(self, events: list[dict[str, Any]]) -> int:
        """Append `events` and wait until the fold has them; their last seq."""
        last: int = self.ok("POST", "/api/events", body=events, status=202)["last_seq"]
        self.ok("GET", f"/api/db/overview?min_seq={last}")
        return last


def _serve(tmp: Path) -> Iterator[Lake]:
    keys = tmp / "data" / "keys.json"
    admin = add_key(keys, "admin", name="admin")[1]
    limited = add_key(keys, "read", ["test", "benchmark"], name="limited")[1]
    with serve_in_thread(tmp) as server:
        yield Lake(server, admin, limited)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Shared and read-only: tests that write get `fresh`."""
    for lake in _serve(tmp_path_factory.mktemp("compat")):
        lake.post(EVENTS)
        yield lake


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Lake]:
    for lake in _serve(tmp_path):
        lake.post(EVENTS)
        yield lake


def runs_of(c: str, model: str | None = None) -> list[tuple[str, str, str, str, str | None]]:
    return [r for r in RUNS if r[0] == c and (model is None or r[2] == model)]


# -- task aliases ------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "/metrics", "/logs", "/results", "/events"])
def test_task_alias_reads_as_run(lake: Lake, sub: str) -> None:
    task = lake.ok("GET", f"/api/generator/db/task/g1{sub}")
    assert task == lake.ok("GET", f"/api/generator/db/run/g1{sub}")
    if sub == "":
        assert (task["run_id"], task["model"], task["status"]) == ("g1", LLAMA, "completed")
    else:
        assert task["total"] == {"/events": 5}.get(sub, 1)  # each run: one of each
    tasks = lake.ok("GET", "/api/generator/db/tasks?limit=10")
    assert sorted(t["run_id"] for t in tasks["items"]) == [r[1] for r in runs_of("generator")]


def test_delete_task_and_gateway_deletes(fresh: Lake) -> None:
    """DELETE …/task/{id} (405 before), and the gateway's deletes of a run and a batch."""
    for path in ("/api/generator/db/task/g3", "/api/db/test/run/t3", "/api/db/benchmark/batch/bb",
                 "/api/db/generator/task/g2"):
        last = fresh.ok("DELETE", path, status=202)["last_seq"]
        fresh.ok("GET", f"/api/db/overview?min_seq={last}")
    left = {c: sorted(r["run_id"] for r in fresh.ok("GET", f"/api/{c}/db/runs")["items"])
            for c in COMPONENTS}
    assert left == {"benchmark": [], "generator": ["g1"], "test": ["t1", "t2"]}
    assert fresh.send("GET", "/api/generator/db/task/g3").status == 404


# -- the gateway ---------------------------------------------------------------------


GATEWAY_PATHS = ["runs?limit=10", "tasks?limit=10", "models/stats", "hardware/stats",
                 "batches", "performance?days=30", "search?query=gpt2", "run/{r}",
                 "task/{r}", "run/{r}/metrics", "task/{r}/logs", "run/{r}/results",
                 "task/{r}/events"]


@pytest.mark.parametrize("c", COMPONENTS)
@pytest.mark.parametrize("path", GATEWAY_PATHS)
def test_gateway_is_the_component_route(lake: Lake, c: str, path: str) -> None:
    path = path.format(r=runs_of(c)[0][1])
    via_gateway = lake.ok("GET", f"/api/db/{c}/{path}")
    assert via_gateway == lake.ok("GET", f"/api/{c}/db/{path}")
    if path.startswith(("runs", "tasks")):
        assert via_gateway["total"] == len(runs_of(c))
    if path == "models/stats":
        want = Counter(r[2] for r in runs_of(c))
        assert {i["model"]: i["runs"] for i in via_gateway["items"]} == want


def test_gateway_post_search_and_batch(lake: Lake) -> None:
    url = lake.ok("POST", "/api/db/benchmark/search?query=gpt2&limit=10")
    assert url == lake.ok("POST", "/api/benchmark/db/search", body={"query": "gpt2", "limit": 10})
    assert url["result_counts"] == {"total": 2, "benchmark": 2}
    batch = lake.ok("GET", "/api/db/benchmark/batch/bb")
    assert batch == lake.ok("GET", "/api/benchmark/db/batch/bb") and batch["runs"] == 2


def test_cross_component_routes_win_over_the_gateway(lake: Lake) -> None:
    """`/api/db/overview|model|search|…` are never read as a component's routes."""
    assert "components" in lake.ok("GET", "/api/db/overview")
    assert lake.ok("GET", "/api/db/model/gpt2")["model"] == "gpt2"
    assert lake.send("GET", "/api/db/model/runs").status == 404  # the model "runs"
    assert lake.send("DELETE", "/api/db/model/run/b1").status == 405
    assert lake.send("GET", "/api/db/overview/runs").status == 404
    assert lake.send("GET", "/api/db/search/runs").status == 404


# -- overview, model, search keys ---------------------------------------------------


def totals(c: str) -> dict[str, Any]:
    by = Counter(r[3] for r in runs_of(c))
    done = by["completed"] + by["failed"]
    return {"runs": len(runs_of(c)), "by_status": {s: by[s] for s in STATUSES},
            "success_rate": by["completed"] / done if done else None,
            "events": sum(e["component"] == c for e in EVENTS)}


def test_overview_has_c_stats(lake: Lake) -> None:
    body = lake.ok("GET", "/api/db/overview")
    assert {k for k in body if k.endswith("_stats")} == {f"{c}_stats" for c in COMPONENTS}
    for c in COMPONENTS:
        stats = body[f"{c}_stats"]
        assert stats == body["components"][c]
        assert {k: stats[k] for k in totals(c)} == totals(c)


@pytest.mark.parametrize("name", [LLAMA, quote(LLAMA, safe="")])
def test_model_overview_counts_per_component(lake: Lake, name: str) -> None:
    assert "%2F" in name or "/" in name
    body = lake.ok("GET", f"/api/db/model/{name}")
    assert body["model"] == LLAMA
    want = {f"total_{c}_runs": len(runs_of(c, LLAMA)) for c in COMPONENTS}
    assert want == {"total_benchmark_runs": 0, "total_generator_runs": 2, "total_test_runs": 1}
    assert body["overview"] == {**want, "total_generator_tasks": 2}
    assert sorted(body["components"]) == ["generator", "test"]


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_search_counts_every_component(lake: Lake, method: str) -> None:
    body = lake.ok(method, "/api/db/search?query=bert-base&limit=10")
    hits = {c: sorted(r[1] for r in runs_of(c) if "bert-base" in r[2]) for c in COMPONENTS}
    assert body["result_counts"] == {"total": sum(map(len, hits.values())),
                                     **{c: len(v) for c, v in hits.items()}}
    assert body["result_counts"]["benchmark"] == 0
    assert {c: sorted(r["run_id"] for r in v) for c, v in body["results"].items()} == hits


def test_limited_key_sees_only_its_components(lake: Lake) -> None:
    mine = ["benchmark", "test"]
    overview = lake.ok("GET", "/api/db/overview", lake.limited)
    assert {k for k in overview if k.endswith("_stats")} == {f"{c}_stats" for c in mine}
    assert overview["test_stats"]["runs"] == len(runs_of("test"))
    search = lake.ok("POST", "/api/db/search?query=bert-base&limit=10", lake.limited)
    assert search["result_counts"] == {"total": 1, "benchmark": 0, "test": 1}
    assert sorted(search["results"]) == mine
    model = lake.ok("GET", f"/api/db/model/{LLAMA}", lake.limited)
    assert model["overview"] == {"total_benchmark_runs": 0, "total_test_runs": 1,
                                 "total_generator_tasks": 0}


# -- unknown components ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/tset/db/runs", "/api/db/tset/runs",
                                  "/api/tset/db/models/stats", "/api/tset/db/run/t1",
                                  "/api/tset/db/performance?days=30"])
def test_unknown_component_is_404_naming_the_known(lake: Lake, path: str) -> None:
    reply = lake.send("GET", path)
    assert reply.status == 404, reply.body
    error = reply.json()["error"]
    assert "'tset'" in error["message"]
    assert all(c in error["message"] for c in COMPONENTS)
    assert error["details"][0]["allowed"] == COMPONENTS


def test_ingest_to_a_new_component_still_works(fresh: Lake) -> None:
    assert fresh.send("GET", "/api/music/db/runs").status == 404
    fresh.post([{"type": "run", "component": "music", "run_id": "m1", "ts": TS}])
    assert fresh.ok("GET", "/api/music/db/runs")["total"] == 1
    assert fresh.ok("GET", "/api/db/overview")["music_stats"]["runs"] == 1


def test_gateway_export(lake: Lake) -> None:
    reply = lake.send("POST", "/api/db/benchmark/export", body={})
    assert reply.status == 200, reply.body[:300]
    direct = lake.send("POST", "/api/benchmark/db/export", body={})
    assert reply.body == direct.body and reply.body.count(b"\n") >= len(runs_of("benchmark"))


@pytest.mark.parametrize("path", ["/api/tset/db/search", "/api/db/tset/search"])
def test_unknown_component_is_404_before_a_missing_query(lake: Lake, path: str) -> None:
    assert lake.send("POST", path).status == 404
    assert lake.send("POST", path.replace("tset", "test")).status == 400
