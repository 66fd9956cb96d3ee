"""Shared fixtures: real servers (in-process and subprocess) and a leak check."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.server import ServerProcess, make_server, start_server_process


@pytest.fixture(name="make_server")
def make_server_fixture(tmp_path: Path) -> Callable[..., Any]:
    """`async with make_server(**settings) as client:` — the real app on a free port."""
    return functools.partial(make_server, tmp_path)


@pytest.fixture(name="start_server_process")
def start_server_process_fixture() -> Iterator[Callable[..., ServerProcess]]:
    """`start_server_process(data_dir, **flags)`; any process still running at the
    end of the test is killed, so a failing test leaves no server behind."""
    started: list[ServerProcess] = []

    def start(data_dir: Path, **flags: Any) -> ServerProcess:
        server = start_server_process(data_dir, **flags)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves threads running or file descriptors open (STYLE 14)."""
    process = psutil.Process()
    threads, fds = set(threading.enumerate()), process.num_fds()
    yield
    # Threads may take a moment to exit, and a loaded machine stretches the moment: the
    # wait ends as soon as all are gone, so its bound is a guard, not a measurement.
    deadline = time.monotonic() + 60.0
    while True:
        extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        extra_fds = process.num_fds() - fds
        if (not extra and extra_fds <= 0) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"threads left running: {[t.name for t in extra]}"
    assert extra_fds <= 0, f"{extra_fds} file descriptors left open"
