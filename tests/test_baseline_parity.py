"""The seed-style baseline and runlake give the same answers on the same workload, so the
benchmarks compare like with like (issue 7).

One realistic `runlake.demo` stream plus a few deletes goes, as the same NDJSON, to a
`runlake serve` subprocess and to a baseline subprocess; then the read routes both serve
are compared field by field (floats with a tolerance). Where the two legitimately differ,
the comparison says why:

- Arrival order: the baseline applies events as they arrive (last write wins), runlake by
  (`ts`, `seq`). The demo emits ~1 % of events late, so the stream is sent in time order.
- `updated_at`: the baseline writes one statement per event, so only `run` and `status`
  events touch a run's row; runlake takes the latest event of any type. The two agree for
  finished runs (their final status is their last event) and the baseline's is earlier or
  equal otherwise; `last_seen` (max `updated_at` per group) follows.
- Fields only one side has (runlake's `events`, `trend`, `query`, ...) are not compared.
"""

from __future__ import annotations

import itertools
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec
import pytest
from helpers.baseline_server import start, stop
from helpers.plain_http import call, get
from helpers.server import ServerProcess, start_server_process

from runlake.demo import generate

RUNS = 60
SEED = 1  # 18/23/19 runs per component, 2 batches, a run still running
COMPONENTS = ("test", "generator", "benchmark")
TERMINAL = {"completed", "failed", "cancelled"}


def _epoch(ts: str | float) -> float:
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    return float(ts)


def workload() -> list[dict[str, Any]]:
    """The demo stream in time order (stable: ties keep their order), then three deletes:
    two runs and the smaller batch with its runs, after every event of what they delete."""
    events = sorted(generate(RUNS, seed=SEED), key=lambda e: _epoch(e["ts"]))
    end = _epoch(events[-1]["ts"]) + 1
    runs = [e for e in events if e["type"] == "run"]
    batch = min((e for e in events if e["type"] == "batch"),
                key=lambda b: sum(r.get("batch_id") == b["batch_id"] for r in runs))
    deletes = [{"type": "delete", "component": r["component"], "run_id": r["run_id"], "ts": end}
               for r in runs[:2]]
    deletes.append({"type": "delete", "component": batch["component"],
                    "batch_id": batch["batch_id"], "ts": end})
    return events + deletes


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(runlake URL, baseline URL), both holding the workload, runlake's fold caught up."""
    root = tmp_path_factory.mktemp("parity")
    body = msgspec.json.Encoder().encode_lines(workload())
    runlake: ServerProcess | None = None
    baseline, base_url = start(root / "baseline.duckdb")
    try:
        runlake = start_server_process(root / "data", inbox=False)
        for url in (runlake.url, base_url):
            status, reply = call(url, "/api/events", body, "application/x-ndjson")
            assert status == 202, reply
            assert reply["accepted"] == body.count(b"\n")
        deadline = time.monotonic() + 120
        while (lag := call(runlake.url, "/readyz")[1]["lag_events"]) > 0:  # 503 while lagging
            assert time.monotonic() < deadline, f"the fold is still {lag} events behind"
            time.sleep(0.05)
        yield runlake.url, base_url
    finally:
        stop(baseline)
        if runlake is not None:
            runlake.stop()


def both(servers: tuple[str, str], path: str, **query: Any) -> tuple[Any, Any]:
    return get(servers[0], path, **query), get(servers[1], path, **query)


def same_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and a == pytest.approx(b, rel=1e-9, abs=1e-6)
    return bool(a == b)


def assert_same(ours: dict[str, Any], theirs: dict[str, Any], keys: Any, where: str) -> None:
    for k in keys:
        assert same_number(ours[k], theirs[k]), f"{where}: {k}: runlake {ours[k]!r}, " \
                                                f"baseline {theirs[k]!r}"


RUN_KEYS = ("component", "run_id", "model", "hardware", "batch_id", "name", "params", "status",
            "error", "created_at", "started_at", "finished_at", "duration_s")
STATS_KEYS = ("runs", "by_status", "success_rate", "duration_avg_s", "duration_p50_s",
              "duration_p95_s", "first_seen")


def assert_same_runs(ours: list[dict[str, Any]], theirs: list[dict[str, Any]],
                     where: str) -> None:
    assert [r["run_id"] for r in ours] == [r["run_id"] for r in theirs], where
    for a, b in zip(ours, theirs, strict=True):
        assert_same(a, b, RUN_KEYS, f"{where} {a['run_id']}")
        if a["status"] in TERMINAL:
            assert a["updated_at"] == b["updated_at"], f"{where} {a['run_id']}"
        else:  # the baseline saw only its run/status events
            assert b["updated_at"] <= a["updated_at"], f"{where} {a['run_id']}"


def assert_last_seen(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    unfinished = ours["by_status"]["pending"] + ours["by_status"]["running"]
    if unfinished:
        assert theirs["last_seen"] <= ours["last_seen"], where
    else:
        assert theirs["last_seen"] == ours["last_seen"], where


def test_the_workload_exercises_what_is_compared(servers: tuple[str, str]) -> None:
    """A guard: the comparisons below are only worth something on varied data."""
    overview = get(servers[0], "/api/db/overview")
    assert set(overview["components"]) == set(COMPONENTS)
    by_status = overview["total"]["by_status"]
    assert by_status["completed"] > 20 and by_status["failed"] > 0
    assert by_status["running"] + by_status["pending"] > 0  # an unfinished run
    assert overview["total"]["runs"] < RUNS - 2  # the deletes took effect
    assert sum(get(servers[0], f"/api/{c}/db/batches")["total"] for c in COMPONENTS) > 0


@pytest.mark.parametrize("what", ["models", "hardware"])
def test_group_stats(servers: tuple[str, str], what: str) -> None:
    key = "model" if what == "models" else "hardware"
    for c in COMPONENTS:
        ours, theirs = both(servers, f"/api/{c}/db/{what}/stats", limit=1000)
        assert ours["total"] == theirs["total"] and ours["total"] > 1
        assert [i[key] for i in ours["items"]] == [i[key] for i in theirs["items"]]
        for a, b in zip(ours["items"], theirs["items"], strict=True):
            assert_same(a, b, STATS_KEYS, f"{c} {key}={a[key]}")
            assert_last_seen(a, b, f"{c} {key}={a[key]}")
        # paging gives the same slices
        ours, theirs = both(servers, f"/api/{c}/db/{what}/stats", limit=2, offset=1)
        assert [i[key] for i in ours["items"]] == [i[key] for i in theirs["items"]]


# `updated_at` sorts are left out: see the module docstring.
SORTS = ("-created_at", "created_at", "duration_s", "-duration_s", "run_id", "-run_id",
         "started_at", "-finished_at", "status", "model", "-hardware")


@pytest.mark.parametrize("sort", SORTS)
def test_runs_list_sorted_and_paged(servers: tuple[str, str], sort: str) -> None:
    for c in COMPONENTS:
        ours, theirs = both(servers, f"/api/{c}/db/runs", sort=sort, limit=1000)
        assert ours["total"] == theirs["total"] > 5
        assert_same_runs(ours["items"], theirs["items"], f"{c} sort={sort}")
        for offset in (0, 7):
            ours, theirs = both(servers, f"/api/{c}/db/runs", sort=sort, limit=7, offset=offset)
            assert (ours["limit"], ours["offset"]) == (theirs["limit"], theirs["offset"])
            assert_same_runs(ours["items"], theirs["items"], f"{c} sort={sort} @{offset}")


def filters(servers: tuple[str, str], c: str) -> Iterator[dict[str, str]]:
    """Filters built from the data itself: a model, a hardware, a batch, a time window..."""
    runs = get(servers[0], f"/api/{c}/db/runs", limit=1000, sort="created_at")["items"]
    model = runs[0]["model"]
    yield {"model": model}
    yield {"model": model, "status": "completed"}
    yield {"hardware": runs[-1]["hardware"], "sort": "-duration_s"}
    yield {"status": "failed"}
    batch = next((r["batch_id"] for r in runs if r["batch_id"]), None)
    if batch:
        yield {"batch_id": batch}
    yield {"since": runs[len(runs) // 3]["created_at"], "until": runs[-3]["created_at"]}
    yield {"q": model[:4].upper()}  # case-insensitive substring of id, name or model


def test_runs_list_filtered(servers: tuple[str, str]) -> None:
    seen = 0
    for c in COMPONENTS:
        for query in filters(servers, c):
            ours, theirs = both(servers, f"/api/{c}/db/runs", limit=1000, **query)
            assert ours["total"] == theirs["total"], f"{c} {query}"
            assert_same_runs(ours["items"], theirs["items"], f"{c} {query}")
            seen += ours["total"]
    assert seen > 50  # the filters matched something


def test_overview(servers: tuple[str, str]) -> None:
    ours, theirs = both(servers, "/api/db/overview")
    assert list(ours["components"]) == list(theirs["components"])
    for c, a in [*ours["components"].items(), ("total", ours["total"])]:
        b = theirs["components"][c] if c != "total" else theirs["total"]
        assert_same(a, b, ("runs", "by_status", "success_rate"), c)  # no `events` in baseline


def test_batches(servers: tuple[str, str]) -> None:
    for c in COMPONENTS:
        ours, theirs = both(servers, f"/api/{c}/db/batches", limit=1000)
        assert ours["total"] == theirs["total"]
        # keyed by id: the order (by last_seen) may differ with last_seen
        a_by_id = {b["batch_id"]: b for b in ours["items"]}
        b_by_id = {b["batch_id"]: b for b in theirs["items"]}
        assert a_by_id.keys() == b_by_id.keys()
        for bid, a in a_by_id.items():
            assert_same(a, b_by_id[bid], ("description", "expected_count", "runs", "by_status",
                                          "finished", "progress", "declared_at", "first_seen"),
                        f"{c} batch {bid}")
            if a["runs"]:
                assert_last_seen(a, b_by_id[bid], f"{c} batch {bid}")


def test_model_across_components(servers: tuple[str, str]) -> None:
    models = get(servers[0], "/api/generator/db/models/stats", limit=3)["items"]
    for m in (i["model"] for i in models):
        ours, theirs = both(servers, f"/api/db/model/{urllib.parse.quote(m, safe='')}")
        assert list(ours["components"]) == list(theirs["components"])
        assert_same(ours["total"], theirs["total"], ("runs", "by_status", "success_rate"), m)
        for c, a in ours["components"].items():
            b = theirs["components"][c]
            assert_same(a, b, STATS_KEYS, f"{m} in {c}")
            assert_same_runs(a["recent_runs"], b["recent_runs"], f"{m} in {c}")
    assert call(servers[1], "/api/db/model/no-such-model")[0] == \
        call(servers[0], "/api/db/model/no-such-model")[0] == 404


def test_run_detail(servers: tuple[str, str]) -> None:
    for c in COMPONENTS:
        runs = get(servers[0], f"/api/{c}/db/runs", limit=4, sort="-duration_s")["items"]
        for run in runs:
            path = f"/api/{c}/db/run/{urllib.parse.quote(run['run_id'], safe='')}"
            a, b = both(servers, path)
            where = f"{c} {run['run_id']}"
            assert_same(a, b, RUN_KEYS, where)
            assert a["tags"] == b["tags"], where
            # retried/flaky (attempts, docs/tests.md) are runlake's own: the seed has none.
            assert {k: v for k, v in a["results"].items()
                    if k not in ("retried", "flaky")} == b["results"], where

            def steps(r: dict[str, Any]) -> list[tuple[Any, ...]]:
                return sorted((s["step"], s["status"], s["progress"], s["message"], s["ts"])
                              for s in r["steps"])

            assert steps(a) == steps(b), where
            for ma, mb in zip(a["metrics"], b["metrics"], strict=True):
                assert_same(ma, mb, ("name", "unit", "count", "mean", "min", "max", "last"),
                            f"{where} metric {ma['name']}")
            assert [m["name"] for m in a["metrics"]] == [m["name"] for m in b["metrics"]]

            def logs(r: dict[str, Any]) -> list[tuple[Any, ...]]:
                return sorted((lg["ts"], lg["level"], lg["message"]) for lg in r["logs"])

            assert logs(a) == logs(b), where
            keys = ("name", "uri", "size_bytes", "media_type", "ts")
            assert [[x[k] for k in keys] for x in a["artifacts"]] == \
                [[x[k] for k in keys] for x in b["artifacts"]], where
    for server in servers:
        assert call(server, "/api/test/db/run/no-such-run")[0] == 404


@pytest.mark.parametrize("term", ["out of memory", "nightly", "LLAMA", "test_api", "branch"])
def test_search(servers: tuple[str, str], term: str) -> None:
    """Same matches and counts; the order within a component is by `updated_at`, so it is
    compared as a set (see the module docstring)."""
    ours, theirs = both(servers, "/api/db/search", query=term, limit=1000)
    # runlake also lists every component without a match, at 0 (issue 17); the
    # baseline only those with one.
    assert hits(ours["result_counts"]) == theirs["result_counts"]
    assert set(ours["result_counts"]) == {"total", *COMPONENTS}
    assert ours["result_counts"]["total"] > 0
    for c, items in ours["results"].items():
        assert {r["run_id"] for r in items} == {r["run_id"] for r in theirs["results"].get(c, [])}
    ours, theirs = both(servers, "/api/test/db/search", query=term, limit=1000)
    assert hits(ours["result_counts"]) == theirs["result_counts"]


def hits(counts: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in counts.items() if n or k == "total"}


def test_performance(servers: tuple[str, str]) -> None:
    """count, min and max exact, mean to float noise. Percentiles: both interpolate like
    quantile_cont; runlake reads each of the two ranks off mergeable histograms (≤ 1 %
    relative error), so it is within 1 % of the larger neighbouring value."""
    compared = 0
    for c, days in itertools.product(COMPONENTS, (7, 30, 90)):
        ours, theirs = both(servers, f"/api/{c}/db/performance", days=days)
        key = ("model", "hardware", "metric")
        a_items = {tuple(i[k] for k in key): i for i in ours["items"]}
        b_items = {tuple(i[k] for k in key): i for i in theirs["items"]}
        assert a_items.keys() == b_items.keys(), f"{c} days={days}"
        for k, a in a_items.items():
            b = b_items[k]
            assert_same(a, b, ("count", "mean", "min", "max"), f"{c} {k} days={days}")
            for p in ("p50", "p95", "p99"):
                slack = 0.01 * max(abs(b["min"]), abs(b["max"])) * (1 + 1e-9)
                assert abs(a[p] - b[p]) <= slack, f"{c} {k} {p}: {a[p]} vs {b[p]}"
            compared += 1
    assert compared > 20


def test_sizes_stay_small() -> None:
    """The workload is sized for the normal suite (the baseline ingests a few hundred
    events per second)."""
    assert 1000 < len(workload()) < 3000
