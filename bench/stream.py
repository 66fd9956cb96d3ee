"""Benchmark: live streams (issue 18, docs/stream.md) against a real `runlake serve`.

    python bench/stream.py [--events 100000] [--followers 100] [--rate 10000]
                           [--seconds 10] [--json PATH]

One server subprocess; the ingester runs in this process, the followers (SSE clients,
`after=end`) in a subprocess of their own, so their parsing does not slow the
ingester's loop. Everything shares the machine's cores. Measured in one run:

- ingest events/s (NDJSON batches of 1 000 over 4 connections) with 0 followers, then
  with N followers connected and reading: the ratio is the issue's target (>= 0.9);
- events/s delivered to 1 and to N followers: the same ingest, from its first POST until
  every follower has the last event (per follower, and summed over followers);
- acknowledged -> delivered latency, p50/p99 over every (batch, follower) pair, with N
  followers while the ingester posts a batch of 100 events every 10 ms (`--rate`);
- memory per follower: the server's RSS with N idle followers minus without, over N.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from http_api import Server, percentile, start_runlake  # bench/http_api.py

from runlake.demo import ndjson_batches

ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)
NDJSON = {"Content-Type": "application/x-ndjson"}


# -- the followers (a subprocess: `bench/stream.py --follow URL N`) -----------------


async def _follow_one(session: aiohttp.ClientSession, url: str, ready: asyncio.Event,
                      marks: list[tuple[int, float]]) -> None:
    """Read the stream until cancelled: (highest id so far, time) per chunk."""
    async with session.get(f"{url}/api/stream?after=end") as resp:
        buf = b""
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            buf += chunk
            cut = buf.rfind(b"\n\n")
            if cut < 0:
                continue
            whole, buf = buf[:cut], buf[cut + 2:]
            if not ready.is_set() and b"event: caught_up" in whole:
                ready.set()
            if b"event: too_slow" in whole:
                raise RuntimeError("dropped: too_slow")
            ids = ID.findall(whole)
            if ids:
                marks.append((int(ids[-1]), now))
    raise RuntimeError("the stream ended early")


async def follow_main(url: str, n: int) -> None:
    """Connect n followers, print `ready`, read the ingester's acks from stdin (one JSON
    line: [[last_seq, ack_time], ...]), wait until every follower has the last, print
    when each got it and every (batch, follower) latency as one JSON line."""
    loop = asyncio.get_running_loop()
    marks: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(_follow_one(session, url, readies[i], marks[i]))
                 for i in range(n)]
        for r in readies:
            await r.wait()
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        acks: list[list[float]] = json.loads(line)
        target = int(acks[-1][0])
        while not all(m and m[-1][0] >= target for m in marks):
            if any(t.done() for t in tasks):
                raise RuntimeError("a follower stopped early")
            await asyncio.sleep(0.01)  # polling a bench's condition, not timing it
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    done, latencies = [], []
    for m in marks:
        seqs = [s for s, _ in m]
        done.append(m[bisect.bisect_left(seqs, target)][1])
        for last, acked in acks:
            latencies.append(m[bisect.bisect_left(seqs, int(last))][1] - acked)
    cpu = os.times()
    print(json.dumps({"done": done, "latencies": latencies, "cpu": cpu.user + cpu.system}),
          flush=True)


# -- the ingester and the phases ----------------------------------------------------


class Followers:
    def __init__(self, url: str, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--follow", url, str(n)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"followers did not start: {line!r}")

    def finish(self, acks: list[tuple[int, float]]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(acks) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait(60)
        return result


async def ingest(url: str, batches: list[bytes], workers: int = 4) -> tuple[
        float, float, list[tuple[int, float]]]:
    """Post every batch as fast as the server acknowledges; (start, end, acks)."""
    acks: list[tuple[int, float]] = []
    queue = list(reversed(batches))
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(f"{url}/api/events", data=body, headers=NDJSON) as r:
                    assert r.status == 202, await r.text()
                    acks.append(((await r.json())["last_seq"], time.monotonic()))
        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        end = time.monotonic()
    acks.sort()
    return start, end, acks


async def paced(url: str, batches: list[bytes], interval: float) -> list[tuple[int, float]]:
    """One batch every `interval` seconds (on schedule; a late one goes at once)."""
    acks: list[tuple[int, float]] = []
    async with aiohttp.ClientSession() as session:
        async def one(body: bytes) -> None:
            async with session.post(f"{url}/api/events", data=body, headers=NDJSON) as r:
                assert r.status == 202, await r.text()
                acks.append(((await r.json())["last_seq"], time.monotonic()))
        start = time.monotonic()
        pending = []
        for i, body in enumerate(batches):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(body)))
        await asyncio.gather(*pending)
    acks.sort()
    return acks


def make_batches(events: int, size: int, seed: int) -> list[bytes]:
    return list(ndjson_batches(events // 30 + 1, seed=seed, batch_size=size))[: events // size]


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"events": args.events, "followers": args.followers}
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        # A queue deep enough that no follower is dropped: this measures delivery, and
        # the followers' own parsing (one process for all) is slower than the server.
        server: Server = start_runlake(Path(tmp) / "data", "--max-streams", "10000",
                                       "--stream-queue", "100000000")
        try:
            batches = make_batches(args.events, 1000, 1)
            cpu = server.cpu_seconds()
            s, e, _ = asyncio.run(ingest(server.url, batches))
            out["ingest_0"] = len(batches) * 1000 / (e - s)
            out["server_cpu_us_per_event_0"] = (server.cpu_seconds() - cpu) / len(batches) / 1e-3
            rss_0 = server.rss_mb()

            for n, key in ((1, "one"), (args.followers, "many")):
                followers = Followers(server.url, n)
                if n == args.followers:
                    out["rss_per_follower_kb"] = (server.rss_mb() - rss_0) * 1024 / n
                batches = make_batches(args.events, 1000, 2 + n)
                cpu = server.cpu_seconds()
                s, e, acks = asyncio.run(ingest(server.url, batches))
                result = followers.finish(acks)
                out[f"server_cpu_us_per_event_{key}"] = ((server.cpu_seconds() - cpu)
                                                         / len(batches) / 1e-3)
                out[f"followers_cpu_s_{key}"] = result["cpu"]
                events = len(batches) * 1000
                out[f"ingest_{key}"] = events / (e - s)
                out[f"delivered_{key}"] = events / (max(result["done"]) - s)

            followers = Followers(server.url, args.followers)
            per_batch = 100
            count = int(args.rate * args.seconds / per_batch)
            batches = make_batches(count * per_batch, per_batch, 99)
            acks = asyncio.run(paced(server.url, batches, per_batch / args.rate))
            lat = followers.finish(acks)["latencies"]
            out["latency_p50_ms"] = percentile(lat, 0.50) * 1000
            out["latency_p99_ms"] = percentile(lat, 0.99) * 1000
            out["paced_rate"] = args.rate
        finally:
            server.stop()
    out["ingest_ratio"] = out["ingest_many"] / out["ingest_0"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=10_000, help="paced ingest, events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced ingest duration")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--follow", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follow:
        asyncio.run(follow_main(args.follow[0], int(args.follow[1])))
        return
    out = run(args)
    n = args.followers
    print(f"ingest, 0 followers:        {out['ingest_0']:>10,.0f} events/s")
    print(f"ingest, {n} followers:      {out['ingest_many']:>10,.0f} events/s  "
          f"ratio {out['ingest_ratio']:.2f} (target >= 0.9)")
    print(f"ingest, 1 follower:         {out['ingest_one']:>10,.0f} events/s")
    print(f"delivered, 1 follower:      {out['delivered_one']:>10,.0f} events/s")
    print(f"delivered, {n} followers:   {out['delivered_many']:>10,.0f} events/s each, "
          f"{out['delivered_many'] * n:,.0f} in all")
    print(f"ack -> delivered at {args.rate:,} events/s, {n} followers: "
          f"p50 {out['latency_p50_ms']:.1f} ms, p99 {out['latency_p99_ms']:.1f} ms")
    print("server CPU per event (µs): " + ", ".join(
        f"{k}: {out[f'server_cpu_us_per_event_{k}']:.0f}" for k in ("0", "one", "many"))
        + f"; followers' own CPU: {out['followers_cpu_s_one']:.1f} s (1), "
        f"{out['followers_cpu_s_many']:.1f} s ({n})")
    print(f"memory per follower:        {out['rss_per_follower_kb']:>10,.0f} KiB")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
