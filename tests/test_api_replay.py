"""`POST /api/db/replay`: a running server rebuilds its database from the log and swaps
it in, while reads keep answering from the old file and appends keep landing."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.compare import assert_same_json
from helpers.databases import assert_same_database, dump_database
from helpers.server import Client, wait_replay

from runlake import demo
from runlake.api.state import DATABASE
from runlake.ingest import replay as replay_module

MakeServer = Callable[..., Any]
# The demo stream ends at the start of today (UTC), fixed for the session, and spans
# 60 days: a 90-day performance window holds all of it.
NOW = int(time.time()) // 86_400 * 86_400
READS = ("/api/test/db/models/stats", "/api/generator/db/hardware/stats",
         "/api/benchmark/db/runs?limit=1000&sort=run_id", "/api/db/overview",
         "/api/test/db/batches?limit=1000",
         "/api/generator/db/performance?days=90&limit=1000")


async def post_demo(client: Client, runs: int, seed: int) -> int:
    """POST a demo stream plus a run delete; returns the last seq."""
    events = await asyncio.to_thread(
        lambda: list(demo.generate(runs, seed=seed, now=NOW, with_ids=True)))
    victim = next(e for e in events if e["type"] == "run")
    events.append({"type": "delete", "component": victim["component"],
                   "run_id": victim["run_id"]})
    last = 0
    for start in range(0, len(events), 5_000):
        reply = await client.post_events(events[start:start + 5_000], ndjson=True)
        assert reply.status == 202, reply.body
        last = reply.json()["last_seq"]
    return last


async def answers(client: Client, min_seq: int | None = None) -> dict[str, Any]:
    """Each of READS' bodies; with `min_seq`, once the fold has passed it."""
    out = {}
    for path in READS:
        sep = "&" if "?" in path else "?"
        query = "" if min_seq is None else f"{sep}min_seq={min_seq}"
        reply = await client.get(f"{path}{query}")
        assert reply.status == 200, (path, reply.body)
        out[path] = undated(reply.json())
    return out


def undated(body: Any) -> Any:
    """`body` without a performance report's window dates, checked here instead: they
    follow the server's today, which may pass midnight between two compared reads."""
    if not isinstance(body, dict) or "until" not in body:
        return body
    body = dict(body)
    until, since = date.fromisoformat(body.pop("until")), date.fromisoformat(body.pop("since"))
    today = datetime.now(UTC).date()
    assert until in (today, today - timedelta(days=1)), until
    assert (until - since).days == body["days"] - 1, (since, until)
    return body


RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def rfc3339(value: Any) -> datetime:
    """`value` as an RFC 3339 UTC time string says, else an assertion error."""
    assert isinstance(value, str) and RFC3339_UTC.fullmatch(value), value
    return datetime.fromisoformat(value)


def test_replay_while_serving(make_server: MakeServer, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The replay's build is held until the test has done what it does "while the
    # replay runs"; left alone, a fast build could finish before the second POST.
    release = threading.Event()
    real_build = replay_module.build

    def build(*args: Any, **kwargs: Any) -> int:
        release.wait()  # set by the test, pass or fail
        return real_build(*args, **kwargs)

    monkeypatch.setattr(replay_module, "build", build)
    asyncio.run(_replay_while_serving(make_server, tmp_path, release))


@contextlib.asynccontextmanager
async def set_on_exit(event: threading.Event) -> AsyncIterator[None]:
    """Sets `event` on the way out, pass or fail (before the server stops and waits
    for a replay held on it)."""
    try:
        yield
    finally:
        event.set()


async def _replay_while_serving(make_server: MakeServer, tmp_path: Path,
                                release: threading.Event) -> None:
    async with make_server() as client, set_on_exit(release):
        assert (await client.get("/api/db/replay")).json()["state"] == "idle"
        last = await post_demo(client, 1_500, seed=3)
        before = await answers(client, last)
        assert before[READS[-1]]["total"] > 0, "the demo's metrics should be in the report"
        # The same reads as `during` below, without min_seq: nothing is appended between
        # the two (the late events come after `during`), so they must answer the same.
        plain = await answers(client)
        assert_same_json(plain, before, "without min_seq")

        asked = datetime.now(UTC)
        started = await client.request("POST", "/api/db/replay")
        assert started.status == 202, started.body
        assert started.json()["state"] == "running"
        assert started.json()["total"] == last
        assert started.json()["finished_at"] is None
        again = await client.request("POST", "/api/db/replay")
        assert again.status == 409 and again.json()["error"]["code"] == "conflict"

        # While it runs: reads answer (from the old file), appends are acknowledged.
        during = [await client.get(path) for path in READS]
        assert [r.status for r in during] == [200] * len(READS)
        for path, reply in zip(READS, during, strict=True):
            assert_same_json(undated(reply.json()), plain[path], f"during the replay: {path}")
        late = await post_demo(client, 100, seed=4)
        assert (await client.get("/api/db/replay")).json()["state"] == "running"

        release.set()
        status = await wait_replay(client)
        done = datetime.now(UTC)
        assert status["state"] == "done", status
        assert status["error"] is None and status["events"] >= last
        # Times as everywhere in the API: RFC 3339, UTC; in the order they happened.
        begun, ended = rfc3339(status["started_at"]), rfc3339(status["finished_at"])
        assert begun == rfc3339(started.json()["started_at"])
        assert asked <= begun <= ended <= done, (asked, begun, ended, done)

        after = await answers(client, late)  # events appended during the replay are there
        runs_before = {r["run_id"] for r in before[READS[2]]["items"]}
        runs_after = {r["run_id"] for r in after[READS[2]]["items"]}
        assert runs_before < runs_after, "the late runs should show after the swap"

        replayed = await client.app[DATABASE].read(dump_database)

    # The swapped-in file holds what the fold alone builds from the same log.
    shutil.copytree(tmp_path / "data" / "log", tmp_path / "fresh" / "log")
    async with make_server(data=tmp_path / "fresh") as fresh:
        assert_same_json(await answers(fresh, late), after)
        refolded = await fresh.app[DATABASE].read(dump_database)
    assert_same_database(replayed, refolded, "replayed while serving vs folded from scratch")


def test_replay_while_reads_keep_coming(make_server: MakeServer) -> None:
    """Reads racing the swap wait for the new file: none fails."""
    asyncio.run(_replay_while_reads_keep_coming(make_server))


async def _replay_while_reads_keep_coming(make_server: MakeServer) -> None:
    async with make_server() as client:
        last = await post_demo(client, 600, seed=5)
        expected = await answers(client, last)
        # Nothing is appended from here on: every read, on either side of a swap, must
        # answer what the same read without min_seq answers now.
        plain = await answers(client)
        assert_same_json(plain, expected, "without min_seq")
        stop = asyncio.Event()
        statuses: list[int] = []

        async def reader() -> None:
            while not stop.is_set():
                for path in READS:
                    reply = await client.get(path)
                    statuses.append(reply.status)
                    if reply.status == 200:
                        assert_same_json(undated(reply.json()), plain[path],
                                         f"racing a swap: {path}")

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        for _ in range(3):
            assert (await client.request("POST", "/api/db/replay")).status == 202
            assert (await wait_replay(client))["state"] == "done"
        stop.set()
        await asyncio.gather(*readers)
        assert statuses and set(statuses) == {200}  # so every answer was compared
        assert_same_json(await answers(client, last), expected)
