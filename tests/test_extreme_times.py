"""Times and positions at the edge of what Python and DuckDB hold, from a client: a
`since`/`until` whose UTC falls outside years 1-9999 compares as before/after every
run (not a 500), and a `next` token carrying such a time, or a seq past int64, is a
400 naming `next`. Against a real server."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from typing import Any

LOW = "0001-01-01T00:00:00+01:00"  # 0000-12-31T23:00Z: before year 1
HIGH = "9999-12-31T23:59:59-01:00"  # year 10000 in UTC
RUNS = [{"type": "run", "component": "edge", "run_id": f"r{i}",
         "ts": f"2026-01-0{i + 1}T00:00:00Z"} for i in range(5)]


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def retoken(token: str, **change: Any) -> str:
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i, name in enumerate(("version", "sort", "value", "key", "offset", "filters")):
        raw[i] = change.get(name, raw[i])
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def test_extreme_times_and_positions(make_server: Any) -> None:
    async def main() -> None:
        async with make_server() as client:
            reply = await client.post_events(RUNS + [
                {"type": "metric", "component": "edge", "run_id": "r0", "name": "m",
                 "value": float(i)} for i in range(5)])
            seq = reply.json()["last_seq"]
            runs = f"/api/edge/db/runs?min_seq={seq}"
            every = {r["run_id"] for r in RUNS}
            for query, want in ((f"since={q(LOW)}", every), (f"until={q(HIGH)}", every),
                                (f"since={q(HIGH)}", set()), (f"until={q(LOW)}", set())):
                for path in (runs, f"/api/edge/db/facets?field=status&min_seq={seq}"):
                    got = await client.get(f"{path}&{query}")
                    assert got.status == 200, (path, query, got.body[:300])
                page = (await client.get(f"{runs}&{query}")).json()
                assert {i["run_id"] for i in page["items"]} == want, query
            token = (await client.get(f"{runs}&limit=2")).json()["next"]
            metrics = f"/api/edge/db/run/r0/metrics?min_seq={seq}&limit=2"
            seq_token = (await client.get(metrics)).json()["next"]
            for path, bad in ((f"{runs}&limit=2", retoken(token, value=LOW)),
                              (f"{runs}&limit=2", retoken(token, value=HIGH)),
                              (metrics, retoken(seq_token, value=1e300)),
                              (metrics, retoken(seq_token, value=2.0**63))):
                got = await client.get(f"{path}&next={bad}")
                assert got.status == 400, (path, got.body[:300])
                assert got.json()["error"]["details"][0]["parameter"] == "next"
    asyncio.run(main())
