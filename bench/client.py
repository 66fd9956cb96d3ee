"""Benchmark: the Python client (issue 19), each figure a ratio to a baseline measured
in the same run.

    python bench/client.py [--events 200000] [--calls 1000000] [--tests 2000]

- throughput: events/s from one process through `Client` to a `runlake serve`
  subprocess (enqueue, batch of 1 000, POST, 202), against the same events POSTed
  directly from the same process as pre-encoded JSON arrays of 1 000 over one
  keep-alive `http.client` connection (the limit for one sender);
- `run.metric()` on the caller's thread: µs per call, against building the same
  event dict and a `SimpleQueue.put` of it (the least an enqueue of it costs);
- the pytest plugin's overhead: wall time of a generated suite of `--tests` trivial
  tests with `--runlake` ÷ without (best of 3 alternating runs each).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import queue
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers.server import start_server_process  # noqa: E402
from runlake_client import Client  # noqa: E402


def throughput(url: str, events: int, spool: Path) -> tuple[float, float]:
    """(client events/s, direct POST events/s)."""
    client = Client(url, component="bench", spool_dir=spool)
    run = client.run("client-throughput")
    start = time.perf_counter()
    for i in range(events):
        run.metric("m", float(i), step=i)
    assert client.flush(600)
    client_rate = events / (time.perf_counter() - start)
    counts = client.close()
    assert counts.sent == events, counts

    ts = time.time()
    bodies = [msgspec.json.encode([
        {"type": "metric", "component": "bench", "run_id": "direct", "id": f"d-{j}",
         "ts": ts, "name": "m", "value": float(j), "step": j}
        for j in range(i, min(i + 1000, events))]) for i in range(0, events, 1000)]
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    start = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/api/events", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 202, resp.status
    direct_rate = events / (time.perf_counter() - start)
    conn.close()
    return client_rate, direct_rate


def metric_call(calls: int, spool: Path) -> tuple[float, float]:
    """(µs per run.metric(), µs to build the same event dict and SimpleQueue.put it),
    the sender pointed nowhere (nothing listens) so only the caller's side is timed."""
    client = Client("http://127.0.0.1:9", component="bench", spool_dir=spool,
                    max_tries=1, exit_flush_s=0)
    run = client.run("calls")
    start = time.perf_counter()
    for i in range(calls):
        run.metric("loss", 0.5, step=i)
    per_call = (time.perf_counter() - start) / calls * 1e6
    client.close(0)

    q: queue.SimpleQueue[dict[str, object]] = queue.SimpleQueue()
    start = time.perf_counter()
    for i in range(calls):
        q.put({"type": "metric", "component": "bench", "run_id": "calls", "id": "x",
               "ts": 0.0, "name": "loss", "value": 0.5, "step": i})
    per_put = (time.perf_counter() - start) / calls * 1e6
    return per_call, per_put


def plugin_overhead(url: str, tests: int, work: Path) -> tuple[float, float]:
    """(seconds with the plugin, seconds without), best of 3 alternating runs."""
    suite = work / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_many.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({tests}))\n"
        "def test_case(i):\n    assert i >= 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLAKE_")}
    env["RUNLAKE_SPOOL_DIR"] = str(work / "plugin-spool")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    best = {"with": float("inf"), "without": float("inf")}
    for _ in range(3):
        for label, extra in (("without", ["-p", "no:runlake"]), ("with", [f"--runlake={url}"])):
            start = time.perf_counter()
            subprocess.run(base + extra, cwd=suite, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            best[label] = min(best[label], time.perf_counter() - start)
    return best["with"], best["without"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--tests", type=int, default=2000)
    args = parser.parse_args()
    # the caller-cost client points nowhere on purpose: its spool warning is expected
    logging.getLogger("runlake_client").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = start_server_process(work / "data")
        try:
            client_rate, direct_rate = throughput(server.url, args.events, work / "spool")
            per_call, per_put = metric_call(args.calls, work / "spool-calls")
            with_s, without_s = plugin_overhead(server.url, args.tests, work)
        finally:
            server.stop()
    rows = [
        ("events/s through Client", f"{client_rate:,.0f}", f"{direct_rate:,.0f} direct POSTs",
         f"{client_rate / direct_rate:.2f}x"),
        ("µs per run.metric()", f"{per_call:.2f}", f"{per_put:.2f} dict + queue put",
         f"{per_call / per_put:.1f}x"),
        (f"pytest {args.tests} tests, s", f"{with_s:.2f} with plugin", f"{without_s:.2f} without",
         f"{with_s / without_s:.3f}x (limit 1.05)"),
    ]
    print(f"{'figure':28} {'client':>22} {'baseline (same run)':>28} {'ratio':>20}")
    for row in rows:
        print(f"{row[0]:28} {row[1]:>22} {row[2]:>28} {row[3]:>20}")


if __name__ == "__main__":
    main()
