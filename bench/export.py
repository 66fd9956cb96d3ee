"""Benchmark: streamed export (DESIGN §4) from a `runlake serve` process, and its memory.

    python bench/export.py [--events 1000000]

`--events` realistic events (1 000 `runlake.demo` runs tiled with fresh run and batch
ids by `demo.drop_parquet`, dropped into the inbox as Parquet) are ingested and
folded, untimed. Then each export (events, runs and run documents, as NDJSON, JSON
and Parquet, across all components) is read to the end by one client, timed, while
the server's RSS is sampled every 10 ms: the table shows the rate, the size, and the
highest RSS during the export less the RSS just before it. Last, the documents
exports' rates as ratios to the runs export's in the same format, measured in the
same run (a document is a run plus its children). Needs psutil (the test extra).
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
from http_api import Server, start_runlake  # bench/http_api.py

from runlake import demo

T = TypeVar("T")


def readyz(url: str) -> dict[str, int]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 503 while the fold lags
        return json.load(e)


def export(host: str, path: str) -> tuple[int, float]:
    """(bytes, seconds) of one export read to the end."""
    conn = http.client.HTTPConnection(host, timeout=300)
    start = time.perf_counter()
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:500]
        size = 0
        while chunk := resp.read(1 << 20):
            size += len(chunk)
        return size, time.perf_counter() - start
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runlake-bench-export-") as tmp:
        data = Path(tmp) / "data"
        demo.drop_parquet(data / "inbox", args.events)
        server = start_runlake(data, "--inbox")  # the events wait in the inbox
        try:
            wait_folded(server, args.events)
            run(server.url, server.ps, args.events)
        finally:
            server.stop(60)


def wait_folded(server: Server, events: int, timeout: float = 1800.0) -> None:
    """Until the inbox's events are folded; a server that died or stalls fails the bench."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:  # before asking it: a dead server refuses
            raise RuntimeError("the server exited before it folded the inbox")
        if (folded := readyz(server.url)["folded_seq"]) >= events:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server folded {folded:,} of {events:,} events and stalled")
        time.sleep(0.2)


def run(url: str, server: psutil.Process, events: int) -> None:
    baseline = max(server.memory_info().rss for _ in range(5))
    print(f"{events:,} events; server RSS before the exports {baseline / 2**20:.0f} MiB")
    print(f"{'export':<16} {'rows/s':>10} {'MB/s':>7} {'size MB':>8} {'RSS growth MiB':>15}")
    host = url.removeprefix("http://")
    runs = count_runs(host)
    rates: dict[tuple[str, str], float] = {}
    for what in ("events", "runs", "documents"):
        for fmt in ("ndjson", "json", "parquet"):
            path = f"/api/db/export?what={what}&format={fmt}"
            before = server.memory_info().rss
            (size, seconds), peak = with_peak_rss(server, lambda p=path: export(host, p))
            rows = events if what == "events" else runs
            rates[what, fmt] = rows / seconds
            print(f"{what + ' ' + fmt:<16} {rows / seconds:>10,.0f} "
                  f"{size / seconds / 1e6:>7.1f} {size / 1e6:>8.1f} "
                  f"{(peak - before) / 2**20:>15.1f}")
    for fmt in ("ndjson", "json", "parquet"):
        print(f"documents {fmt} / runs {fmt}: "
              f"{rates['documents', fmt] / rates['runs', fmt]:.2f}x runs/s")


def with_peak_rss(server: psutil.Process, fn: Callable[[], T]) -> tuple[T, int]:
    """fn()'s result, and the server's highest RSS while it ran (sampled every 10 ms)."""
    peak = server.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return result, peak


def count_runs(host: str) -> int:
    conn = http.client.HTTPConnection(host, timeout=300)
    try:
        conn.request("GET", "/api/db/overview")
        return int(json.load(conn.getresponse())["total"]["runs"])
    finally:
        conn.close()


if __name__ == "__main__":
    main()
