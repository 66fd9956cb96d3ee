"""Read routes against the real server: expected answers are computed here, in
plain Python, from the events the test sends (not by calling runlake's queries)."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from helpers.stats import interpolated_bound, quantile_cont

from runlake.api.state import FOLD
from runlake.views.metric_daily import ALPHA
from tests.helpers.server import Client

MakeServer = Callable[..., Any]
NOW = datetime.now(UTC).replace(microsecond=0)


def at(minutes: float) -> str:
    return (NOW - timedelta(days=2) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


# (run_id, model, hardware, final status or None, start minute, end minute, batch)
RUNS = [
    ("r1", "llama", "a100", "completed", 0, 10, "b1"),
    ("r2", "llama", "a100", "failed", 5, 35, "b1"),
    ("r3", "llama", "h100", "completed", 8, 12, None),
    ("r4", "mistral", "a100", "cancelled", 9, 19, "b1"),
    ("r5", "mistral", "h100", None, 20, None, None),  # still running
]
LATENCIES = {"r1": [10.0, 12.0], "r2": [30.0], "r3": [5.0, 6.0, 7.0], "r4": [50.0], "r5": [1.0]}


def stream() -> list[dict[str, Any]]:
    ev: list[dict[str, Any]] = [
        {"type": "batch", "component": "test", "batch_id": "b1", "expected_count": 4,
         "description": "nightly", "ts": at(-1)}]
    for run_id, model, hw, final, start, end, batch in RUNS:
        base = {"component": "test", "run_id": run_id}
        run = {**base, "type": "run", "model": model, "hardware": hw, "ts": at(start)}
        if batch:
            run["batch_id"] = batch
        ev.append(run)
        ev.append({**base, "type": "status", "status": "running", "ts": at(start + 1)})
        ev.append({**base, "type": "tag", "key": "team", "value": f"team-{model}",
                   "ts": at(start + 1)})
        ev.append({**base, "type": "step", "step": "load", "status": "completed",
                   "ts": at(start + 1)})
        for i, v in enumerate(LATENCIES[run_id]):
            ev.append({**base, "type": "metric", "name": "latency_ms", "value": v, "unit": "ms",
                       "step": i, "ts": at(start + 2)})
        ev.append({**base, "type": "log", "level": "info", "message": f"hello from {run_id}",
                   "ts": at(start + 2)})
        if final:
            status: dict[str, Any] = {**base, "type": "status", "status": final, "ts": at(end)}
            if final == "failed":
                status["error"] = "CUDA out of memory"
            ev.append(status)
    ev.append({"type": "result", "component": "test", "run_id": "r1", "test": "t::a",
               "outcome": "passed", "ts": at(3)})
    ev.append({"type": "result", "component": "test", "run_id": "r1", "test": "t::b",
               "outcome": "failed", "message": "boom", "ts": at(4)})
    return ev


def duration(run: tuple[Any, ...]) -> float | None:
    _, _, _, final, start, end, _ = run
    return None if final is None else (end - (start + 1)) * 60.0


def expected_model_stats(model: str) -> dict[str, Any]:
    runs = [r for r in RUNS if r[1] == model]
    by = {s: 0 for s in ("pending", "running", "completed", "failed", "cancelled")}
    for r in runs:
        by[r[3] or "running"] += 1
    durations = [d for r in runs if (d := duration(r)) is not None]
    done = by["completed"] + by["failed"]
    return {"runs": len(runs), "by_status": by,
            "success_rate": by["completed"] / done if done else None,
            "duration_avg_s": statistics.fmean(durations),
            "duration_p50_s": quantile_cont(durations, 0.5),
            "duration_p95_s": quantile_cont(durations, 0.95)}


def test_every_read_route(make_server: MakeServer) -> None:
    async def main() -> None:
        async with make_server() as client:
            reply = await client.post_events(stream())
            assert reply.status == 202, reply.body
            last = reply.json()["last_seq"]
            await check_reads(client, last)

    asyncio.run(main())


async def get_reply(client: Client, path: str, last: int) -> Any:
    """GET `path` once the fold has passed seq `last` (read-your-writes)."""
    sep = "&" if "?" in path else "?"
    return await client.get(f"{path}{sep}min_seq={last}")


async def get(client: Client, path: str, last: int) -> Any:
    reply = await get_reply(client, path, last)
    assert reply.status == 200, (path, reply.body)
    return reply.json()


async def check_reads(client: Client, last: int) -> None:
    stats = await get(client, "/api/test/db/models/stats", last)
    assert stats["total"] == 2
    for item in stats["items"]:
        want = expected_model_stats(item["model"])
        for key, value in want.items():
            got = item[key]
            assert got == value or abs(got - value) < 1e-6, (item["model"], key, got, value)
    assert [i["model"] for i in stats["items"]] == ["llama", "mistral"]  # most runs first

    hw = await get(client, "/api/test/db/hardware/stats", last)
    assert {i["hardware"]: i["runs"] for i in hw["items"]} == {"a100": 3, "h100": 2}

    runs = await get(client, "/api/test/db/runs?model=llama&sort=run_id", last)
    assert [r["run_id"] for r in runs["items"]] == ["r1", "r2", "r3"] and runs["total"] == 3
    failed = await get(client, "/api/test/db/tasks?status=failed", last)
    assert [r["run_id"] for r in failed["items"]] == ["r2"]
    assert failed["items"][0]["error"] == "CUDA out of memory"
    tagged = await get(client, "/api/test/db/runs?tag=team:team-mistral&sort=-run_id", last)
    assert [r["run_id"] for r in tagged["items"]] == ["r5", "r4"]
    page = await get(client, "/api/test/db/runs?sort=duration_s&limit=2&offset=1", last)
    by_duration = sorted((d, r[0]) for r in RUNS if (d := duration(r)) is not None)
    assert [r["run_id"] for r in page["items"]] == [rid for _, rid in by_duration[1:3]]
    since = (NOW - timedelta(days=2) + timedelta(minutes=8)).isoformat()
    recent = await get(client, f"/api/test/db/runs?since={since.replace('+', '%2B')}", last)
    assert {r["run_id"] for r in recent["items"]} == {"r3", "r4", "r5"}

    run = await get(client, "/api/test/db/run/r1", last)
    assert run["status"] == "completed" and run["duration_s"] == duration(RUNS[0])
    assert run["tags"] == {"team": "team-llama"}
    assert [s["step"] for s in run["steps"]] == ["load"]
    assert run["metrics"][0]["count"] == 2 and run["metrics"][0]["mean"] == 11.0
    assert run["results"]["passed"] == 1 and run["results"]["failed"] == 1
    assert run["logs"][0]["message"] == "hello from r1"
    alias = await get(client, "/api/test/db/task/r1", last)
    assert alias["run_id"] == "r1"
    points = await get(client, "/api/test/db/run/r3/metrics?name=latency_ms", last)
    assert [p["value"] for p in points["items"]] == LATENCIES["r3"]
    logs = await get(client, "/api/test/db/run/r2/logs", last)
    assert logs["total"] == 1
    results = await get(client, "/api/test/db/run/r1/results?outcome=failed", last)
    assert [r["test"] for r in results["items"]] == ["t::b"]
    raw = await get(client, "/api/test/db/run/r5/events", last)
    assert raw["total"] == 4 + len(LATENCIES["r5"]) + 1

    batches = await get(client, "/api/test/db/batches", last)
    (b1,) = batches["items"]
    assert b1["runs"] == 3 and b1["expected_count"] == 4 and b1["finished"] == 3
    assert b1["progress"] == 3 / 4
    batch = await get(client, "/api/test/db/batch/b1", last)
    assert {r["run_id"] for r in batch["runs_list"]} == {"r1", "r2", "r4"}

    perf = await get(client, "/api/test/db/performance?days=7", last)
    groups = {(i["model"], i["hardware"]): i for i in perf["items"]}
    llama_a100 = LATENCIES["r1"] + LATENCIES["r2"]
    g = groups[("llama", "a100")]
    assert g["count"] == 3 and g["min"] == 10.0 and g["max"] == 30.0
    for name, quantile in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = quantile_cont(llama_a100, quantile)  # interpolated, each rank within 1 %
        assert abs(g[name] - exact) <= ALPHA * max(llama_a100), (name, g[name], exact)
    assert perf["total"] == len(perf["items"]) and perf["limit"] == 100
    assert sum(t["count"] for t in g["trend"]) == 3

    found = await get(client, "/api/test/db/search?query=out%20of%20memory", last)
    assert [r["run_id"] for r in found["results"]["test"]] == ["r2"]
    everywhere = await get(client, "/api/db/search?query=hello%20from%20r4", last)
    assert everywhere["result_counts"] == {"total": 1, "test": 1}
    posted = await client.request("POST", "/api/db/search", json={"query": "team-mistral"})
    assert posted.json()["result_counts"]["total"] == 2

    overview = await get(client, "/api/db/overview", last)
    assert overview["total"]["runs"] == len(RUNS)
    assert overview["components"]["test"]["events"] == len(stream())
    model = await get(client, "/api/db/model/mistral", last)
    assert model["total"]["runs"] == 2 and model["components"]["test"]["runs"] == 2

    missing = await client.get("/api/test/db/run/nope")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"

    deleted = await client.request("DELETE", "/api/test/db/batch/b1")
    assert deleted.status == 202
    after = await get(client, "/api/test/db/runs", deleted.json()["last_seq"])
    assert {r["run_id"] for r in after["items"]} == {"r3", "r5"}
    gone = await client.get("/api/test/db/batch/b1")
    assert gone.status == 404


def test_raw_events_of_a_run_since_its_last_delete(make_server: MakeServer) -> None:
    """`…/run/{id}/events` reads only the run's seq span and what the fold has not
    reached: the events of its current life, folded or not, in seq order, and none
    from before a delete; other runs' and other components' events in between are
    skipped."""
    def ev(run_id: str, i: int, component: str = "test") -> dict[str, Any]:
        return {"type": "log", "component": component, "run_id": run_id, "level": "info",
                "message": f"{component} {run_id} {i}", "ts": at(i)}

    def messages(reply: Any) -> list[str]:
        return [e["message"] for e in reply["items"]]

    async def main() -> None:
        async with make_server() as client:
            assert client.app is not None
            # a's first life, interleaved with b's events
            await client.post_events([ev(run, i) for i in range(3) for run in ("a", "b")])
            deleted = await client.request("DELETE", "/api/test/db/run/a")
            assert deleted.status == 202
            gone = await get_reply(client, "/api/test/db/run/a/events", deleted.json()["last_seq"])
            assert gone.status == 404  # deleted, nothing since
            # a's second life, with b's events and another component's run `a` inside it
            reply = await client.post_events(
                [ev(run, i) for i in range(3, 5) for run in ("b", "a")]
                + [ev("a", 9, component="other"), ev("a", 5)])
            last = reply.json()["last_seq"]
            a = await get(client, "/api/test/db/run/a/events", last)
            assert messages(a) == ["test a 3", "test a 4", "test a 5"]
            b = await get(client, "/api/test/db/run/b/events", last)
            assert messages(b) == [f"test b {i}" for i in range(5)]
            # Not folded yet: with the fold stopped, the log has them and the views do not.
            await asyncio.to_thread(client.app[FOLD].stop)
            await client.post_events([ev("a", 6), ev("c", 0)])
            assert (await client.get("/readyz")).json()["lag_events"] == 2
            a = await client.get("/api/test/db/run/a/events")
            assert messages(a.json()) == ["test a 3", "test a 4", "test a 5", "test a 6"]
            assert (await client.get("/api/test/db/run/c")).status == 404
            c = await client.get("/api/test/db/run/c/events")
            assert (c.status, messages(c.json())) == (200, ["test c 0"])
            # A delete not folded yet is listed, and so are the events before it.
            # (POSTed: the DELETE route waits for the fold, to answer 404 for no such run.)
            await client.post_events({"type": "delete", "component": "test", "run_id": "b"})
            b = (await client.get("/api/test/db/run/b/events")).json()
            assert [e["type"] for e in b["items"]] == ["log"] * 5 + ["delete"]
            missing = await client.get("/api/test/db/run/nope/events")
            assert missing.status == 404
            await asyncio.to_thread(client.app[FOLD].start)

    asyncio.run(main())


# -- the performance report as runs change, across a restart ---------------------------

PERF_DAY = NOW.replace(hour=12, minute=0, second=0)


def perf_metric(run_id: str, days_ago: int, value: float, name: str = "lat") -> dict[str, Any]:
    ts = (PERF_DAY - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
    return {"type": "metric", "component": "perf", "run_id": run_id, "name": name,
            "value": value, "ts": ts}


def perf_run(run_id: str, model: str, hardware: str | None) -> dict[str, Any]:
    run = {"type": "run", "component": "perf", "run_id": run_id, "model": model,
           "ts": PERF_DAY.isoformat().replace("+00:00", "Z")}
    return run if hardware is None else {**run, "hardware": hardware}


def expected_report(runs: dict[str, tuple[str, str | None]],
                    points: dict[str, list[tuple[int, float, str]]], days: int,
                    until: str) -> list[dict[str, Any]]:
    """The report's items computed here: each live run's points, grouped by the model
    and hardware the run has now, over the `days` days ending `until` (the server's
    today, which it reports: the test may run across midnight UTC)."""
    last = date.fromisoformat(until)
    groups: dict[tuple[Any, ...], dict[date, list[float]]] = {}
    for run_id, (model, hardware) in runs.items():
        for days_ago, value, name in points.get(run_id, []):
            day = (PERF_DAY - timedelta(days=days_ago)).date()
            if last - timedelta(days=days - 1) <= day <= last:
                key = (model, hardware, name)
                groups.setdefault(key, {}).setdefault(day, []).append(value)
    items = []
    for (model, hardware, name), by_day in sorted(
            groups.items(), key=lambda g: (g[0][0], g[0][1] is None, g[0][1] or "", g[0][2])):
        values = [v for vs in by_day.values() for v in vs]
        items.append({
            "model": model, "hardware": hardware, "metric": name, "count": len(values),
            "min": min(values), "max": max(values), "mean": statistics.fmean(values),
            "values": values,
            "trend": [{"day": d.isoformat(), "count": len(vs), "min": min(vs), "max": max(vs),
                       "mean": statistics.fmean(vs)} for d, vs in sorted(by_day.items())]})
    return items


def assert_report(report: dict[str, Any], days: int, runs: dict[str, tuple[str, str | None]],
                  points: dict[str, list[tuple[int, float, str]]], what: str) -> None:
    """`report` is the `days`-day report ending the server's today, with these items."""
    until = date.fromisoformat(report["until"])
    today = datetime.now(UTC).date()  # the request was sent just before: midnight may lie between
    assert until in (today, today - timedelta(days=1)), (what, until)
    assert (report["days"], report["since"]) == (
        days, (until - timedelta(days=days - 1)).isoformat()), what
    want = expected_report(runs, points, days, report["until"])
    assert want, f"{what}: the window should hold points"
    assert report["total"] == len(want), (what, report["total"], len(want))
    got = report["items"]
    assert [(i["model"], i["hardware"], i["metric"]) for i in got] == [
        (i["model"], i["hardware"], i["metric"]) for i in want], what
    for g, w in zip(got, want, strict=True):
        assert (g["count"], g["min"], g["max"]) == (w["count"], w["min"], w["max"]), (what, g)
        assert abs(g["mean"] - w["mean"]) < 1e-9, (what, g)
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            exact = quantile_cont(w["values"], q)
            assert abs(g[name] - exact) <= interpolated_bound(w["values"], q, ALPHA), (what, name)
        trend = [{k: t[k] for k in ("day", "count", "min", "max")} for t in g["trend"]]
        assert trend == [{k: t[k] for k in ("day", "count", "min", "max")}
                         for t in w["trend"]], (what, g["trend"])
        assert all(abs(t["mean"] - u["mean"]) < 1e-9
                   for t, u in zip(g["trend"], w["trend"], strict=True)), what


def test_performance_report_follows_changes(make_server: MakeServer) -> None:
    """The report (held in memory beside DuckDB) follows new points, points on an older
    day than any before, a run moved to another model, a deleted run and its return,
    and is the same from a restarted server that loads it from the database."""

    async def main() -> None:
        runs = {"ra": ("m1", "h1"), "rb": ("m1", "h1"), "rc": ("m2", None)}
        points = {"ra": [(1, 1.0, "lat"), (1, 2.0, "lat"), (3, 3.0, "lat"), (1, 9.0, "mem")],
                  "rb": [(2, 4.0, "lat"), (1, 5.0, "lat")], "rc": [(0, 6.0, "lat")]}
        path = "/api/perf/db/performance?days=10"
        async with make_server() as client:
            first = [perf_run(r, *runs[r]) for r in runs] + [
                perf_metric(r, d, v, n) for r in points for d, v, n in points[r]]
            last = (await client.post_events(first)).json()["last_seq"]
            assert_report(await get(client, path, last), 10, runs, points, "first batch")
            narrow = await get(client, "/api/perf/db/performance?days=2", last)
            assert_report(narrow, 2, runs, points, "a two-day window")
            model = await get(client, "/api/perf/db/performance?days=10&model=m1&metric=lat",
                              last)
            assert [(i["model"], i["metric"]) for i in model["items"]] == [("m1", "lat")]

            # An older day than any, a run moved to m2 (its points go with it), a delete.
            points["ra"].append((6, 7.0, "lat"))
            runs["rb"] = ("m2", "h2")  # an absent field would leave it as it was
            del runs["rc"]
            second = [perf_metric("ra", 6, 7.0), perf_run("rb", "m2", "h2"),
                      {"type": "delete", "component": "perf", "run_id": "rc"}]
            last = (await client.post_events(second)).json()["last_seq"]
            assert_report(await get(client, path, last), 10, runs, points,
                          "moved, deleted, an older day")

            # rc comes back with a point on a day it never had.
            runs["rc"], points["rc"] = ("m2", None), [(4, 8.0, "lat")]
            third = [perf_run("rc", "m2", None), perf_metric("rc", 4, 8.0)]
            last = (await client.post_events(third)).json()["last_seq"]
            kept = await get(client, path, last)
            assert_report(kept, 10, runs, points, "rc again")

        async with make_server() as client:  # the same data folder: loaded from DuckDB
            loaded = await get(client, path, last)
        assert_report(loaded, 10, runs, points, "after a restart")
        if loaded["until"] == kept["until"]:  # else midnight passed: compared above
            assert loaded == kept

    asyncio.run(main())


# -- tag filters and a run's recent logs ------------------------------------------------


def test_tag_filters_match_a_recompute(make_server: MakeServer) -> None:
    """`tag=key:value`, repeated, keeps the runs holding every pair, by each tag's latest
    value: checked against the runs' tags worked out here for combinations with a
    repeated filter, two values of one key, a value holding ':', and 50 filters."""
    rng = random.Random(16)
    final: dict[str, dict[str, str]] = {}
    events: list[dict[str, Any]] = []
    for i in range(60):
        run_id = f"t{i:02d}"
        final[run_id] = {}
        for key in ("a", "b", "c"):
            if rng.random() < 0.8:
                value = rng.choice(["1", "2", "x:y"])
                final[run_id][key] = value
                events.append({"type": "tag", "component": "tagged", "run_id": run_id,
                               "key": key, "value": value, "ts": at(10)})
        if "a" in final[run_id] and rng.random() < 0.3:  # an older value, sent later
            events.append({"type": "tag", "component": "tagged", "run_id": run_id,
                           "key": "a", "value": "old", "ts": at(5)})
    combos = [[("a", "1")], [("a", "1"), ("b", "2")], [("a", "1"), ("a", "1")],
              [("a", "1"), ("a", "2")], [("c", "x:y")], [("a", "2"), ("b", "x:y"), ("c", "1")],
              [("a", "old")], [("nokey", "1")], [("b", "1")] * 25 + [("c", "2")] * 25]

    async def main() -> None:
        async with make_server() as client:
            last = (await client.post_events(events)).json()["last_seq"]
            for combo in combos:
                want = sorted(r for r, tags in final.items()
                              if all(tags.get(k) == v for k, v in combo))
                query = urlencode([("tag", f"{k}:{v}") for k, v in combo]
                                  + [("sort", "run_id"), ("limit", "1000")])
                got = await get(client, f"/api/tagged/db/runs?{query}", last)
                assert [r["run_id"] for r in got["items"]] == want, combo
                assert got["total"] == len(want), combo
            assert any(final[r].get("a") == "1" and final[r].get("b") == "2" for r in final)

    asyncio.run(main())


def test_run_detail_lists_its_recent_logs_oldest_first(make_server: MakeServer) -> None:
    """The detail keeps the run's 20 most recent log lines, oldest first: the tail of
    `…/logs`, which lists every line oldest first."""
    lines = [{"type": "log", "component": "test", "run_id": "chatty", "level": "info",
              "message": f"line {i}", "ts": at(i)} for i in range(25)]

    async def main() -> None:
        async with make_server() as client:
            last = (await client.post_events(lines)).json()["last_seq"]
            detail = await get(client, "/api/test/db/run/chatty", last)
            every = await get(client, "/api/test/db/run/chatty/logs", last)
        assert [e["message"] for e in every["items"]] == [f"line {i}" for i in range(25)]
        assert [e["message"] for e in detail["logs"]] == [f"line {i}" for i in range(5, 25)]
        assert detail["logs"] == every["items"][5:]

    asyncio.run(main())
