"""`runlake tail` as a real subprocess against a real server: NDJSON and the one-line
form, filters, stopping once caught up, and --follow seeing new events live."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
from helpers.server import Client, make_server

from runlake.api.broadcast import BROADCASTER

GUARD_S = 60.0  # a hang guard, never a measurement


def events() -> list[dict[str, Any]]:
    return [{"type": "metric", "component": ("a", "b")[i % 2], "run_id": f"r{i % 3}",
             "name": "loss", "value": float(i)} for i in range(12)]


async def post(client: Client, batch: list[dict[str, Any]]) -> list[int]:
    reply = await client.post_events(batch)
    assert reply.status == 202, reply.body
    return list(range(reply.json()["first_seq"], reply.json()["last_seq"] + 1))


async def tail(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runlake", "tail", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})


def test_tail_prints_ndjson_filtered_and_stops_once_caught_up(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            sent = events()
            seqs = await post(client, sent)
            proc = await tail("--component", "a", "--run-id", "r0", "--ndjson",
                              env={"RUNLAKE_URL": client.url})
            async with asyncio.timeout(GUARD_S):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err
            got = [msgspec.json.decode(line) for line in out.splitlines()]
            want = [s for s, e in zip(seqs, sent, strict=True)
                    if e["component"] == "a" and e["run_id"] == "r0"]
            assert [e["seq"] for e in got] == want
            assert all(e["component"] == "a" and e["run_id"] == "r0" for e in got)

            proc = await tail("--url", client.url, "--after", str(seqs[-2]))
            async with asyncio.timeout(GUARD_S):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err
            line = out.decode().strip()
            assert line.startswith(f"{seqs[-1]} ") and " b/r2 metric name=loss value=11.0" in line
    asyncio.run(main())


def test_tail_follow_prints_new_events_live(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            await post(client, events())
            proc = await tail("--url", client.url, "--follow", "--ndjson", "--type", "metric")
            try:
                assert proc.stdout is not None
                # --follow starts at the end: wait until it is connected (a stream open).
                hub = client.app[BROADCASTER]  # type: ignore[index]
                async with asyncio.timeout(GUARD_S):
                    while not hub.followers:
                        await asyncio.sleep(0.01)
                    live = await post(client, events()[:3])
                    got = [msgspec.json.decode(await proc.stdout.readline())["seq"]
                           for _ in live]
                assert got == live
            finally:
                proc.send_signal(signal.SIGINT)
                async with asyncio.timeout(GUARD_S):
                    await proc.communicate()
            assert proc.returncode == 130
    asyncio.run(main())


def test_tail_reports_a_refused_stream(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            proc = await tail("--url", client.url, "--type", "bogus")
            async with asyncio.timeout(GUARD_S):
                _, err = await proc.communicate()
            assert proc.returncode == 1
            assert b"400" in err and b"type" in err
    asyncio.run(main())
