"""Real servers for tests: the app in-process on a free port, or `runlake serve` as a
subprocess (for kill -9). No runlake component is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from runlake.api.app import make_app
from runlake.api.protocol import Runner
from runlake.api.state import EVENT_LOG
from runlake.events import EventLog
from runlake.settings import Settings

SLOW_CALLBACK_SECONDS = 0.05  # asyncio debug logs any callback blocking the loop longer
# How long a read with min_seq waits for the fold before its 503, and how long one read
# may run in DuckDB before its 422. The server's defaults (5 s each) are production
# choices that a loaded test machine can run past (a module's fixture posting thousands
# of events then failing every test of the module): in tests they are guards against
# hanging, not measurements.
READ_WAIT_S = 120.0
READ_BUDGET_S = 120.0
LISTENING = "runlake listening on "


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class Client:
    """A session bound to one server; `app` is None for subprocess servers."""

    session: aiohttp.ClientSession
    url: str
    app: web.Application | None = None

    @property
    def event_log(self) -> EventLog:
        assert self.app is not None, "only in-process servers expose their log"
        return self.app[EVENT_LOG]

    async def request(
        self, method: str, path: str, *, data: Any = None, json: Any = None,
        headers: dict[str, str] | None = None, content_type: str | None = "application/json",
    ) -> Reply:
        """`content_type=None` sends no Content-Type header at all."""
        headers = dict(headers or {})
        skip: list[str] = []
        if json is not None:
            data = msgspec.json.encode(json)
        if content_type is not None:
            headers.setdefault("Content-Type", content_type)
        elif data is not None:
            skip.append("Content-Type")
        async with self.session.request(
            method, self.url + path, data=data, headers=headers, skip_auto_headers=skip
        ) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.read())

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path, content_type=None)

    async def post_events(
        self, events: list[dict[str, Any]] | dict[str, Any], path: str = "/api/events",
        ndjson: bool = False,
    ) -> Reply:
        if ndjson:
            assert isinstance(events, list)
            body = b"".join(msgspec.json.encode(e) + b"\n" for e in events)
            return await self.request("POST", path, data=body,
                                      content_type="application/x-ndjson")
        return await self.request("POST", path, json=events)


async def wait_replay(client: Client) -> dict[str, Any]:
    """The server's replay status once it is no longer running."""
    async with asyncio.timeout(240):  # a guard against hanging, not a measurement
        while (status := (await client.get("/api/db/replay")).json())["state"] == "running":
            await asyncio.sleep(0.05)
    return status


@contextlib.asynccontextmanager
async def make_server(tmp_path: Path, **settings: Any) -> AsyncIterator[Client]:
    """The real app on 127.0.0.1 and a free port, data under `tmp_path / "data"`."""
    loop = asyncio.get_running_loop()
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    settings.setdefault("data", tmp_path / "data")
    settings.setdefault("inbox", False)
    settings.setdefault("read_wait_s", READ_WAIT_S)
    settings.setdefault("read_budget_s", READ_BUDGET_S)
    app = make_app(Settings(host="127.0.0.1", port=0, **settings))
    runner = Runner(app, access_log=None)  # as `runlake serve` runs it
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield Client(session, f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()
        loop.set_debug(debug)
        loop.slow_callback_duration = slow


@dataclass
class ThreadedServer:
    """An in-process server on a loop of its own, for sync tests that share one
    server across many cases: `server.run(server.client.get("/healthz"))`."""

    client: Client
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def serve_in_thread(tmp_path: Path, **settings: Any) -> Iterator[ThreadedServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server-loop", daemon=True)
    thread.start()
    server_cm = make_server(tmp_path, **settings)
    try:
        client = asyncio.run_coroutine_threadsafe(server_cm.__aenter__(), loop).result(60)
        server = ThreadedServer(client, loop)
        try:
            yield server
        finally:
            server.run(server_cm.__aexit__(None, None, None))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the server."""
        self.proc.kill()
        self.proc.wait(10)
        self._close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path. Returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def server_command(data_dir: Path, **flags: Any) -> list[str]:
    """`runlake serve` for `data_dir`."""
    args = [sys.executable, "-m", "runlake", "serve", "--data", str(data_dir)]
    flags.setdefault("port", 0)
    flags.setdefault("read_wait_s", READ_WAIT_S)
    flags.setdefault("read_budget_s", READ_BUDGET_S)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def run_server(
    data_dir: Path, timeout: float = 60.0, **flags: Any
) -> subprocess.CompletedProcess[str]:
    """Run `runlake serve` to completion (for start-up refusals): exit code and output."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(server_command(data_dir, **flags), capture_output=True, text=True,
                          timeout=timeout, cwd=data_dir.parent)


def start_server_process(data_dir: Path, timeout: float = 120.0, **flags: Any) -> ServerProcess:
    """`runlake serve --data D --port 0 ...`, once it printed its URL and answers
    (`timeout`: a guard against a server that never starts, not a measurement)."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    stderr_path = data_dir.parent / f"{data_dir.name}-server-{time.monotonic_ns()}.log"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            server_command(data_dir, **flags), stdout=subprocess.PIPE, stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=data_dir.parent,
        )
    server = ServerProcess(proc, "", stderr_path)
    try:
        server.url = _read_url(proc, time.monotonic() + timeout)
        _wait_until_responds(server.url + "/healthz", time.monotonic() + timeout)
    except BaseException as e:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server._close()
        raise RuntimeError(f"{e}; server stderr:\n{server.stderr()[-4000:]}") from e
    return server


def _read_url(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        exited = proc.poll() is not None and not select.select([fd], [], [], 0)[0]
        if left <= 0 or exited:
            raise RuntimeError(f"server did not announce its URL (exit code {proc.poll()})")
        if select.select([fd], [], [], min(left, 0.1))[0]:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"server closed stdout (exit code {proc.wait(10)})")
            line += chunk
    text = line.decode().strip()
    assert text.startswith(LISTENING), text
    return text[len(LISTENING):]


def _wait_until_responds(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
