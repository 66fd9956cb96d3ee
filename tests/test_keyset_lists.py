"""`next` on the tests list and the jobs list (issues 17 and 20, docs/facets.md
"Paging"), against a real server: paging through a list while new rows are posted
between page fetches gives every row that was there from the start exactly once, in
the sort's order, which the test recomputes in plain Python from the events it sent;
a bad or foreign token is a 400 naming `next`."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers.server import Client
from helpers.stats import quantile_cont

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
WINDOW = 30  # the default flaky_window
LIMIT = 7
DURATIONS = [0.5, 2.0, 1.25, 8.0, 3.0]


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


# -- the tests list ---------------------------------------------------------------


def original_results(n: int = 30) -> list[dict[str, Any]]:
    """Results of `n` tests over a few runs: ties on last_seen and on p95 (tests with
    as many results share their durations), tests only ever skipped (no failure rate,
    no flakiness: the nulls that sort last), passing, failing and alternating ones."""
    out = []
    for i in range(n):
        name = f"pkg/test_{i:02d}.py::t"
        for j in range(1 + i % 4):
            kind = i % 5
            if kind == 0:
                outcome = "skipped"
            elif kind == 1:
                outcome = "passed"
            elif kind == 2:
                outcome = "failed"
            else:
                outcome = ("passed", "failed")[(j + kind) % 2]
            out.append({"type": "result", "component": "test", "run_id": f"r{j}",
                        "test": name, "outcome": outcome, "duration_s": DURATIONS[j],
                        "ts": ts(10 * j + i % 3)})
    return out


def arrivals(k: int, rng: random.Random) -> list[dict[str, Any]]:
    """New tests (names never seen) with times before, among and after the others'."""
    return [{"type": "result", "component": "test", "run_id": f"new{k}",
             "test": f"{rng.choice('amz')}new/test_{k}_{m}.py::t",
             "outcome": rng.choice(["passed", "failed", "skipped"]),
             "duration_s": rng.choice(DURATIONS + [0.1, 20.0]),
             "ts": ts(rng.uniform(-20, 60))} for m in range(3)]


def figures_of(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per test, the figures each sort orders by (docs/tests.md definitions)."""
    out = {}
    for name in {r["test"] for r in results}:
        mine = [r for r in results if r["test"] == name]
        mine.sort(key=lambda r: datetime.fromisoformat(r["ts"]))
        decided = [r["outcome"] for r in mine if r["outcome"] != "skipped"]
        states = ["P" if o == "passed" else "F" for o in decided][-WINDOW:]
        flips = sum(a != b for a, b in zip(states, states[1:], strict=False))
        out[name] = {
            "last_seen": max(datetime.fromisoformat(r["ts"]) for r in mine),
            "duration": quantile_cont([r["duration_s"] for r in mine], 0.95),
            "failure_rate": (1 - decided.count("passed") / len(decided)) if decided else None,
            "flakiness": flips / (len(states) - 1) if len(states) > 1 else None,
            "test": name,
        }
    return out


def expected_test_order(results: list[dict[str, Any]], sort: str) -> list[str]:
    """Names in `sort`'s order: the value (nulls last either way), then the name."""
    col, desc = sort.lstrip("-"), sort.startswith("-")
    figures = figures_of(results)
    present = sorted((f for f in figures.values() if f[col] is not None),
                     key=lambda f: f["test"])
    present.sort(key=lambda f: f[col], reverse=desc)  # stable: names stay ascending
    nulls = sorted(f["test"] for f in figures.values() if f[col] is None)
    return [f["test"] for f in present] + nulls


async def page_through(client: Client, path: str, key: str,
                       between: Callable[[int], Awaitable[int]] | None = None,
                       seq: int = 0) -> list[str]:
    """Every row's `key`, page by page through `next`, the first page once the fold
    has `seq`; `between(k)` runs after page k and returns the seq the next fetch
    waits for."""
    sep = "&" if "?" in path else "?"
    reply = await client.get(f"{path}{sep}limit={LIMIT}&min_seq={seq}")
    assert reply.status == 200, reply.body[:300]
    page = reply.json()
    keys, k = [i[key] for i in page["items"]], 0
    while page["next"] is not None:
        assert len(page["items"]) == LIMIT
        seq = 0 if between is None else await between(k)
        k += 1
        reply = await client.get(f"{path}{sep}limit={LIMIT}&min_seq={seq}&next={page['next']}")
        assert reply.status == 200, reply.body[:300]
        page = reply.json()
        assert page["offset"] == k * LIMIT
        keys += [i[key] for i in page["items"]]
    return keys


async def refused_naming_next(client: Client, cases: list[tuple[str, str]]) -> None:
    """Each (path, word): a 400 whose error names the `next` parameter and says `word`."""
    for path, word in cases:
        reply = await client.get(path)
        assert reply.status == 400, (path, reply.body[:300])
        error = reply.json()["error"]
        assert error["details"][0]["parameter"] == "next", path
        assert word in error["message"], (path, error["message"])


async def post(client: Client, events: list[dict[str, Any]]) -> int:
    reply = await client.post_events(events)
    assert reply.status == 202, reply.body[:300]
    return int(reply.json()["last_seq"])


def paged_while_posting(make_server: Any, events: list[dict[str, Any]],
                        more: Callable[[int], list[dict[str, Any]]], path: str,
                        key: str) -> list[str]:
    """Post `events`, then page through `path` by `next`, posting `more(k)` after page
    k (and adding it to `events`): every row's `key`, in the order the pages gave."""
    async def main() -> list[str]:
        async with make_server() as client:
            seq = await post(client, events)

            async def ingest(k: int) -> int:
                new = more(k)
                events.extend(new)
                return await post(client, new)

            return await page_through(client, path, key, ingest, seq)

    return asyncio.run(main())


def assert_once_in_order(ids: list[str], originals: set[str], expected: list[str]) -> None:
    """No row twice, none of `originals` skipped, and the list's order (`expected`,
    over every row posted) kept among the rows seen."""
    seen = Counter(ids)
    assert all(n == 1 for n in seen.values()), [i for i, n in seen.items() if n > 1]
    assert originals <= set(seen)
    assert ids == [i for i in expected if i in seen]


@pytest.mark.parametrize("sort", ["-last_seen", "last_seen", "test", "-test", "-flakiness",
                                  "flakiness", "-failure_rate", "failure_rate", "-duration"])
def test_tests_next_stable_under_concurrent_ingest(make_server: Any, sort: str) -> None:
    rng = random.Random(sort)
    results = original_results()
    originals = {r["test"] for r in results}
    # the data holds what the sorts must get right: ties and nulls
    figures = figures_of(results)
    assert len({f["last_seen"] for f in figures.values()}) < len(figures)
    assert any(f["flakiness"] is None for f in figures.values())
    assert any(f["failure_rate"] is None for f in figures.values())

    names = paged_while_posting(make_server, results, lambda k: arrivals(k, rng),
                                f"/api/test/db/tests?sort={sort}", "test")
    assert len(results) > len(original_results()), "rows arrived between the fetches"
    assert_once_in_order(names, originals, expected_test_order(results, sort))


def test_offset_paging_of_tests_repeats_under_the_same_ingest(make_server: Any) -> None:
    """Why `next` exists: offset paging over the newest first repeats rows when newer
    tests arrive between the fetches."""
    async def main() -> list[str]:
        async with make_server() as client:
            seq = await post(client, original_results())
            names: list[str] = []
            for k in range(3):
                reply = await client.get(f"/api/test/db/tests?limit={LIMIT}&offset={LIMIT * k}"
                                         f"&min_seq={seq}")
                names += [i["test"] for i in reply.json()["items"]]
                seq = await post(client, [{**e, "ts": ts(100 + k)}
                                          for e in arrivals(k, random.Random(k))])
            return names
    names = asyncio.run(main())
    assert len(names) > len(set(names))


def test_tests_next_keeps_the_filters_and_ends_with_null(make_server: Any) -> None:
    results = original_results()
    figures = figures_of(results)
    failing_now = sorted(t for t, f in figures.items() if f["failure_rate"] is not None
                         and [r for r in results if r["test"] == t][-1]["outcome"] == "failed")

    async def main() -> tuple[list[str], Any]:
        async with make_server() as client:
            seq = await post(client, results)
            names = await page_through(client, "/api/test/db/tests?sort=test&failing=true",
                                       "test", seq=seq)
            exact = (await client.get(f"/api/test/db/tests?sort=test&failing=true"
                                      f"&limit={len(failing_now)}")).json()
            return names, exact
    names, exact = asyncio.run(main())
    assert len(failing_now) > LIMIT
    assert names == failing_now
    assert [i["test"] for i in exact["items"]] == failing_now and exact["next"] is None


# -- the jobs list ------------------------------------------------------------------


def job_events(prefix: str, n: int, rng: random.Random, minutes: tuple[int, int]
               ) -> list[dict[str, Any]]:
    """`n` jobs; created times on whole minutes so several jobs share one."""
    return [{"type": "run", "component": "jobs", "run_id": f"{prefix}{i:02d}",
             "name": rng.choice(["convert", "train", "eval"]),
             "ts": ts(rng.randint(*minutes))} for i in range(n)]


def expected_job_order(events: list[dict[str, Any]]) -> list[str]:
    """Newest first, then by job id."""
    by_id = {e["run_id"]: datetime.fromisoformat(e["ts"]) for e in events}
    return [j for j, _ in sorted(sorted(by_id.items()), key=lambda x: x[1], reverse=True)]


def test_jobs_next_stable_under_concurrent_ingest(make_server: Any) -> None:
    rng = random.Random(17)
    jobs = job_events("j", 30, rng, (0, 12))
    assert len({e["ts"] for e in jobs}) < len(jobs)  # ties on created_at

    ids = paged_while_posting(  # older, among and newer jobs between pages
        make_server, jobs, lambda k: job_events(f"n{k}-", 3, rng, (-5, 20)), "/api/jobs",
        "job_id")
    assert any(e["run_id"].startswith("n") for e in jobs)
    assert_once_in_order(ids, {f"j{i:02d}" for i in range(30)}, expected_job_order(jobs))


# -- bad tokens ---------------------------------------------------------------------


def retoken(token: str, **change: Any) -> str:
    """`token` with fields changed: a client may send anything."""
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i, name in enumerate(("version", "sort", "value", "key", "offset", "filters")):
        raw[i] = change.get(name, raw[i])
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


TESTS = "/api/test/db/tests?limit=7"
JOBS = "/api/jobs?limit=7"
# (list, query with {tests}/{jobs}/{runs} tokens, a word the message must hold)
BAD = [
    (TESTS, "next=not-a-token", "not a token"),
    (TESTS, "next=" + "A" * 40, "not a token"),
    (TESTS, "sort=test&next={tests}", "sort"),
    (TESTS, "flaky=true&next={tests}", "filters"),
    (TESTS, "offset=7&next={tests}", "offset"),
    (TESTS, "next={jobs}", "sort"),  # a foreign token: another list's
    (TESTS, "next={runs}", "sort"),
    (TESTS, "next={tests_value_text}", "not a token"),
    (TESTS, "next={tests_value_short}", "not a token"),
    (TESTS, "next={tests_value_naive}", "not a token"),
    (TESTS, "sort=-flakiness&next={flaky_value_text}", "not a token"),
    (TESTS, "next={tests_key_number}", "not a token"),
    (JOBS, "next=not-a-token", "not a token"),
    (JOBS, "offset=7&next={jobs}", "offset"),
    (JOBS, "next={tests}", "sort"),
    (JOBS, "next={jobs_value_number}", "not a token"),
    (JOBS, "next={jobs_value_list}", "not a token"),
    (JOBS, "next={jobs_other_component}", "filters"),
]


def test_bad_next_is_a_400_naming_next(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            seq = await post(client, original_results() + job_events(
                "j", 10, random.Random(1), (0, 5)) + [
                {"type": "run", "component": "lab", "run_id": f"x{i}", "ts": ts(i)}
                for i in range(10)])
            tokens = {}
            for name, path in (("tests", TESTS), ("jobs", JOBS),
                               ("runs", "/api/lab/db/runs?limit=7"),
                               ("flaky", TESTS + "&sort=-flakiness")):
                reply = await client.get(f"{path}&min_seq={seq}")
                tokens[name] = reply.json()["next"]
                assert tokens[name] is not None, name
            t, j = tokens["tests"], tokens["jobs"]
            tokens |= {
                "tests_value_text": retoken(t, value="yesterday"),
                "tests_value_short": retoken(t, value=[]),
                "tests_value_naive": retoken(t, value=["2026-04-01T08:00:00"]),
                "flaky_value_text": retoken(tokens["flaky"], value=["high", 0]),
                "tests_key_number": retoken(t, key=7),
                "jobs_value_number": retoken(j, value=[5]),
                "jobs_value_list": retoken(j, value=[["x"]]),
                "jobs_other_component": retoken(t, sort="-created_at"),
            }
            before = (await client.get(f"{TESTS}&limit=100")).json()
            await refused_naming_next(client, [
                (f"{path}&" + query.format(**tokens), word) for path, query, word in BAD])
            assert (await client.get(f"{TESTS}&limit=100")).json() == before  # nothing changed
    asyncio.run(main())


# -- a run's metrics, logs and results: by seq ---------------------------------------


def child_events(run_id: str, start: int, n: int) -> list[dict[str, Any]]:
    """`n` metric points, log lines and results of one run, numbered from `start`;
    their times go backwards, so only seq orders them as they were posted."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        base = {"component": "lab", "run_id": run_id, "ts": ts(-i)}
        out += [{**base, "type": "metric", "name": "loss", "value": float(i), "step": i},
                {**base, "type": "log", "level": "info", "message": f"line {i}"},
                {**base, "type": "result", "test": f"t{i}", "outcome": "passed"}]
    return out


@pytest.mark.parametrize(("child", "key", "label"), [
    ("metrics", "step", lambda e: e["step"] if e["type"] == "metric" else None),
    ("logs", "message", lambda e: e["message"] if e["type"] == "log" else None),
    ("results", "test", lambda e: e["test"] if e["type"] == "result" else None),
])
def test_run_children_next_by_seq_under_concurrent_ingest(
        make_server: Any, child: str, key: str, label: Callable[[dict[str, Any]], Any]) -> None:
    """Rows of the run posted between fetches come after the cursor: the walk sees every
    row, old and new, once, in the order they were posted."""
    sent = [{"type": "run", "component": "lab", "run_id": "r1", "ts": ts(0)},
            *child_events("r1", 0, 20)]

    async def main() -> list[Any]:
        async with make_server() as client:
            seq = await post(client, sent)

            async def ingest(k: int) -> int:
                new = child_events("r1", 100 + 10 * k, 3) if k < 4 else []
                sent.extend(new)
                return await post(client, new) if new else 0

            return await page_through(client, f"/api/lab/db/run/r1/{child}", key, ingest, seq)

    got = asyncio.run(main())
    want = [v for v in map(label, sent) if v is not None]
    assert len(want) > 20 + 3  # rows arrived between the fetches
    assert got == want


def test_run_children_bad_next_is_a_400(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            seq = await post(client, [
                {"type": "run", "component": "lab", "run_id": r, "ts": ts(0)}
                for r in ("r1", "r2")] + child_events("r1", 0, 10) + child_events("r2", 0, 10))
            base = "/api/lab/db/run/r1/logs?limit=3"
            token = (await client.get(f"{base}&min_seq={seq}")).json()["next"]
            assert token is not None
            await refused_naming_next(client, [
                (f"{base}&next=not-a-token", "not a token"),
                (f"{base}&offset=3&next={token}", "offset"),
                (f"{base}&level=info&next={token}", "filters"),
                (f"/api/lab/db/run/r2/logs?limit=3&next={token}", "filters"),
                (f"/api/lab/db/run/r1/results?limit=3&next={token}", "filters"),
                (f"/api/lab/db/run/r1/metrics?limit=3&next={token}", "filters"),
                (f"{base}&next={retoken(token, value='x')}", "not a token"),
                (f"{base}&next={retoken(token, value=1.5)}", "not a token"),
                (f"{base}&next={retoken(token, value=-1)}", "not a token"),
                (f"{base}&next={retoken(token, value=True)}", "not a token"),
                (f"/api/lab/db/runs?limit=3&next={token}", "sort"),
            ])
    asyncio.run(main())


# -- issue 17: the batches list and a run's raw events --------------------------------


def batch_events(prefix: str, n: int, rng: random.Random, minutes: tuple[int, int]
                 ) -> list[dict[str, Any]]:
    """`n` batches: some only declared, some only named by runs, some both; times on
    whole minutes so several batches share their last activity."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        batch_id, kind = f"{prefix}{i:02d}", i % 3
        if kind != 1:
            out.append({"type": "batch", "component": "lab", "batch_id": batch_id,
                        "ts": ts(rng.randint(*minutes))})
        if kind != 0:
            out += [{"type": "run", "component": "lab", "run_id": f"{batch_id}-r{j}",
                     "batch_id": batch_id, "ts": ts(rng.randint(*minutes))}
                    for j in range(1 + i % 2)]
    return out


def expected_batch_order(events: list[dict[str, Any]]) -> list[str]:
    """Last activity first (the latest of its runs' times, else when it was declared),
    then by batch id."""
    declared: dict[str, datetime] = {}
    last_run: dict[str, datetime] = {}
    for e in events:
        at = datetime.fromisoformat(e["ts"])
        if e["type"] == "batch":
            declared[e["batch_id"]] = min(at, declared.get(e["batch_id"], at))
        else:
            last_run[e["batch_id"]] = max(at, last_run.get(e["batch_id"], at))
    activity = {b: last_run.get(b, declared.get(b)) for b in {*declared, *last_run}}
    return [b for b, _ in sorted(sorted(activity.items()), key=lambda x: x[1], reverse=True)]


def test_batches_next_stable_under_concurrent_ingest(make_server: Any) -> None:
    """New batches posted between fetches neither repeat nor shift the batches that were
    there: each of those comes once, in the list's order."""
    rng = random.Random(1717)
    events = batch_events("b", 30, rng, (0, 12))
    originals = expected_batch_order(events)
    assert len(originals) == 30

    ids = paged_while_posting(  # older, among and newer batches between pages
        make_server, events, lambda k: batch_events(f"n{k}-", 3, rng, (-5, 20)),
        "/api/lab/db/batches", "batch_id")
    assert any(e["batch_id"].startswith("n") for e in events)
    assert_once_in_order(ids, set(originals), expected_batch_order(events))


def test_run_events_next_by_seq_under_concurrent_ingest(make_server: Any) -> None:
    """A run's events posted between fetches come after the cursor: the walk sees every
    event of the run, old and new, once, in the order they were posted (another run's
    events interleaved in the log are not among them)."""
    sent = [{"type": "run", "component": "lab", "run_id": r, "ts": ts(0)} for r in ("r1", "r2")]
    sent += [e for i in range(8) for e in (child_events("r1", i, 1) + child_events("r2", i, 1))]

    async def main() -> list[Any]:
        async with make_server() as client:
            seq = await post(client, sent)

            async def ingest(k: int) -> int:
                new = child_events("r1", 100 + k, 1) + child_events("r2", 100 + k, 1) \
                    if k < 4 else []
                sent.extend(new)
                return await post(client, new) if new else 0

            return await page_through(client, "/api/lab/db/run/r1/events", "seq", ingest, seq)

    got = asyncio.run(main())
    want = [e for e in sent if e["run_id"] == "r1"]
    assert len(want) > 1 + 8 * 3 + 3  # events arrived between the fetches
    assert len(got) == len(want) and got == sorted(got)  # in seq order, none twice
    assert len(set(got)) == len(got)


def test_batches_and_run_events_bad_next_is_a_400(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            seq = await post(client, batch_events("b", 10, random.Random(3), (0, 5))
                             + [{"type": "run", "component": "lab", "run_id": "r1",
                                 "ts": ts(0)}] + child_events("r1", 0, 5))
            batches, events = "/api/lab/db/batches?limit=3", "/api/lab/db/run/r1/events?limit=3"
            b = (await client.get(f"{batches}&min_seq={seq}")).json()["next"]
            e = (await client.get(f"{events}&min_seq={seq}")).json()["next"]
            logs = (await client.get("/api/lab/db/run/r1/logs?limit=2")).json()["next"]
            assert b is not None and e is not None and logs is not None
            before = (await client.get("/api/lab/db/batches?limit=100")).json()
            assert len(before["items"]) == 10
            await refused_naming_next(client, [
                (f"{batches}&next=not-a-token", "not a token"),
                (f"{batches}&offset=3&next={b}", "offset"),
                (f"{batches}&next={e}", "sort"),
                (f"/api/other/db/batches?limit=3&next={b}", "filters"),
                (f"{batches}&next={retoken(b, value=['x'])}", "not a token"),
                (f"{batches}&next={retoken(b, value=[1.5])}", "not a token"),
                (f"{batches}&next={retoken(b, value=['2026-04-01T08:00:00'])}", "not a token"),
                (f"{batches}&next={retoken(b, value='2026-04-01T08:00:00Z')}", "not a token"),
                (f"{events}&next=not-a-token", "not a token"),
                (f"{events}&offset=3&next={e}", "offset"),
                (f"{events}&next={b}", "sort"),
                (f"{events}&next={logs}", "filters"),  # another list of the same run
                (f"/api/lab/db/run/r2/events?limit=3&next={e}", "filters"),
                (f"{events}&next={retoken(e, value='x')}", "not a token"),
                (f"{events}&next={retoken(e, value=1.5)}", "not a token"),
                (f"{events}&next={retoken(e, value=-1)}", "not a token"),
            ])
            assert (await client.get("/api/lab/db/batches?limit=100")).json() == before
    asyncio.run(main())


# -- issue 17: models/stats and hardware/stats, most runs first ------------------------


def stats_runs(prefix: str, rng: random.Random, names: list[str | None], most: int
               ) -> list[dict[str, Any]]:
    """Runs for each of `names` (None: runs without a model or hardware), 1 to `most`
    each, so counts tie."""
    out = []
    for i, name in enumerate(names):
        for j in range(rng.randint(1, most)):
            run: dict[str, Any] = {"type": "run", "component": "lab",
                                   "run_id": f"{prefix}{i}-{j}", "ts": ts(j)}
            if name is not None:
                run["model"] = run["hardware"] = name
            out.append(run)
    return out


def expected_stats_order(events: list[dict[str, Any]], by: str) -> list[str | None]:
    """Most runs first, then by name, the runs without one last."""
    counts = Counter(e.get(by) for e in events)
    return sorted(counts, key=lambda n: (-counts[n], n is None, n or ""))


@pytest.mark.parametrize(("by", "path"), [("model", "models"), ("hardware", "hardware")])
def test_stats_next_under_concurrent_ingest(make_server: Any, by: str, path: str) -> None:
    """New models/hardware posted between fetches (and more runs of ones the walk has
    passed) repeat nothing and skip none of the others: each comes once, in the
    list's order, the unnamed group last among its count."""
    rng = random.Random(by)
    names: list[str | None] = [f"m{i:02d}" for i in range(20)] + [None]
    events = stats_runs("o", rng, names, 4)
    originals = set(expected_stats_order(events, by))
    assert len(originals) == 21

    first = expected_stats_order(events, by)[0]

    async def main() -> list[Any]:
        async with make_server() as client:
            seq = await post(client, events)

            async def ingest(k: int) -> int:
                new = stats_runs(f"n{k}-", rng, [f"{rng.choice('az')}new{k}"], 4)
                # more runs for the first group already paged: it only moves further ahead
                new += stats_runs(f"x{k}-", rng, [first], 2)
                events.extend(new)
                return await post(client, new)

            return await page_through(client, f"/api/lab/db/{path}/stats", by, ingest, seq)

    got = asyncio.run(main())
    seen = Counter(got)
    assert any(e["run_id"].startswith("n") for e in events)
    assert all(n == 1 for n in seen.values()), [m for m, n in seen.items() if n > 1]
    assert originals <= set(seen)
    assert got == [m for m in expected_stats_order(events, by) if m in seen]


def test_stats_bad_next_is_a_400(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            seq = await post(client, stats_runs("o", random.Random(5), [f"m{i}" for i in range(9)]
                                                + [None], 3))
            path = "/api/lab/db/models/stats?limit=3"
            token = (await client.get(f"{path}&min_seq={seq}")).json()["next"]
            batches = (await client.get("/api/lab/db/batches?limit=1")).json()["next"]
            assert token is not None
            await refused_naming_next(client, [
                (f"{path}&next=not-a-token", "not a token"),
                (f"{path}&offset=3&next={token}", "offset"),
                (f"/api/lab/db/hardware/stats?limit=3&next={token}", "filters"),
                (f"/api/other/db/models/stats?limit=3&next={token}", "filters"),
                (f"{path}&next={retoken(token, value=['x'])}", "not a token"),
                (f"{path}&next={retoken(token, value=[True])}", "not a token"),
                (f"{path}&next={retoken(token, value=[1, 2])}", "not a token"),
                (f"{path}&next={retoken(token, value=3)}", "not a token"),
            ] + ([(f"{path}&next={batches}", "sort")] if batches else []))
    asyncio.run(main())


# -- issue 17: a job's log lines, oldest first ------------------------------------------


def job_log_lines(job_id: str, start: int, n: int, rng: random.Random, minutes: tuple[int, int]
                  ) -> list[dict[str, Any]]:
    """`n` log lines of the job; times on whole minutes so lines share them (seq breaks
    the tie), and output lines (stdout) the list leaves out."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        out.append({"type": "log", "component": "jobs", "run_id": job_id, "level": "info",
                    "message": f"line {i}", "ts": ts(rng.randint(*minutes))})
        if i % 4 == 0:
            out.append({"type": "log", "component": "jobs", "run_id": job_id,
                        "level": "info", "message": f"[stdout] out {i}", "ts": ts(0)})
    return out


def test_job_logs_next_under_concurrent_ingest(make_server: Any) -> None:
    """Lines posted between fetches land before the cursor (earlier times) or after it:
    the lines that were there come once each, in (time, posted) order."""
    rng = random.Random(2017)
    sent = [{"type": "run", "component": "jobs", "run_id": "j1", "ts": ts(0)},
            *job_log_lines("j1", 0, 30, rng, (0, 10)),
            {"type": "run", "component": "jobs", "run_id": "j2", "ts": ts(0)},
            *job_log_lines("j2", 0, 5, rng, (0, 10))]
    originals = {e["message"] for e in sent if e["type"] == "log" and e["run_id"] == "j1"
                 and e["message"].startswith("line")}

    async def main() -> list[str]:
        async with make_server() as client:
            seq = await post(client, sent)

            async def ingest(k: int) -> int:
                new = job_log_lines("j1", 100 + 3 * k, 3, rng, (-5, 15))
                sent.extend(new)
                return await post(client, new)

            return await page_through(client, "/api/jobs/j1/logs", "message", ingest, seq)

    got = asyncio.run(main())
    mine = [e for e in sent if e["type"] == "log" and e["run_id"] == "j1"
            and e["message"].startswith("line")]
    want = [e["message"] for e in sorted(mine, key=lambda e: datetime.fromisoformat(e["ts"]))]
    seen = Counter(got)
    assert len(mine) > len(originals)  # lines arrived between the fetches
    assert all(n == 1 for n in seen.values()), [m for m, n in seen.items() if n > 1]
    assert originals <= set(seen)
    assert got == [m for m in want if m in seen]  # stable sort: posted order breaks ties


def test_job_logs_bad_next_is_a_400(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            rng = random.Random(4)
            seq = await post(client, [
                {"type": "run", "component": "jobs", "run_id": j, "ts": ts(0)} for j in
                ("j1", "j2")] + job_log_lines("j1", 0, 10, rng, (0, 3))
                + job_log_lines("j2", 0, 10, rng, (0, 3)))
            path = "/api/jobs/j1/logs?limit=3"
            token = (await client.get(f"{path}&min_seq={seq}")).json()["next"]
            jobs = (await client.get("/api/jobs?limit=1")).json()["next"]
            assert token is not None and jobs is not None
            await refused_naming_next(client, [
                (f"{path}&next=not-a-token", "not a token"),
                (f"{path}&offset=3&next={token}", "offset"),
                (f"/api/jobs/j2/logs?limit=3&next={token}", "filters"),
                (f"{path}&next={jobs}", "sort"),
                (f"{path}&next={retoken(token, value=['x'])}", "not a token"),
                (f"{path}&next={retoken(token, value=['2026-04-01T08:00:00'])}", "not a token"),
                (f"{path}&next={retoken(token, key='x')}", "not a token"),
                (f"{path}&next={retoken(token, key='-1')}", "not a token"),
                (f"{path}&next={retoken(token, key='9' * 40)}", "not a token"),
            ])
    asyncio.run(main())


# -- issue 17: the models x hardware cells, by key ---------------------------------------


def cell_runs(prefix: str, cells: list[tuple[str | None, str | None]], n: int
              ) -> list[dict[str, Any]]:
    out = []
    for i, (model, hardware) in enumerate(cells):
        for j in range(n):
            run: dict[str, Any] = {"type": "run", "component": "lab",
                                   "run_id": f"{prefix}{i}-{j}", "ts": ts(j)}
            if model is not None:
                run["model"] = model
            if hardware is not None:
                run["hardware"] = hardware
            out.append(run)
    return out


def cell_order(cells: Any) -> list[tuple[str | None, str | None]]:
    """By model, then hardware, each with the missing ones last."""
    return sorted(set(cells), key=lambda c: (c[0] is None, c[0] or "", c[1] is None, c[1] or ""))


def test_model_hardware_next_under_concurrent_ingest(make_server: Any) -> None:
    """A cell's key never changes: every cell there from the start comes once, in key
    order, while new cells and more runs of old ones are posted between fetches."""
    rng = random.Random(21)
    models: list[str | None] = ["a", "b", "c", None]
    hardware: list[str | None] = ["h1", "h2", "h3", None]
    originals = [(m, h) for m in models for h in hardware if rng.random() < 0.8]
    events = cell_runs("o", originals, 1)

    async def main() -> list[tuple[Any, Any]]:
        async with make_server() as client:
            seq = await post(client, events)
            got: list[tuple[Any, Any]] = []
            reply = await client.get(f"/api/lab/db/models/hardware?limit=3&min_seq={seq}")
            page, k = reply.json(), 0
            got += [(i["model"], i["hardware"]) for i in page["items"]]
            while page["next"] is not None:
                new = cell_runs(f"n{k}-", [(rng.choice(["0", "bb", "z", None]),
                                            rng.choice(["h0", "h9", None])),
                                           rng.choice(originals)], 2)
                events.extend(new)
                seq, k = await post(client, new), k + 1
                reply = await client.get(f"/api/lab/db/models/hardware?limit=3&min_seq={seq}"
                                         f"&next={page['next']}")
                assert reply.status == 200, reply.body[:300]
                page = reply.json()
                got += [(i["model"], i["hardware"]) for i in page["items"]]
            return got

    got = asyncio.run(main())
    seen = Counter(got)
    assert len(originals) > 6 and len(events) > len(originals)
    assert all(n == 1 for n in seen.values()), [c for c, n in seen.items() if n > 1]
    assert set(originals) <= set(seen)
    assert got == cell_order(got)


def test_model_hardware_bad_next_is_a_400(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            seq = await post(client, cell_runs("o", [(m, h) for m in ("a", "b", None)
                                                     for h in ("x", None)], 1))
            path = "/api/lab/db/models/hardware?limit=2"
            token = (await client.get(f"{path}&min_seq={seq}")).json()["next"]
            stats = (await client.get("/api/lab/db/models/stats?limit=1")).json()["next"]
            assert token is not None and stats is not None
            await refused_naming_next(client, [
                (f"{path}&next=not-a-token", "not a token"),
                (f"{path}&offset=2&next={token}", "offset"),
                (f"/api/other/db/models/hardware?limit=2&next={token}", "filters"),
                (f"{path}&next={stats}", "sort"),
                (f"{path}&next={retoken(token, value=[1])}", "not a token"),
                (f"{path}&next={retoken(token, value=['a', 'b'])}", "not a token"),
            ])
    asyncio.run(main())


# -- issue 17: performance groups, by key ---------------------------------------------------


def perf_events(prefix: str, cells: list[tuple[str | None, str | None]], metrics: list[str]
                ) -> list[dict[str, Any]]:
    """A run per (model, hardware) cell with a point of each metric, a day ago (inside
    the default 30-day window)."""
    when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    out: list[dict[str, Any]] = []
    for i, (model, hardware) in enumerate(cells):
        run: dict[str, Any] = {"type": "run", "component": "lab", "run_id": f"{prefix}{i}",
                               "ts": when}
        if model is not None:
            run["model"] = model
        if hardware is not None:
            run["hardware"] = hardware
        out.append(run)
        out += [{"type": "metric", "component": "lab", "run_id": f"{prefix}{i}", "name": m,
                 "value": 1.0, "ts": when} for m in metrics]
    return out


def group_order(groups: Any) -> list[tuple[Any, Any, Any]]:
    return sorted(set(groups), key=lambda g: (g[0] is None, g[0] or "", g[1] is None,
                                              g[1] or "", g[2]))


def test_performance_next_under_concurrent_ingest(make_server: Any) -> None:
    """A group's key never changes: every group there from the start comes once, in
    key order, while new groups and more points of old ones arrive between fetches."""
    cells = [(m, h) for m in ("a", "b", None) for h in ("x", "y", None)]
    events = perf_events("o", cells, ["loss", "acc"])
    originals = {(m, h, n) for m, h in cells for n in ("loss", "acc")}
    rng = random.Random(99)

    async def main() -> list[tuple[Any, Any, Any]]:
        async with make_server() as client:
            seq = await post(client, events)
            got: list[tuple[Any, Any, Any]] = []
            reply = await client.get(f"/api/lab/db/performance?limit=4&min_seq={seq}")
            page, k = reply.json(), 0
            got += [(i["model"], i["hardware"], i["metric"]) for i in page["items"]]
            while page["next"] is not None:
                new = perf_events(f"n{k}-", [(rng.choice(["0", "ab", "c", None]),
                                              rng.choice(["w", "z", None]))],
                                  [rng.choice(["acc", "zz", "b"])])
                new += perf_events(f"x{k}-", [rng.choice(cells)], ["loss"])
                events.extend(new)
                seq, k = await post(client, new), k + 1
                reply = await client.get(f"/api/lab/db/performance?limit=4&min_seq={seq}"
                                         f"&next={page['next']}")
                assert reply.status == 200, reply.body[:300]
                page = reply.json()
                assert page["offset"] == 4 * k
                got += [(i["model"], i["hardware"], i["metric"]) for i in page["items"]]
            return got

    got = asyncio.run(main())
    seen = Counter(got)
    assert all(n == 1 for n in seen.values()), [g for g, n in seen.items() if n > 1]
    assert originals <= set(seen)
    assert len(seen) > len(originals)  # some new groups landed after the cursor
    assert got == group_order(got)


def test_performance_bad_next_is_a_400(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            seq = await post(client, perf_events("o", [("a", "x"), ("b", None), (None, None)],
                                                 ["loss", "acc"]))
            path = "/api/lab/db/performance?limit=2"
            token = (await client.get(f"{path}&min_seq={seq}")).json()["next"]
            cells = (await client.get("/api/lab/db/models/hardware?limit=1")).json()["next"]
            assert token is not None and cells is not None
            await refused_naming_next(client, [
                (f"{path}&next=not-a-token", "not a token"),
                (f"{path}&offset=2&next={token}", "offset"),
                (f"{path}&days=7&next={token}", "filters"),
                (f"{path}&metric=loss&next={token}", "filters"),
                (f"{path}&next={cells}", "sort"),
                (f"{path}&next={retoken(token, value=[1, 'x'])}", "not a token"),
                (f"{path}&next={retoken(token, value=['a'])}", "not a token"),
                (f"{path}&next={retoken(token, value='a')}", "not a token"),
            ])
    asyncio.run(main())
