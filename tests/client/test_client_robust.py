"""What must never lose events or kill the sender: a client dropped without close(),
a value JSON cannot hold, a spool path that is not a folder, a server URL answering
404. Each against a real server (and a real interpreter exit for the first)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_helpers import get_json, log_seq, metric_steps
from helpers.server import ThreadedServer, serve_in_thread
from runlake_client import Client

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "probe_s": 0.05, "linger_s": 0.01}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with serve_in_thread(tmp_path_factory.mktemp("robust-server")) as srv:
        yield srv


def test_a_client_dropped_without_close_still_delivers_at_exit(server: ThreadedServer,
                                                                tmp_path: Path) -> None:
    url = server.client.url
    script = textwrap.dedent(f"""
        from runlake_client import Client

        def main() -> None:  # the client is garbage once main returns
            client = Client({url!r}, component="dropped", spool_dir={str(tmp_path)!r},
                            linger_s=30.0)
            with client.run("r") as run:
                for i in range(20):
                    run.metric("m", float(i), step=i)

        main()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    seq = log_seq(url)
    assert sorted(metric_steps(url, "dropped", "r", seq)) == list(range(20))
    assert get_json(url, "/api/dropped/db/run/r", min_seq=seq)["status"] == "completed"


def test_a_value_json_cannot_hold_is_rejected_alone(server: ThreadedServer,
                                                     tmp_path: Path) -> None:
    url = server.client.url
    with Client(url, component="unencodable", spool_dir=tmp_path, **FAST) as client:
        run = client.run("r")
        for i in range(10):
            run.metric("m", float(i), step=i)
        client.create_run("bad", params={"out": Path("x")})  # what user code may pass
        for i in range(10, 20):
            run.metric("m", float(i), step=i)
        assert client.flush(60)
        assert client.counts.rejected == 1 and client.counts.dropped == 0
        run.metric("m", 20.0, step=20)  # the sender is still alive
        assert client.flush(60)
    assert sorted(metric_steps(url, "unencodable", "r", log_seq(url))) == list(range(21))


def test_a_spool_path_that_is_a_file_does_not_stop_sending(server: ThreadedServer,
                                                          tmp_path: Path) -> None:
    url = server.client.url
    not_a_folder = tmp_path / "spool"
    not_a_folder.write_text("a file")
    with Client(url, component="spoolfile", spool_dir=not_a_folder, **FAST) as client:
        run = client.run("r")
        for i in range(5):
            run.metric("m", float(i), step=i)
        assert client.flush(60)
        assert client.counts.sent >= 5
    assert sorted(metric_steps(url, "spoolfile", "r", log_seq(url))) == list(range(5))


def test_a_404_url_spools_instead_of_dropping(server: ThreadedServer, tmp_path: Path) -> None:
    wrong = server.client.url + "/not-runlake"
    with Client(wrong, component="wrongurl", spool_dir=tmp_path, max_tries=1,
                **FAST) as client:
        run = client.run("r")
        for i in range(5):
            run.metric("m", float(i), step=i)
        assert client.flush(60)
        assert client.counts.rejected == 0 and client.counts.spooled >= 5
