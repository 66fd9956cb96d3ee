"""A run's metric summary (`run_metric_summary`, kept by the fold) as the run detail and
the export's run documents show it, against a plain-Python summary of the points the
test posted: points out of `ts` order across batches, ties in `ts`, units arriving
late, a run deleted and re-posted, a batch deleted, and a replay giving the same rows.

Values are multiples of 1/4, so every sum is exact in any order and means compare
exactly. Each post is read back with `min_seq` before the next: each is its own batch.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from helpers.server import Client, wait_replay

from runlake.api.state import DATABASE

MakeServer = Callable[..., Any]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
C = "gen"


def at(minute: int) -> str:
    return (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")


def point(run_id: str, name: str, value: float, minute: int,
          unit: str | None = None) -> dict[str, Any]:
    event = {"type": "metric", "component": C, "run_id": run_id, "name": name,
             "value": value, "ts": at(minute)}
    return event if unit is None else {**event, "unit": unit}


def expected(posted: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per live run, its metric summary as `/run/{id}` lists it (by name), from the
    events in posting order (= seq order): a delete drops the run's earlier points, or
    those of the runs whose latest `batch_id` by (ts, seq) is the deleted batch."""
    points: dict[str, list[tuple[str, float, str | None, str, int]]] = defaultdict(list)
    batch_of: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for seq, e in enumerate(posted):
        if e["type"] == "delete":
            doomed = [e["run_id"]] if "run_id" in e else [
                r for r, b in batch_of.items() if b and max(b)[2] == e["batch_id"]]
            for r in doomed:
                points.pop(r, None)
                batch_of.pop(r, None)
        elif e["type"] == "run":
            batch_of[e["run_id"]].append((e["ts"], seq, e["batch_id"]))
        elif e["type"] == "metric":
            points[e["run_id"]].append((e["name"], e["value"], e.get("unit"), e["ts"], seq))
    out = {}
    for run_id, pts in points.items():
        by_name: dict[str, list[tuple[float, str | None, str, int]]] = defaultdict(list)
        for name, value, unit, ts, seq in pts:
            by_name[name].append((value, unit, ts, seq))
        rows = []
        for name in sorted(by_name):
            ps = by_name[name]
            values = [p[0] for p in ps]
            units = [p[1] for p in ps if p[1] is not None]
            rows.append({"name": name, "unit": min(units) if units else None,
                         "count": len(values), "mean": math.fsum(values) / len(values),
                         "min": min(values), "max": max(values),
                         "last": max(ps, key=lambda p: (p[2], p[3]))[0]})
        out[run_id] = rows
    return out


async def post(client: Client, posted: list[dict[str, Any]], events: list[dict[str, Any]]
               ) -> int:
    reply = await client.post_events(events)
    assert reply.status == 202, reply.body
    posted.extend(events)
    last: int = reply.json()["last_seq"]
    # Folded before the next post: the next post is a batch of its own.
    assert (await client.get(f"/api/db/overview?min_seq={last}")).status == 200
    return last


async def check(client: Client, posted: list[dict[str, Any]], runs: list[str]) -> None:
    """Every run's detail and export document show the expected summary; a run the
    model has no points for shows none, a deleted one is gone."""
    want = expected(posted)
    for run_id in runs:
        reply = await client.get(f"/api/{C}/db/run/{run_id}")
        if reply.status == 404:
            assert run_id not in want, f"{run_id} is gone but has points"
            continue
        assert reply.status == 200, reply.body
        assert reply.json()["metrics"] == want.get(run_id, []), run_id
    export = await client.request("POST", f"/api/{C}/db/export", json={"filename": "x.json"})
    assert export.status == 200, export.body
    documents = {d["run_id"]: d["metrics"] for d in json.loads(export.body)}
    assert {r: m for r, m in documents.items() if m} == want


async def summary_rows(client: Client) -> list[tuple[Any, ...]]:
    assert client.app is not None
    db = client.app[DATABASE]
    return await db.read(lambda cur: cur.execute(
        "SELECT * FROM run_metric_summary ORDER BY ALL").fetchall())


async def replay(client: Client) -> None:
    assert (await client.request("POST", "/api/db/replay")).status == 202
    assert (await wait_replay(client))["state"] == "done"


def test_summary_follows_every_batch(make_server: MakeServer) -> None:
    runs = ["a", "b", "c", "d"]

    async def main() -> None:
        posted: list[dict[str, Any]] = []
        async with make_server() as client:
            await post(client, posted, [
                {"type": "run", "component": C, "run_id": "c", "batch_id": "b1", "ts": at(0)},
                point("a", "loss", 2.5, 10, "s"), point("a", "loss", 1.25, 30, "s"),
                point("a", "loss", 3.0, 20), point("a", "acc", 0.5, 10),
                point("b", "loss", 7.0, 5), point("c", "loss", 1.0, 1, "x"),
            ])
            await check(client, posted, runs)
            # Earlier ts than the run's last (not the last), and a tie with it in ts
            # whose higher seq makes it the last; a unit for `acc`, a lesser one for loss.
            await post(client, posted, [
                point("a", "loss", 0.25, 5, "ms"), point("a", "loss", 9.75, 30),
                point("a", "acc", 0.75, 3, "%"), point("d", "acc", 4.0, 8),
            ])
            await check(client, posted, runs)
            # A tie inside one batch (the later seq wins), then an older point.
            await post(client, posted, [
                point("a", "loss", -1.5, 40), point("a", "loss", 6.5, 40),
                point("a", "loss", 100.0, 39), point("b", "loss", -2.0, 4),
            ])
            await check(client, posted, runs)
            # b deleted and re-posted in one batch: only its new life counts, even
            # with an older ts than its first life's points.
            await post(client, posted, [
                point("b", "loss", 5.0, 50), {"type": "delete", "component": C, "run_id": "b"},
                point("b", "loss", 0.5, 2), point("a", "acc", 1.0, 50),
            ])
            await check(client, posted, runs)
            # d deleted alone; then re-posted in a batch of its own.
            await post(client, posted, [{"type": "delete", "component": C, "run_id": "d"}])
            await check(client, posted, runs)
            await post(client, posted, [point("d", "acc", 2.25, 1)])
            await check(client, posted, runs)
            # Batch b1 deleted (c goes, its points with it); a joins b1 in the same batch
            # after the delete, so a stays. Then c comes back.
            await post(client, posted, [
                point("c", "loss", 3.0, 60),
                {"type": "delete", "component": C, "batch_id": "b1"},
                {"type": "run", "component": C, "run_id": "a", "batch_id": "b1", "ts": at(61)},
            ])
            await check(client, posted, runs)
            await post(client, posted, [point("c", "loss", 8.0, 0)])
            await check(client, posted, runs)
            # A replay rebuilds the view from the base tables: the same rows.
            folded = await summary_rows(client)
            await replay(client)
            assert await summary_rows(client) == folded
            await check(client, posted, runs)

    asyncio.run(main())


def test_batch_delete_of_a_run_that_joined_in_the_same_batch(make_server: MakeServer) -> None:
    """A run that joins a batch and has points in one batch, and is removed by that
    batch's delete later in the same batch: its summary goes with it."""
    async def main() -> None:
        posted: list[dict[str, Any]] = []
        async with make_server() as client:
            await post(client, posted, [point("e", "loss", 1.0, 1), point("f", "loss", 2.0, 1)])
            await post(client, posted, [
                {"type": "run", "component": C, "run_id": "e", "batch_id": "b2", "ts": at(2)},
                point("e", "loss", 4.0, 3), point("f", "loss", 3.0, 3),
                {"type": "delete", "component": C, "batch_id": "b2"},
                point("f", "loss", 5.0, 0),
            ])
            await check(client, posted, ["e", "f"])
            assert [r[1] for r in await summary_rows(client)] == ["f"]

    asyncio.run(main())
