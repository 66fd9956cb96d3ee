"""The server runs the watched folder: a dropped file becomes queryable over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from runlake.api.state import INBOX

MakeServer = Callable[..., Any]


def test_a_file_dropped_into_the_servers_inbox_is_served(
    make_server: MakeServer, tmp_path: Path
) -> None:
    events = [{"type": "metric", "component": "bench", "run_id": f"r{i}", "name": "tok_s",
               "value": float(i)} for i in range(50)]

    async def main() -> None:
        async with make_server(inbox=True) as client:
            assert client.app is not None
            watcher = client.app[INBOX]
            inbox = tmp_path / "data" / "inbox"
            # 60 s: guards against hanging, not measurements. The server starts its
            # watcher without waiting for it to create the folder; and a file dropped
            # before the watch begins is only found by the next rescan (5 s).
            async with asyncio.timeout(60):
                await watcher.watching.wait()
            part = inbox / "drop.ndjson.part"
            part.write_bytes(msgspec.json.Encoder().encode_lines(events))
            part.rename(inbox / "drop.ndjson")
            async with asyncio.timeout(60):
                while watcher.files_ingested + watcher.files_rejected == 0:
                    await asyncio.sleep(0.05)
            assert watcher.files_ingested == 1
            assert (inbox / ".done" / "drop.ndjson").exists()
            last = client.event_log.last_seq
            runs = (await client.get(f"/api/bench/db/runs?limit=100&min_seq={last}")).json()
            assert runs["total"] == 50
            text = (await client.get("/metrics")).body.decode()
            assert "runlake_inbox_files_ingested_total 1" in text
            assert "runlake_inbox_events_total 50" in text

    asyncio.run(main())
