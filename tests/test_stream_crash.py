"""kill -9 of a server while clients follow it: after a restart each client resumes
from its last id, and every acknowledged event reaches it exactly once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from helpers.server import ServerProcess
from helpers.stream_client import Message, sse_messages, ws_messages

GUARD_S = 120.0  # a hang guard, never a measurement


class Follower:
    """A client that follows whatever server `urls[-1]` names, resuming from its last
    id whenever the connection drops."""

    def __init__(self, kind: str, urls: list[str]) -> None:
        self.kind, self.urls = kind, urls
        self.seqs: list[int] = []
        self.last = 0
        self.connects = 0
        self.target = 0  # stop once an event with this seq (or later) arrived

    async def run(self, session: aiohttp.ClientSession) -> None:
        while not self.target or self.last < self.target:
            try:
                await self._once(session)
            except (aiohttp.ClientError, ConnectionError):
                pass
            await asyncio.sleep(0.05)  # a client's retry pause, not a wait for the server

    async def _once(self, session: aiohttp.ClientSession) -> None:
        self.connects += 1
        url = self.urls[-1]
        if self.kind == "sse":
            headers = {"Last-Event-ID": str(self.last)}
            async with session.get(f"{url}/api/stream?after=0", headers=headers) as resp:
                if resp.status != 200:
                    return
                await self._take(sse_messages(resp))
        else:
            async with session.ws_connect(f"{url}/api/stream/ws?after={self.last}") as ws:
                await self._take(ws_messages(ws))

    async def _take(self, messages: Any) -> None:
        m: Message
        async for m in messages:
            if m.kind == "event":
                self.seqs.append(m.seq)
                self.last = m.seq
                if self.target and self.last >= self.target:
                    return


async def post(session: aiohttp.ClientSession, url: str, i: int) -> list[int]:
    events = [{"type": "metric", "component": "c", "run_id": f"r{i % 7}", "name": "x",
               "value": float(j)} for j in range(5)]
    async with session.post(f"{url}/api/events", data=msgspec.json.encode(events),
                            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 202
        body = msgspec.json.decode(await resp.read())
        return list(range(body["first_seq"], body["last_seq"] + 1))


@pytest.mark.slow
def test_kill_9_while_clients_follow_then_resume(tmp_path: Path,
                                                 start_server_process: Any) -> None:
    data = tmp_path / "data"
    first: ServerProcess = start_server_process(data, inbox=False)
    urls = [first.url]

    async def main() -> None:
        acked: list[int] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            followers = [Follower(k, urls) for k in ("sse", "ws", "sse", "ws")]
            tasks = [asyncio.create_task(f.run(session)) for f in followers]
            async with asyncio.timeout(GUARD_S):
                for i in range(40):
                    acked.extend(await post(session, urls[-1], i))
                # Every client has some of it, then the server dies mid-stream, with
                # appends in flight that may or may not have been acknowledged.
                while min(f.last for f in followers) < 20:
                    await asyncio.sleep(0.01)
                in_flight = [asyncio.create_task(post(session, urls[-1], i))
                             for i in range(40, 50)]
                first.kill()
                for t in in_flight:
                    try:
                        acked.extend(await t)
                    except (aiohttp.ClientError, ConnectionError, AssertionError):
                        pass  # not acknowledged: it may or may not be in the log
                second = await asyncio.to_thread(start_server_process, data, inbox=False)
                urls.append(second.url)
                for i in range(50, 70):
                    acked.extend(await post(session, urls[-1], i))
                for f in followers:
                    f.target = max(acked)
                await asyncio.gather(*tasks)
            second.stop()
        acked_set = set(acked)
        for f in followers:
            assert f.connects >= 2, f.kind  # it really lost its server and came back
            assert f.seqs == sorted(set(f.seqs)), f"{f.kind}: an event twice or out of order"
            missed = sorted(acked_set - set(f.seqs))
            assert not missed, f"{f.kind}: missed {missed[:5]}"
            # Beyond the acknowledged ones only events the log kept (no gaps in seq).
            assert f.seqs == list(range(1, f.seqs[-1] + 1)), f.kind

    asyncio.run(main())
