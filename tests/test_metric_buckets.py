"""`GET /api/{c}/db/run/{id}/metrics/buckets` against the real server: the buckets are
computed here in plain Python from the points the test sent: the metric's seq range cut
into N equal slices, each point in the slice of its seq (one point per bucket up to N)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

MakeServer = Callable[..., Any]
POINTS = 1003  # not a multiple of the bucket counts asked for below


def value(i: int) -> float:
    return round(math.sin(i / 7.0) * 100 + i / 10, 6)


def expected(points: list[tuple[int, int, float]], n: int) -> list[dict[str, Any]]:
    """`points`: (seq, step, value) in seq order."""
    first, width = points[0][0], points[-1][0] - points[0][0] + 1
    slices: dict[int, list[tuple[int, int, float]]] = {}
    for p in points:
        slices.setdefault(p[0] if len(points) <= n else (p[0] - first) * n // width,
                          []).append(p)
    out = []
    for chunk in slices.values():  # dicts keep insertion order: seq order
        values = [v for _, _, v in chunk]
        out.append({"step": chunk[-1][1], "count": len(chunk), "min": min(values),
                    "max": max(values), "last": values[-1], "first_seq": chunk[0][0],
                    "last_seq": chunk[-1][0]})
    return out


def test_buckets_min_max_last(make_server: MakeServer) -> None:
    steps = [(i, value(i)) for i in range(POINTS)]
    events: list[dict[str, Any]] = []
    at: list[int] = []  # each loss point's place in the request
    for s, v in steps:
        # Another metric and another run interleaved unevenly (so seq slices hold
        # unequal counts): neither may leak into the buckets.
        if s % 5 == 0 or s > 900:
            events.append({"type": "metric", "component": "c", "run_id": "r", "name": "lr",
                           "value": 9e9})
        if s % 11 == 0:
            events.append({"type": "metric", "component": "c", "run_id": "other",
                           "name": "loss", "value": -9e9, "step": 5})
        at.append(len(events))
        events.append({"type": "metric", "component": "c", "run_id": "r", "name": "loss",
                       "value": v, "step": s})

    async def main() -> None:
        async with make_server() as client:
            reply = (await client.post_events(events)).json()
            last = reply["last_seq"]
            points = [(reply["first_seq"] + i, s, v) for i, (s, v) in zip(at, steps, strict=True)]
            base = f"/api/c/db/run/r/metrics/buckets?min_seq={last}&name=loss"
            for n in (1, 7, 100, 2000):
                reply = await client.get(f"{base}&buckets={n}")
                assert reply.status == 200, reply.body
                body = reply.json()
                assert body["name"] == "loss" and body["points"] == POINTS
                want = expected(points, n)
                got = [{k: b[k] for k in want[0]} for b in body["buckets"]]
                assert got == want, n
                assert len(want) == min(n, POINTS)  # no slice empty at these counts
            none = (await client.get(f"{base.replace('loss', 'nope')}")).json()
            assert none == {"name": "nope", "unit": None, "points": 0, "buckets": []}

            for query, field in (("buckets=0&name=loss", "buckets"),
                                 ("buckets=2001&name=loss", "buckets"), ("", "name")):
                bad = await client.get(f"/api/c/db/run/r/metrics/buckets?{query}")
                assert bad.status == 400, bad.body
                assert field in bad.json()["error"]["message"]
            missing = await client.get("/api/c/db/run/nope/metrics/buckets?name=loss")
            assert missing.status == 404

    asyncio.run(main())
