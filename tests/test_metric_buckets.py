"""`GET /api/{c}/db/run/{id}/metrics/buckets` against the real server: the buckets are
computed here in plain Python from the points the test sent (ntile's split: consecutive
points by seq, the first `n % N` buckets one point larger)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

MakeServer = Callable[..., Any]
POINTS = 1003  # not a multiple of the bucket counts asked for below


def value(i: int) -> float:
    return round(math.sin(i / 7.0) * 100 + i / 10, 6)


def expected(points: list[tuple[int, float]], n: int) -> list[dict[str, Any]]:
    size, extra = divmod(len(points), n)
    out, start = [], 0
    for b in range(min(n, len(points))):
        chunk = points[start:start + size + (b < extra)]
        start += len(chunk)
        values = [v for _, v in chunk]
        out.append({"step": chunk[-1][0], "count": len(chunk), "min": min(values),
                    "max": max(values), "last": values[-1]})
    return out


def test_buckets_min_max_last(make_server: MakeServer) -> None:
    points = [(i, value(i)) for i in range(POINTS)]
    events = [{"type": "metric", "component": "c", "run_id": "r", "name": "loss",
               "value": v, "step": s} for s, v in points]
    # Another metric and another run interleaved: neither may leak into the buckets.
    events += [{"type": "metric", "component": "c", "run_id": "r", "name": "lr", "value": 9e9},
               {"type": "metric", "component": "c", "run_id": "other", "name": "loss",
                "value": -9e9, "step": 5}]

    async def main() -> None:
        async with make_server() as client:
            last = (await client.post_events(events)).json()["last_seq"]
            base = f"/api/c/db/run/r/metrics/buckets?min_seq={last}&name=loss"
            for n in (1, 7, 100, 2000):
                reply = await client.get(f"{base}&buckets={n}")
                assert reply.status == 200, reply.body
                body = reply.json()
                assert body["name"] == "loss" and body["points"] == POINTS
                got = [{k: b[k] for k in ("step", "count", "min", "max", "last")}
                       for b in body["buckets"]]
                assert got == expected(points, n), n
                assert len(body["buckets"]) == min(n, POINTS)
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
