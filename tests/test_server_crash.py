"""`runlake serve` as a real process: kill -9 mid-ingest loses no acknowledged event
and duplicates none; SIGTERM stops cleanly with an all-Parquet log; the bind and
lock checks refuse to start."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from helpers.event_log import log_ids
from helpers.plain_http import http_status
from helpers.server import ServerProcess, run_server

from runlake.views.db import Database, folded_seq

pytestmark = pytest.mark.slow

StartServer = Callable[..., ServerProcess]
ROUNDS = 4
CLIENTS = 6


@dataclass
class Request:
    ids: list[str]
    ack: tuple[int, int] | None = None  # (first_seq, last_seq) once acknowledged


@dataclass
class Acks:
    """Events acknowledged in a round; `enough` is set once `target` of them are."""

    target: int
    events: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, n: int) -> None:
        self.events += n
        if self.events >= self.target:
            self.enough.set()

    async def wait(self, clients: list[asyncio.Task[None]]) -> None:
        """Until `target` events are acknowledged, or a client stops first (it failed,
        or the server went away): the kill or stop comes after a number of
        acknowledgements, never after a time that a slow machine may not fill."""
        enough = asyncio.create_task(self.enough.wait())
        try:
            async with asyncio.timeout(120):  # a guard against hanging, not a measurement
                await asyncio.wait([enough, *clients], return_when=asyncio.FIRST_COMPLETED)
        finally:
            enough.cancel()


def batch(tag: str, n: int) -> list[dict[str, Any]]:
    return [{"type": "metric", "component": "crash", "run_id": tag, "name": "x",
             "value": i, "id": f"{tag}-{i}"} for i in range(n)]


async def post_until_failure(url: str, tag: str, rng: random.Random,
                             requests: list[Request], acks: Acks) -> None:
    """POST batches until the server goes away, recording what was acknowledged."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for k in range(10_000):
            events = batch(f"{tag}-b{k}", rng.randint(1, 400))
            req = Request([e["id"] for e in events])
            requests.append(req)
            ndjson = rng.random() < 0.5
            body = (b"\n".join(msgspec.json.encode(e) for e in events) if ndjson
                    else msgspec.json.encode(events))
            headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
            try:
                async with session.post(url + "/api/events", data=body, headers=headers) as r:
                    assert r.status == 202, await r.text()
                    reply = await r.json()
            except (aiohttp.ClientError, ConnectionError):
                return  # killed: this request may or may not have been committed
            assert reply["accepted"] == len(events)
            req.ack = (reply["first_seq"], reply["last_seq"])
            acks.add(len(events))


async def ingest_then_kill(server: ServerProcess, rng: random.Random, round_no: int,
                           requests: list[Request]) -> None:
    # Killed once this many events are acknowledged: a random moment among the
    # clients' requests in flight, and never before there is something to lose.
    acks = Acks(target=rng.randint(300, 3000))
    clients = [
        asyncio.create_task(post_until_failure(server.url, f"r{round_no}c{c}",
                                               random.Random(rng.random()), requests, acks))
        for c in range(CLIENTS)
    ]
    await acks.wait(clients)
    await asyncio.to_thread(server.kill)
    await asyncio.gather(*clients)


def test_kill_9_loses_no_acknowledged_event_and_duplicates_none(
    start_server_process: StartServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    rng = random.Random(7)
    requests: list[Request] = []
    for round_no in range(ROUNDS):
        server = start_server_process(data, inbox=False)
        asyncio.run(ingest_then_kill(server, rng, round_no, requests))
    server = start_server_process(data, inbox=False)  # recovers the last round's tail
    assert server.stop() == 0, server.stderr()

    ids = log_ids(data / "log", check_seqs=True)  # seqs 1, 2, … n: ids[s - 1] is seq s's
    assert len(set(ids)) == len(ids), "an event is in the log twice"
    acked = [r for r in requests if r.ack is not None]
    assert sum(len(r.ids) for r in acked) >= 300 * ROUNDS  # each round's kill waited for them
    for req in acked:
        first, last = req.ack  # type: ignore[misc]
        assert ids[first - 1:last] == req.ids
    present = set(ids)
    for req in requests:
        if req.ack is None:  # in flight at the kill: all of it or none of it
            assert {i in present for i in req.ids} in ({True}, {False})
    assert present == {i for r in requests for i in r.ids if i in present}


def test_sigterm_finishes_in_flight_appends_folds_and_rolls_the_tail(
    start_server_process: StartServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = start_server_process(data, inbox=False)
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", server.url)
    requests: list[Request] = []

    async def ingest_then_stop() -> int:
        acks = Acks(target=1000)  # stopped once this many events are acknowledged
        clients = [asyncio.create_task(post_until_failure(server.url, f"t{c}",
                                                          random.Random(c), requests, acks))
                   for c in range(CLIENTS)]
        await acks.wait(clients)
        code = await asyncio.to_thread(server.stop)
        await asyncio.gather(*clients)
        return code

    assert asyncio.run(ingest_then_stop()) == 0, server.stderr()
    assert "stopped" in server.stderr()
    wal = [p for p in (data / "log" / "wal").iterdir() if p.stat().st_size > 0]
    assert wal == [], "the tail was not rolled into a segment"
    ids = log_ids(data / "log", check_seqs=True)  # seq s is ids[s - 1]
    acked = [r for r in requests if r.ack is not None]
    assert acked
    for req in acked:
        first, last = req.ack  # type: ignore[misc]
        assert ids[first - 1:last] == req.ids
    db = Database(data / "runlake.duckdb").open()
    try:  # the fold went to the end before the server stopped
        assert folded_seq(db.connection) == len(ids)
    finally:
        db.close()


def test_non_loopback_bind_is_refused_without_api_keys(tmp_path: Path) -> None:
    done = run_server(tmp_path / "data", host="0.0.0.0")
    assert done.returncode == 2
    assert "no API keys exist" in done.stderr
    assert f"runlake keys add --role admin --data {tmp_path / 'data'}" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()


def test_non_loopback_bind_with_a_key_serves(
    start_server_process: StartServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    made = subprocess.run(
        [sys.executable, "-m", "runlake", "keys", "add", "--role", "read", "--data", str(data)],
        capture_output=True, text=True, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    server = start_server_process(data, host="0.0.0.0", inbox=False)
    url = f"http://127.0.0.1:{server.url.rsplit(':', 1)[1]}/api/db/overview"

    assert http_status(url, {"X-API-Key": key}) == 200
    assert http_status(url, {}) == 401
    assert server.stop() == 0


def test_a_second_server_on_the_same_data_refuses_to_start(
    start_server_process: StartServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = start_server_process(data, inbox=False)
    done = run_server(data, inbox=False)
    assert done.returncode == 2, done.stderr
    assert "in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert first.stop() == 0


def test_port_in_use_is_a_clear_error(
    start_server_process: StartServer, tmp_path: Path
) -> None:
    first = start_server_process(tmp_path / "a" / "data", inbox=False)
    port = first.url.rsplit(":", 1)[1]
    done = run_server(tmp_path / "b" / "data", port=port, inbox=False)
    assert done.returncode == 2, done.stderr
    assert "cannot start" in done.stderr and "Traceback" not in done.stderr
    assert first.stop() == 0
