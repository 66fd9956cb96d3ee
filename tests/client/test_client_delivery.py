"""The client against a real server: lifecycle, reads, retries, outages, no duplicates."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_helpers import free_port, get_json, log_seq, metric_steps
from helpers.server import ThreadedServer, serve_in_thread
from runlake_client import Client

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "probe_s": 0.05, "linger_s": 0.01}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with serve_in_thread(tmp_path_factory.mktemp("client-server")) as srv:
        yield srv


def test_run_lifecycle_and_reads(server: ThreadedServer, tmp_path: Path) -> None:
    url = server.client.url
    with Client(url, component="lifecycle", spool_dir=tmp_path / "spool") as client:
        client.batch("b1", expected_count=3)
        sent: dict[str, str] = {}
        for i in range(3):
            with client.batch("b1").run(f"ok-{i}", model="m1", hardware="h1",
                                        params={"i": i}) as run:
                with run.step("load"):
                    run.metrics({"loss": 1.0 / (i + 1), "acc": 0.5}, step=i)
                run.tag("k", "v")
                run.log("hello")
                run.artifact("out.bin", size_bytes=7)
            sent[f"ok-{i}"] = "completed"
        with pytest.raises(ValueError), client.run("bad", model="m2") as run:
            with run.step("train"):
                raise ValueError("boom")
        sent["bad"] = "failed"
        with pytest.raises(KeyboardInterrupt), client.run("stopped", model="m2"):
            raise KeyboardInterrupt
        sent["stopped"] = "cancelled"
        manual = client.create_run("manual", model="m2")
        sent["manual"] = "pending"
        assert client.flush(60)
        assert client.counts.sent > 0 and client.counts.rejected == 0

        runs = list(client.runs(page_size=2))  # 3 pages, by the `next` token
        assert {r.run_id: r.status for r in runs} == sent
        bad = client.get_run("bad")
        assert bad.error is not None and bad.error.startswith("ValueError: boom")
        assert "Traceback" in bad.error and "raise ValueError" in bad.error
        assert [(s.step, s.status) for s in bad.steps] == [("train", "failed")]
        ok = client.get_run("ok-1")
        assert ok.params == {"i": 1} and ok.tags == {"k": "v"} and ok.batch_id == "b1"
        assert {m.name: m.count for m in ok.metrics} == {"loss": 1, "acc": 1}
        assert [a.size_bytes for a in ok.artifacts] == [7]
        manual.start()
        manual.complete(hardware="h9")
        client.flush(60)
        assert client.get_run("manual").status == "completed"
        assert client.get_run("manual").hardware == "h9"
        by_model = {s.model: s.runs for s in client.stats(by="model")}
        assert by_model == {"m1": 3, "m2": 3}
        assert {s.hardware: s.runs for s in client.stats(by="hardware")} == {
            "h1": 3, None: 2, "h9": 1}
        assert client.search("stopped").result_counts["lifecycle"] == 1
        perf = client.performance(metric="loss")
        assert [(p.metric, p.count) for p in perf] == [("loss", 3)]
    assert client.close() is client.counts  # a second close is harmless
    assert "runlake-client-sender" not in {t.name for t in threading.enumerate()}


def test_a_bad_event_is_rejected_once_and_the_rest_arrive(server: ThreadedServer,
                                                          tmp_path: Path) -> None:
    url = server.client.url
    with Client(url, component="rejects", spool_dir=tmp_path / "spool") as client:
        run = client.run("r")
        for i in range(50):
            run.metric("m", 1e200 if i == 17 else float(i), step=i)  # over the server's bound
        assert client.flush(60)
        assert client.counts.rejected == 1 and len(client.counts.errors) == 1
    assert sorted(metric_steps(url, "rejects", "r", log_seq(url))) == [
        i for i in range(50) if i != 17]


class StandIn(http.server.BaseHTTPRequestHandler):
    """A stand-in network peer in front of the real server: the first `refuse` POSTs
    get 503 + Retry-After without reaching it; the next `lose` are forwarded and then
    answered 503 (the server appended them: the client's resend must not duplicate)."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    refuse = 0
    lose = 0
    retry_after = "0"
    seen: list[tuple[float, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.refuse > 0:
            cls.refuse -= 1
            return self._answer(503, b'{"error": {}}', time.monotonic())
        req = urllib.request.Request(cls.upstream + self.path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, answer = resp.status, resp.read()
        if cls.lose > 0:
            cls.lose -= 1
            return self._answer(503, b'{"error": {}}', time.monotonic())
        self._answer(status, answer, time.monotonic())

    def _answer(self, status: int, body: bytes, when: float) -> None:
        type(self).seen.append((when, status))
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", type(self).retry_after)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_retries_on_503_with_retry_after_without_duplicates(server: ThreadedServer,
                                                            tmp_path: Path) -> None:
    url = server.client.url
    before = log_seq(url)
    handler = type("H", (StandIn,), {"upstream": url, "refuse": 3, "lose": 2,
                                     "retry_after": "1", "seen": []})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{proxy.server_port}", component="retry503",
                    spool_dir=tmp_path / "spool", **FAST) as client:
            run = client.run("r")
            for i in range(100):
                run.metric("m", float(i), step=i)
            assert client.flush(120)
            assert client.counts.sent == 100 and client.counts.spooled == 0
            assert client.counts.retries == 5
    finally:
        proxy.shutdown()
        proxy.server_close()
    statuses = [s for _, s in handler.seen]
    assert statuses == [503] * 5 + [202]
    gaps = [b[0] - a[0] for a, b in zip(handler.seen, handler.seen[1:], strict=False)]
    assert min(gaps) >= 0.95  # every retry waited the Retry-After (a lower bound only)
    assert log_seq(url) - before == 3 * 100  # the batch is in the log three times
    steps = metric_steps(url, "retry503", "r", log_seq(url))
    assert steps == dict.fromkeys(range(100), 1)  # the fold kept each id once


def test_connection_refused_then_the_server_starts(tmp_path: Path,
                                                   start_server_process: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Client(url, component="refused", spool_dir=tmp_path / "spool", max_tries=2,
                **FAST) as client:
        run = client.run("r")
        for i in range(200):
            run.metric("m", float(i), step=i)
        assert client.flush(60)  # settled: in the spool, fsynced
        assert client.counts.sent == 0 and client.counts.spooled == 200
        server = start_server_process(tmp_path / "data", port=port)
        deadline = time.monotonic() + 120  # a guard, not a measurement
        while client.counts.sent < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.counts.sent == 200  # the probe drained the spool by itself
    assert metric_steps(url, "refused", "r", log_seq(url)) == dict.fromkeys(range(200), 1)
    assert not list((tmp_path / "spool").glob("*.rlspool"))
    server.stop()


def test_server_stopped_mid_run_and_restarted(tmp_path: Path,
                                              start_server_process: Any) -> None:
    server = start_server_process(tmp_path / "data")
    url = server.url
    port = int(url.rsplit(":", 1)[1])
    client = Client(url, component="outage", spool_dir=tmp_path / "spool", max_tries=3,
                    **FAST)
    with client.run("job", model="m") as run:  # no exception may reach this code
        for i in range(300):
            if i == 100:
                assert client.flush(60)
                server.kill()
            if i == 200:
                server = start_server_process(tmp_path / "data", port=port)
            run.metric("m", float(i), step=i)
    counts = client.close(120)
    assert counts.sent + counts.rejected >= 300 and counts.rejected == 0
    assert not client._sender.spool.has_pending()
    assert metric_steps(url, "outage", "job", log_seq(url)) == dict.fromkeys(range(300), 1)
    assert get_json(url, "/api/outage/db/run/job", min_seq=log_seq(url))["status"] == \
        "completed"
    server.stop()


def test_threads_logging_at_once_each_event_arrives_once(server: ThreadedServer,
                                                         tmp_path: Path) -> None:
    url = server.client.url
    with Client(url, component="threads", spool_dir=tmp_path / "spool") as client:
        start = threading.Barrier(4)

        def log(n: int) -> None:
            run = client.run(f"t{n}")
            start.wait()
            for i in range(2000):
                run.metric("m", float(i), step=i)

        threads = [threading.Thread(target=log, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client.flush(120)
        assert client.counts.sent == 8000
    seq = log_seq(url)
    for n in range(4):
        assert metric_steps(url, "threads", f"t{n}", seq) == dict.fromkeys(range(2000), 1)
