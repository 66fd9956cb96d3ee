"""Per-test figures and flakiness (issue 20) on hand-written histories, through the real
server's `GET /api/{c}/db/tests` and `/test/{name}`. Every expected figure is computed
here, in plain Python, from the events the test sends (docs/tests.md definitions)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from helpers.stats import quantile_cont

T0 = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW = 4  # flaky_window for the server under test: shorter than some histories

# Runs in order (r3 states its commit in params): (run_id, commit, {test: [outcome of
# each attempt]}); more than one outcome is a test retried within the run.
HISTORY: list[tuple[str, str | None, dict[str, list[str]]]] = [
    ("r1", "c1", {"a": ["passed"], "b": ["failed", "passed"], "c": ["passed"],
                  "d": ["skipped"], "e/x.py::t[1]": ["passed"]}),
    ("r2", "c1", {"a": ["passed"], "b": ["passed"], "c": ["failed"], "d": ["skipped"]}),
    ("r3", "c1", {"a": ["passed"], "b": ["error", "error"], "c": ["passed"],
                  "e/x.py::t[1]": ["failed"]}),
    ("r4", None, {"a": ["failed"], "b": ["passed"], "c": ["failed"]}),
    ("r5", "c3", {"a": ["passed"], "b": ["failed", "failed", "passed"], "c": ["passed"],
                  "e/x.py::t[1]": ["failed"]}),
    ("r6", "c3", {"a": ["passed"], "c": ["error"]}),
]
DURATIONS = [0.5, 1.25, 2.0, 3.5, 0.75, 5.0, 1.0]


def events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    minute = 0
    k = 0
    for run_id, commit, tests in HISTORY:
        base = {"component": "test", "run_id": run_id}
        if commit is not None:  # r3's commit comes as a param, the others' as a tag
            if run_id == "r3":
                out.append({**base, "type": "run", "params": {"commit": commit},
                            "ts": ts(minute)})
            else:
                out.append({**base, "type": "tag", "key": "commit", "value": commit,
                            "ts": ts(minute)})
        for test, outcomes in tests.items():
            for attempt, outcome in enumerate(outcomes, start=1):
                minute += 1
                ev = {**base, "type": "result", "test": test, "outcome": outcome,
                      "attempt": attempt, "duration_s": DURATIONS[k % len(DURATIONS)],
                      "ts": ts(minute), "message": f"{test} {outcome} in {run_id}"}
                k += 1
                out.append(ev)
    return out


def ts(minute: int) -> str:
    return (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")


def expected(evs: list[dict[str, Any]], window: int) -> dict[str, dict[str, Any]]:
    commit_of = {}
    for e in evs:
        if e["type"] == "tag":
            commit_of[e["run_id"]] = e["value"]
        elif e["type"] == "run":
            commit_of[e["run_id"]] = e["params"]["commit"]
    results = [e for e in evs if e["type"] == "result"]  # in time order, as sent
    out: dict[str, dict[str, Any]] = {}
    for test in {e["test"] for e in results}:
        mine = [e for e in results if e["test"] == test]
        per_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in mine:
            per_run[e["run_id"]].append(e)
        finals = {r: max(es, key=lambda e: e["attempt"])["outcome"] for r, es in per_run.items()}
        counts = {o: sum(f == o for f in finals.values())
                  for o in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
        decided = counts["passed"] + counts["failed"] + counts["error"]
        flaky_runs = sum(any(e["outcome"] == "passed" for e in es)
                         and any(e["outcome"] in ("failed", "error") for e in es)
                         for es in per_run.values())
        by_commit: dict[str, set[str]] = defaultdict(set)
        for r, es in per_run.items():
            if commit_of.get(r) is not None:
                by_commit[commit_of[r]].update(e["outcome"] for e in es)
        flaky_commits = sum("passed" in o and bool(o & {"failed", "error"})
                            for o in by_commit.values())
        states = ["P" if e["outcome"] == "passed" else "F" for e in mine
                  if e["outcome"] in ("passed", "failed", "error")][-window:]
        transitions = sum(a != b for a, b in zip(states, states[1:], strict=False))
        failures = [e for e in mine if e["outcome"] in ("failed", "error")]
        durations = [e["duration_s"] for e in mine]
        out[test] = {
            "runs": len(per_run), "attempts": len(mine), "outcomes": counts,
            "pass_rate": counts["passed"] / decided if decided else None,
            "last_outcome": mine[-1]["outcome"], "last_run_id": mine[-1]["run_id"],
            "last_failure": None if not failures else {
                "run_id": failures[-1]["run_id"], "message": failures[-1]["message"]},
            "duration_p50_s": quantile_cont(durations, 0.5),
            "duration_p95_s": quantile_cont(durations, 0.95),
            "retried_runs": sum(len(es) > 1 for es in per_run.values()),
            "flaky_runs": flaky_runs, "flaky_commits": flaky_commits,
            "flaky": flaky_runs + flaky_commits > 0,
            "window": {"size": window, "results": len(states), "transitions": transitions,
                       "score": transitions / (len(states) - 1) if len(states) > 1 else None},
        }
    return out


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return bool(a == b)


def check(item: dict[str, Any], want: dict[str, Any]) -> None:
    for k, v in want.items():
        got = item[k]
        if k == "last_failure" and v is not None:
            got = {kk: got[kk] for kk in v}
        assert close(got, v), (item["test"], k, got, v)


def test_figures_and_flakiness(make_server: Any) -> None:
    evs = events()
    want = expected(evs, WINDOW)
    # The histories exercise what they are meant to: b is flaky in runs, c only across
    # runs of one commit (c1, c3), a only by transitions, d never decided.
    assert want["b"]["flaky_runs"] == 2 and want["c"]["flaky_runs"] == 0
    assert want["c"]["flaky_commits"] == 2 and want["a"]["flaky"] is False
    assert want["a"]["window"]["transitions"] > 0 and want["d"]["pass_rate"] is None
    assert want["e/x.py::t[1]"]["flaky_commits"] == 1  # only through r3's params

    async def main() -> None:
        async with make_server(flaky_window=WINDOW) as client:
            reply = await client.post_events(evs, path="/api/events")
            assert reply.status == 202, reply.body
            last = reply.json()["last_seq"]
            page = (await client.get(f"/api/test/db/tests?min_seq={last}&limit=100")).json()
            assert page["total"] == len(want)
            for item in page["items"]:
                check(item, want[item["test"]])
            for test in want:
                reply = await client.get(f"/api/test/db/test/{quote(test, safe='/:')}?history=3")
                assert reply.status == 200, (test, reply.body)
                detail = reply.json()
                check(detail, want[test])
                mine = [e for e in evs if e["type"] == "result" and e["test"] == test][::-1][:3]
                assert [(h["run_id"], h["attempt"], h["outcome"]) for h in detail["history"]] == [
                    (e["run_id"], e["attempt"], e["outcome"]) for e in mine]
                commits = {"r1": "c1", "r2": "c1", "r3": "c1", "r5": "c3", "r6": "c3"}
                assert [h["commit"] for h in detail["history"]] == [
                    commits.get(e["run_id"]) for e in mine]
            # Filters and sorts, against the same expectations.
            flaky = (await client.get("/api/test/db/tests?flaky=true")).json()
            assert {i["test"] for i in flaky["items"]} == {t for t, w in want.items()
                                                           if w["flaky"]}
            failing = (await client.get("/api/test/db/tests?failing=true")).json()
            assert {i["test"] for i in failing["items"]} == {
                t for t, w in want.items() if w["last_outcome"] in ("failed", "error")}
            found = (await client.get("/api/test/db/tests?q=X.PY")).json()
            assert [i["test"] for i in found["items"]] == ["e/x.py::t[1]"]
            by_flakiness = (await client.get("/api/test/db/tests?sort=-flakiness")).json()
            scores = [w["window"]["score"] for w in
                      (want[i["test"]] for i in by_flakiness["items"])]
            decided = [s for s in scores if s is not None]
            assert decided == sorted(decided, reverse=True)
            assert scores[len(decided):] == [None] * (len(scores) - len(decided))
            by_rate = (await client.get("/api/test/db/tests?sort=-failure_rate&limit=2")).json()
            rates = sorted((1 - w["pass_rate"] for w in want.values()
                            if w["pass_rate"] is not None), reverse=True)
            assert [i["failure_rate"] for i in by_rate["items"]] == rates[:2]
            assert by_rate["total"] == len(want) and by_rate["limit"] == 2
            # A run's summary: each test by its last attempt, plus retried and flaky.
            r5 = (await client.get("/api/test/db/run/r5")).json()["results"]
            assert (r5["total"], r5["retried"], r5["flaky"], r5["passed"], r5["failed"]) == (
                4, 1, 1, 3, 1)
            # Deleting a run takes its results out of every test's figures.
            reply = await client.request("DELETE", "/api/test/db/run/r5")
            assert reply.status == 202, reply.body
            rest = [e for e in evs if e["run_id"] != "r5"]
            after = expected(rest, WINDOW)
            page = (await client.get(
                f"/api/test/db/tests?min_seq={reply.json()['last_seq']}&limit=100")).json()
            assert {i["test"] for i in page["items"]} == set(after)
            for item in page["items"]:
                check(item, after[item["test"]])
            # Bad parameters: a 400 naming the parameter and its allowed values.
            bad = await client.get("/api/test/db/tests?sort=speed")
            assert bad.status == 400 and "flakiness" in bad.json()["error"]["message"]
            bad = await client.get("/api/test/db/tests?flaky=yes")
            assert bad.status == 400 and bad.json()["error"]["details"][0]["allowed"] == [
                "true", "false"]
            missing = await client.get("/api/test/db/test/nope")
            assert missing.status == 404

    asyncio.run(main())
