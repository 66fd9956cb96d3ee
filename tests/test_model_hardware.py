"""`GET /api/{c}/db/models/hardware` against the real server: runs, runs by status and
success rate per (model, hardware), computed here from the events the test sent."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

MakeServer = Callable[..., Any]
STATUSES = ["pending", "running", "completed", "failed", "cancelled"]


def test_cells_and_paging(make_server: MakeServer) -> None:
    runs = [(f"r{i}", ["m1", "m2", None][i % 3], ["h1", "h2"][i % 2] if i % 5 else None,
             STATUSES[i % 5]) for i in range(40)]
    events: list[dict[str, Any]] = []
    for run_id, model, hw, status in runs:
        run: dict[str, Any] = {"type": "run", "component": "c", "run_id": run_id}
        run |= {k: v for k, v in (("model", model), ("hardware", hw)) if v is not None}
        events += [run, {"type": "status", "component": "c", "run_id": run_id,
                         "status": status}]
    events.append({"type": "run", "component": "other", "run_id": "x", "model": "m1",
                   "hardware": "h1"})  # another component: not counted

    def key(cell: tuple[Any, Any]) -> tuple[bool, str, bool, str]:
        return (cell[0] is None, cell[0] or "", cell[1] is None, cell[1] or "")

    want = []
    for cell in sorted({(m, h) for _, m, h, _ in runs}, key=key):
        mine = [s for _, m, h, s in runs if (m, h) == cell]
        by_status = {s: mine.count(s) for s in STATUSES}
        done = by_status["completed"] + by_status["failed"]
        want.append({"model": cell[0], "hardware": cell[1], "runs": len(mine),
                     "by_status": by_status,
                     "success_rate": by_status["completed"] / done if done else None})

    async def main() -> None:
        async with make_server() as client:
            last = (await client.post_events(events)).json()["last_seq"]
            reply = await client.get(f"/api/c/db/models/hardware?min_seq={last}")
            assert reply.status == 200, reply.body
            body = reply.json()
            assert body["items"] == want and body["total"] == len(want)
            pages = [(await client.get(f"/api/c/db/models/hardware?limit=2&offset={o}")).json()
                     for o in range(0, len(want) + 2, 2)]
            assert list(itertools.chain(*(p["items"] for p in pages))) == want
            assert {p["total"] for p in pages} == {len(want)}
            bad = await client.get("/api/c/db/models/hardware?limit=0")
            assert bad.status == 400 and "limit" in bad.json()["error"]["message"]

    asyncio.run(main())
