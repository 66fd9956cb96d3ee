"""Benchmark: live streams (issue 18 and its fan-out target, docs/stream.md) against
a real `runlake serve`.

    python bench/stream.py [--events 50000] [--followers 100] [--procs 4] [--rate 10000]
                           [--seconds 10] [--nice both|normal|nice] [--stream-share S]
                           [--baseline-src DIR] [--json PATH]

One server subprocess; the ingester runs in this process, the followers (SSE clients,
`after=end`) in `--procs` subprocesses of their own, so their parsing does not share the
ingester's or one another's GIL. Everything shares the machine's cores. Measured in one
run:

- ingest events/s (NDJSON batches of 1 000 over 4 connections), after an untimed
  warm-up, with 0 followers, then
  with 1, then N followers connected and reading: ingest with N / with 0 is the target
  (>= 0.9). N followers twice: `parse` ones find every event's id (what a client does),
  `cheap` ones only look for the last id in each read, so the difference is the
  followers' own CPU, not the server's; then `--pairs` adjacent (0, N parse followers)
  ingest runs, each started once the fold has caught up with the log, whose median
  ratio is steadier on a shared machine; each pair also
  gives the server's CPU for its N run over its 0 run, and the followers' CPU (in
  cores) during the N run, which they take from the same cores;
- events/s delivered: the same ingest, from its first POST until every follower has the
  last event;
- the server's CPU per ingested event, user and system apart (system: socket writes),
  and the followers' processes' CPU;
- paced ingest: a batch of 100 events every 10 ms (`--rate`; `--rate 0` skips it),
  with 0 then N (cheap) followers: the rate achieved, each POST's latency p50/p99, and with
  followers acknowledged -> delivered latency p50/p99 over every (batch, follower) pair;
- memory per follower: the server's RSS with N idle followers minus without, over N.

`--nice nice` runs the follower processes under `os.nice(19)`: they stand for followers
on other hosts, which take none of the server's CPU; at the lowest priority they only
get the CPU that the server and the ingester leave. `--nice both` (the default) runs
the N-follower phases both ways, `normal` as before. `--stream-share S` passes S to this
tree's server (the baseline has no such setting).

`--baseline-src DIR` first runs the same phases against a server importing runlake from
DIR (e.g. `git archive <commit> runlake | tar -x -C DIR`), so old and new code are
measured in the same run on the same machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from http_api import Server, percentile, start_runlake  # bench/http_api.py

from runlake.demo import ndjson_batches

ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)
NDJSON = {"Content-Type": "application/x-ndjson"}


# -- the followers (a subprocess: `bench/stream.py --follow URL N`) -----------------


async def _follow_one(session: aiohttp.ClientSession, url: str, ready: asyncio.Event,
                      marks: list[tuple[int, float]], cheap: bool) -> None:
    """Read the stream until cancelled: (highest id so far, time) per read. A `cheap`
    follower only looks at the end of each read for the last complete id."""
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
            if cheap:  # messages end in a blank line; an event's first line is its id
                at = whole.rfind(b"\n\nid: ")
                at = at + 2 if at >= 0 else (0 if whole.startswith(b"id: ") else -1)
                if at >= 0:
                    marks.append((int(whole[at + 4:whole.index(b"\n", at)]), now))
                continue
            ids = ID.findall(whole)
            if ids:
                marks.append((int(ids[-1]), now))
    raise RuntimeError("the stream ended early")


async def follow_main(url: str, n: int, mode: str) -> None:
    """Connect n followers, print `ready`, read the ingester's acks from stdin (one JSON
    line: [[last_seq, ack_time], ...]), wait until every follower has the last, print
    when each got it and every (batch, follower) latency as one JSON line."""
    if "nice" in mode:  # followers elsewhere: only the CPU nobody else wants
        os.nice(19)
    cheap = "cheap" in mode
    loop = asyncio.get_running_loop()
    marks: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(_follow_one(session, url, readies[i], marks[i], cheap))
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
    """n followers spread over `procs` processes (one asyncio loop each)."""

    def __init__(self, url: str, n: int, procs: int, cheap: bool = False,
                 nice: bool = False) -> None:
        sizes = [n // procs + (i < n % procs) for i in range(min(procs, n))]
        mode = ("cheap" if cheap else "parse") + ("-nice" if nice else "")
        self.procs = [subprocess.Popen(
            [sys.executable, __file__, "--follow", url, str(k), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for k in sizes]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"followers did not start: {line!r}")

    def cpu(self) -> float:
        """The follower processes' CPU seconds so far, user + system."""
        return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in self.procs)

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def finish(self, acks: list[tuple[int, float]]) -> dict[str, Any]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(acks) + "\n")
            proc.stdin.flush()
        out: dict[str, Any] = {"done": [], "latencies": [], "cpu": 0.0}
        for proc in self.procs:
            assert proc.stdout is not None
            result = json.loads(proc.stdout.readline())
            proc.wait(60)
            out["done"] += result["done"]
            out["latencies"] += result["latencies"]
            out["cpu"] += result["cpu"]
        return out


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


async def paced(url: str, batches: list[bytes], interval: float) -> tuple[
        list[tuple[int, float]], list[float], float]:
    """One batch every `interval` seconds (on schedule; a late one goes at once):
    (acks, each POST's latency, seconds from the first POST to the last ack)."""
    acks: list[tuple[int, float]] = []
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def one(body: bytes) -> None:
            sent = time.monotonic()
            async with session.post(f"{url}/api/events", data=body, headers=NDJSON) as r:
                assert r.status == 202, await r.text()
                last = (await r.json())["last_seq"]
            now = time.monotonic()
            acks.append((last, now))
            latencies.append(now - sent)
        start = time.monotonic()
        pending = []
        for i, body in enumerate(batches):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(body)))
        await asyncio.gather(*pending)
    acks.sort()
    return acks, latencies, acks[-1][1] - start


async def settle(url: str) -> None:
    """Wait until the fold has folded the whole log, so that a timed run does not share
    the cores with folding the previous run's events."""
    async with aiohttp.ClientSession() as session:
        for _ in range(6000):  # a guard: at most about a minute
            async with session.get(f"{url}/readyz") as r:
                if (await r.json())["lag_events"] == 0:
                    return
            await asyncio.sleep(0.01)  # polling the server's state, not timing it
    raise RuntimeError("the fold did not catch up")


def make_batches(events: int, size: int, seed: int) -> list[bytes]:
    return list(ndjson_batches(events // 30 + 1, seed=seed, batch_size=size))[: events // size]


def _cpu(server: Server) -> tuple[float, float]:
    t = server.ps.cpu_times()
    return t.user, t.system


def nice_modes(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """(key suffix, nice) for each way the N followers run."""
    return {"normal": [("", False)], "nice": [("_nice", True)],
            "both": [("", False), ("_nice", True)]}[args.nice]


def run(args: argparse.Namespace, src: Path | None = None) -> dict[str, Any]:
    """Every phase against one fresh server (importing runlake from `src` if given)."""
    out: dict[str, Any] = {"events": args.events, "followers": args.followers}
    env_before = os.environ.get("PYTHONPATH")
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        cwd = os.getcwd()
        if src is not None:  # the server subprocess inherits both (http_api._start);
            os.environ["PYTHONPATH"] = str(src)  # `python -m` puts its cwd first on sys.path
            os.chdir(tmp)
        try:
            # A queue deep enough that no follower is dropped: this measures delivery.
            share = [] if src is not None or args.stream_share is None else [
                "--stream-share", str(args.stream_share)]
            server: Server = start_runlake(Path(tmp) / "data", "--max-streams", "10000",
                                           "--stream-queue", "100000000", *share)
        finally:
            os.chdir(cwd)
            if env_before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = env_before
        try:
            def phase(key: str, n: int, seed: int, cheap: bool = False,
                      nice: bool = False) -> None:
                followers = Followers(server.url, n, args.procs, cheap, nice) if n else None
                if key.startswith("many") and "rss_per_follower_kb" not in out:
                    out["rss_per_follower_kb"] = (server.rss_mb() - rss_0) * 1024 / n
                batches = make_batches(args.events, 1000, seed)
                user, system = _cpu(server)
                s, e, acks = asyncio.run(ingest(server.url, batches))
                events = len(batches) * 1000
                out[f"ingest_{key}"] = events / (e - s)
                if followers is not None:
                    result = followers.finish(acks)
                    out[f"delivered_{key}"] = events / (max(result["done"]) - s)
                    out[f"followers_cpu_s_{key}"] = result["cpu"]
                user2, system2 = _cpu(server)
                out[f"server_user_us_{key}"] = (user2 - user) / events * 1e6
                out[f"server_sys_us_{key}"] = (system2 - system) / events * 1e6

            # Warm up (imports, first DuckDB and Parquet work), untimed, so the first
            # timed phase (0 followers, the ratio's denominator) is not the cold one.
            asyncio.run(ingest(server.url, make_batches(min(args.events, 10_000), 1000, 0)))
            rss_0 = server.rss_mb()
            phase("0", 0, 1)
            phase("one", 1, 2)
            for suffix, nice in nice_modes(args):
                phase("many" + suffix, args.followers, 3, nice=nice)
                phase("cheap" + suffix, args.followers, 4, cheap=True, nice=nice)
            # The ratio again, as adjacent pairs (0 followers, then N): on a shared
            # machine others' load swings between phases; a pair's two runs are close
            # in time, and the median of the pairs' ratios is the figure to quote.
            for suffix, nice in nice_modes(args):
                ratios, cpu_ratios, followers_cpu = [], [], []
                for r in range(args.pairs):
                    asyncio.run(settle(server.url))
                    cpu0 = sum(_cpu(server))
                    s0, e0, _ = asyncio.run(ingest(
                        server.url, make_batches(args.events, 1000, 10 + 2 * r)))
                    cpu0 = sum(_cpu(server)) - cpu0
                    followers = Followers(server.url, args.followers, args.procs, nice=nice)
                    asyncio.run(settle(server.url))
                    cpu1, fcpu = sum(_cpu(server)), followers.cpu()
                    s1, e1, _ = asyncio.run(ingest(
                        server.url, make_batches(args.events, 1000, 11 + 2 * r)))
                    # The server's CPU and the followers' during the timed ingest only:
                    # what the server spent apart from what the machine's cores gave it.
                    cpu1, fcpu = sum(_cpu(server)) - cpu1, followers.cpu() - fcpu
                    followers.kill()
                    time.sleep(1.0)  # let the server see them go before the next 0 phase
                    ratios.append((e0 - s0) / (e1 - s1))
                    cpu_ratios.append(cpu1 / cpu0)
                    followers_cpu.append(fcpu / (e1 - s1))
                out["pair_ratios" + suffix] = ratios
                out["pair_ratio_median" + suffix] = statistics.median(ratios)
                out["pair_server_cpu" + suffix] = cpu_ratios
                out["pair_followers_cores" + suffix] = followers_cpu
            if args.rate:
                per_batch = 100
                count = int(args.rate * args.seconds / per_batch)
                for i, (suffix, n, nice) in enumerate(
                        [("_0", 0, False)] + [(f"_{args.followers}{s}", args.followers, nice)
                                             for s, nice in nice_modes(args)]):
                    # Cheap followers: parsing every id, 100 followers of 10 k events/s
                    # would need about 2 CPU-seconds a second, all of this machine.
                    followers = Followers(server.url, n, args.procs, cheap=True,
                                          nice=nice) if n else None
                    batches = make_batches(count * per_batch, per_batch, 99 + i)
                    acks, posts, took = asyncio.run(
                        paced(server.url, batches, per_batch / args.rate))
                    out["paced_rate" + suffix] = len(batches) * per_batch / took
                    out["post_p50_ms" + suffix] = percentile(posts, 0.50) * 1000
                    out["post_p99_ms" + suffix] = percentile(posts, 0.99) * 1000
                    if followers is not None:
                        lat = followers.finish(acks)["latencies"]
                        out["latency_p50_ms" + suffix] = percentile(lat, 0.50) * 1000
                        out["latency_p99_ms" + suffix] = percentile(lat, 0.99) * 1000
        finally:
            server.stop()
    for suffix, _ in nice_modes(args):
        out["ingest_ratio" + suffix] = out["ingest_many" + suffix] / out["ingest_0"]
        out["ingest_ratio_cheap" + suffix] = out["ingest_cheap" + suffix] / out["ingest_0"]
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    n = args.followers
    modes = nice_modes(args)
    print(f"ingest, 0 followers:          {out['ingest_0']:>10,.0f} events/s")
    print(f"ingest, 1 follower:           {out['ingest_one']:>10,.0f} events/s")
    keys = [("one", "1 follower")]
    for sfx, nice in modes:
        how = " (nice)" if nice else ""
        for kind in ("many", "cheap"):
            label = "parse" if kind == "many" else "cheap"
            ratio = out[f"ingest_ratio{'' if kind == 'many' else '_cheap'}{sfx}"]
            print(f"ingest, {n} {label} followers{how}:".ljust(30)
                  + f"{out['ingest_' + kind + sfx]:>10,.0f} events/s  ratio {ratio:.2f}"
                  " (target >= 0.9)")
            keys.append((kind + sfx, f"{n} {label}{how}"))
    for key, what in keys:
        print(f"delivered, {what}:".ljust(30) + f"{out[f'delivered_{key}']:>10,.0f} events/s "
              f"each; followers' CPU {out[f'followers_cpu_s_{key}']:.1f} s")
    print("server CPU per event (µs, user+sys): " + ", ".join(
        f"{k}: {out[f'server_user_us_{k}']:.0f}+{out[f'server_sys_us_{k}']:.0f}"
        for k in ["0"] + [k for k, _ in keys]))
    for sfx, nice in modes:
        print(f"ingest with {n} / with 0, adjacent pairs{' (nice)' if nice else ''}: median "
              f"{out['pair_ratio_median' + sfx]:.2f} of "
              + ", ".join(f"{r:.2f}" for r in out["pair_ratios" + sfx]))
        print("  server CPU with N / with 0 in each pair: "
              + ", ".join(f"{r:.2f}" for r in out["pair_server_cpu" + sfx])
              + "; followers' CPU during the timed N run (cores): "
              + ", ".join(f"{c:.2f}" for c in out["pair_followers_cores" + sfx]))
    if "paced_rate_0" in out:
        for sfx, what in [("_0", "0 followers")] + [
                (f"_{n}{s}", f"{n} followers" + (" (nice)" if nice else "")) for s, nice in modes]:
            line = (f"paced {args.rate:,}/s, {what}:".ljust(34)
                    + f"achieved {out['paced_rate' + sfx]:>8,.0f}/s, POST p50 "
                    f"{out['post_p50_ms' + sfx]:.1f} ms p99 {out['post_p99_ms' + sfx]:.1f} ms")
            if "latency_p50_ms" + sfx in out:
                line += (f"; ack -> delivered p50 {out['latency_p50_ms' + sfx]:.1f} ms "
                         f"p99 {out['latency_p99_ms' + sfx]:.1f} ms")
            print(line)
    print(f"memory per follower:          {out['rss_per_follower_kb']:>10,.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--procs", type=int, default=4, help="follower processes")
    parser.add_argument("--rate", type=int, default=10_000,
                        help="paced ingest, events/s (0: skip the latency phase)")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced ingest duration")
    parser.add_argument("--pairs", type=int, default=3,
                        help="(0 followers, N followers) ingest pairs for the median ratio")
    parser.add_argument("--nice", choices=("both", "normal", "nice"), default="both",
                        help="N-follower phases with the follower processes at normal "
                        "priority, under os.nice(19) (followers on other hosts), or both")
    parser.add_argument("--stream-share", type=float,
                        help="this tree's server's stream_share (default: its own)")
    parser.add_argument("--baseline-src", type=Path,
                        help="also measure a server importing runlake from this folder, first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--follow", nargs=3, metavar=("URL", "N", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follow:
        asyncio.run(follow_main(args.follow[0], int(args.follow[1]), args.follow[2]))
        return
    results: dict[str, Any] = {}
    if args.baseline_src:
        results["baseline"] = run(args, args.baseline_src.resolve())
        print(f"== baseline ({args.baseline_src})")
        report(results["baseline"], args)
        print("== this tree")
    results["current"] = run(args)
    report(results["current"], args)
    if "baseline" in results:
        b, c = results["baseline"], results["current"]
        for sfx, nice in nice_modes(args):
            print(f"this tree / baseline{' (nice followers)' if nice else ''}: ingest with "
                  f"{args.followers} parse followers "
                  f"{c['ingest_many' + sfx] / b['ingest_many' + sfx]:.2f}, cheap "
                  f"{c['ingest_cheap' + sfx] / b['ingest_cheap' + sfx]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
