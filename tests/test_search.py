"""Search (`/api/db/search`, `/api/{c}/db/search`) against a real server: what it finds
is checked against a plain-Python case-insensitive substring test over the events the
test posted, folded here by hand (latest attribute, tag and status by time; deleted
runs gone; a run matching in several places counted once)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from helpers.server import Client

from runlake.api.keys import add_key

MakeServer = Callable[..., Any]
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
COMPONENTS = ("test", "generator", "bench")
# Searchable words: mixed case, LIKE's own characters (% _ \) and non-ASCII letters,
# so that a query is taken literally and case is ignored wherever it lies.
WORDS = (
    "Llama-3-8B", "llama_3", "MiStRaL-7b", "bert-base", "A100", "h100-SXM", "50%", "100%_done",
    "path\\to\\ckpt", "a_b", "a%b", "AxB", "Ärger", "ärger im büro", "OOM: out of memory",
    "CUDA error", "unit-tests", "e2e", "team-Llama", "prod", "Σigma", "x\\_y",
)


@dataclass
class Run:
    """A run as the fold should hold it: the searchable text of each kind."""

    component: str
    run_id: str
    updated: int = 0  # the latest event's minute since START
    attrs: dict[str, str] = field(default_factory=dict)  # model, hardware, batch_id, name
    error: str | None = None  # the latest status event's
    tags: dict[str, str] = field(default_factory=dict)
    steps: set[str] = field(default_factory=set)
    logs: list[str] = field(default_factory=list)
    tests: set[str] = field(default_factory=set)

    def texts(self) -> list[str]:
        return [self.run_id, *self.attrs.values(), *([self.error] if self.error else []),
                *self.tags, *self.tags.values(), *self.steps, *self.logs, *self.tests]


class History:
    """Events in posting order (their times increase too) and the runs they leave."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.runs: dict[tuple[str, str], Run] = {}
        self.minute = 0

    def add(self, component: str, run_id: str, typ: str, same_time: bool = False,
            **fields: Any) -> None:
        """The event one minute after the last (`same_time`: at the last one's time)."""
        self.minute += 0 if same_time else 1
        ts = (START + timedelta(minutes=self.minute)).isoformat().replace("+00:00", "Z")
        self.events.append({"type": typ, "component": component, "run_id": run_id,
                            "ts": ts, **fields})
        key = (component, run_id)
        if typ == "delete":
            self.runs.pop(key, None)
            return
        run = self.runs.setdefault(key, Run(component, run_id))
        run.updated = self.minute
        if typ == "run":
            run.attrs.update(fields)
        elif typ == "status":
            run.error = fields.get("error")
        elif typ == "tag":
            run.tags[fields["key"]] = fields["value"]
        elif typ == "step":
            run.steps.add(fields["step"])
        elif typ == "log":
            run.logs.append(fields["message"])
        elif typ == "result":
            run.tests.add(fields["test"])

    def expected(self, query: str, components: tuple[str, ...], limit: int
                 ) -> tuple[dict[str, list[str]], dict[str, int]]:
        """Each component's matching runs, newest first, and their counts."""
        needle = query.lower()
        results: dict[str, list[str]] = {}
        counts: dict[str, int] = {}
        for c in components:
            hits = [r for r in self.runs.values()
                    if r.component == c and any(needle in t.lower() for t in r.texts())]
            hits.sort(key=lambda r: (-r.updated, r.run_id))
            results[c] = [r.run_id for r in hits[:limit]]
            counts[c] = len(hits)
        return results, {**counts, "total": sum(counts.values())}


def history(seed: int = 21) -> History:
    rng = random.Random(seed)
    h = History()

    def word() -> str:
        return rng.choice(WORDS)

    for i in range(60):
        c = COMPONENTS[i % len(COMPONENTS)]
        rid = f"run-{i}" if i % 7 else f"R_{i}%"
        attrs = {k: word() for k in ("model", "hardware", "batch_id", "name") if rng.random() < 0.6}
        h.add(c, rid, "run", **attrs)
        if rng.random() < 0.3:  # a later value replaces the first: the old one is not found
            h.add(c, rid, "run", model=word())
        h.add(c, rid, "status", status="running")
        if rng.random() < 0.4:
            h.add(c, rid, "status", status="failed", error=word())
            if rng.random() < 0.3:  # retried and passed: the error is gone
                h.add(c, rid, "status", status="completed")
        for _ in range(rng.randint(0, 2)):
            h.add(c, rid, "tag", key=rng.choice(("team", "env", "Σ_key")), value=word())
        for _ in range(rng.randint(0, 2)):
            h.add(c, rid, "step", step=word(), status="completed")
        for _ in range(rng.randint(0, 2)):
            h.add(c, rid, "log", level="info", message=f"{word()} then {word()}")
        for _ in range(rng.randint(0, 2)):
            h.add(c, rid, "result", test=f"tests/t.py::{word()}", outcome="passed")
    # Deleted runs are not found; one deleted run starts afresh with a single log line.
    for c, rid in (("test", "run-3"), ("generator", "run-4"), ("bench", "run-5")):
        h.add(c, rid, "delete")
    h.add("generator", "run-4", "log", level="info", message="reborn after delete")
    return h


def queries(h: History, seed: int = 22) -> list[str]:
    """Fixed edge cases, and substrings of posted text (of deleted runs' too) in random case."""
    rng = random.Random(seed)
    texts = sorted({t for e in h.events for k, t in e.items()
                    if k not in ("type", "component", "ts", "status", "level", "outcome")})
    fixed = ["%", "_", "\\", "a%b", "A_B", "x\\_y", "\\to\\", "llama", "LLAMA-3", "ÄRGER",
             "σigma", "reborn", "no such word anywhere", "run-", "R_", "then", "::", "%_"]
    picked = []
    for _ in range(40):
        text = rng.choice(texts)
        start = rng.randrange(len(text))
        piece = text[start:start + rng.randint(1, 6)]
        picked.append("".join(ch.upper() if rng.random() < 0.5 else ch for ch in piece))
    return fixed + picked


async def search(client: Client, path: str, query: str, limit: int, last: int,
                 key: str | None = None) -> dict[str, Any]:
    url = f"{path}?{urlencode({'query': query, 'limit': limit, 'min_seq': last})}"
    headers = {"X-API-Key": key} if key else None
    reply = await client.request("GET", url, headers=headers, content_type=None)
    assert reply.status == 200, (query, reply.body)
    return reply.json()


def found(body: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, int]]:
    return ({c: [r["run_id"] for r in runs] for c, runs in body["results"].items()},
            body["result_counts"])


def test_search_finds_what_a_substring_check_finds(make_server: MakeServer) -> None:
    h = history()

    async def main() -> None:
        async with make_server() as client:
            reply = await client.post_events(h.events)
            assert reply.status == 202, reply.body
            last = reply.json()["last_seq"]
            for query in queries(h):
                for limit in (1000, 2):  # every match, then the first two in rank order
                    body = await search(client, "/api/db/search", query, limit, last)
                    assert found(body) == h.expected(query, COMPONENTS, limit), query
                    assert body["query"] == query
                one = await search(client, "/api/generator/db/search", query, 1000, last)
                assert found(one) == h.expected(query, ("generator",), 1000), query

    asyncio.run(main())


def test_search_with_a_component_limited_key(make_server: MakeServer, tmp_path: Any) -> None:
    h = history(seed=5)
    keys_path = tmp_path / "data" / "keys.json"
    admin = add_key(keys_path, "admin", name="admin")[1]
    bench_only = add_key(keys_path, "read", ["bench"], name="bench-reader")[1]

    async def main() -> None:
        async with make_server() as client:
            reply = await client.request("POST", "/api/events", json=h.events,
                                         headers={"X-API-Key": admin})
            assert reply.status == 202, reply.body
            last = reply.json()["last_seq"]
            for query in ("llama", "a", "%", "run-1"):
                body = await search(client, "/api/db/search", query, 1000, last, bench_only)
                assert found(body) == h.expected(query, ("bench",), 1000), query

    asyncio.run(main())


def test_a_run_matching_in_several_places_counts_once(make_server: MakeServer) -> None:
    h = History()
    h.add("test", "needle-run", "run", model="needle-model", name="NEEDLE")
    h.add("test", "needle-run", "tag", key="needle", value="needle")
    h.add("test", "needle-run", "log", level="info", message="a needle")
    h.add("test", "needle-run", "log", level="info", message="another needle")
    h.add("test", "needle-run", "result", test="t::needle", outcome="passed")
    h.add("test", "hay", "run", model="hay")

    async def main() -> None:
        async with make_server() as client:
            reply = await client.post_events(h.events)
            assert reply.status == 202, reply.body
            body = await search(client, "/api/db/search", "needle", 20,
                                reply.json()["last_seq"])
            assert body["result_counts"] == {"test": 1, "total": 1}
            assert [r["run_id"] for r in body["results"]["test"]] == ["needle-run"]

    asyncio.run(main())


def test_runs_updated_at_the_same_time_rank_by_run_id(make_server: MakeServer) -> None:
    h = History()
    h.add("test", "tie-old", "run", name="tie")
    for rid in ("tie-c", "tie-a", "tie-d", "tie-b"):
        h.add("test", rid, "run", name="tie", same_time=rid != "tie-c")
    h.add("test", "tie-new", "run", name="tie")

    async def main() -> None:
        async with make_server() as client:
            reply = await client.post_events(h.events)
            assert reply.status == 202, reply.body
            last = reply.json()["last_seq"]
            for limit in (1, 2, 3, 5, 6, 7):
                body = await search(client, "/api/db/search", "TIE", limit, last)
                assert found(body) == h.expected("TIE", ("test",), limit), limit
            assert found(body)[0]["test"] == ["tie-new", "tie-a", "tie-b", "tie-c", "tie-d",
                                              "tie-old"]

    asyncio.run(main())
