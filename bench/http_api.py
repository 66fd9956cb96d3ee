"""Benchmark: HTTP ingest and reads (issue 4; DESIGN §4, §9), runlake beside the seed-style
baseline (`bench/baseline/server.py`) and the limit (`bench/limit_server.py`) on the same
workload, in the same run.

    python bench/http_api.py [--events 1000000] [--read-events 1000000]
                             [--baseline-events 20000] [--reps 3] [--quick] [--json PATH]

(Not `bench/http.py`: run as a script, that name would shadow the standard library's
`http` for every script in bench/, and aiohttp imports it.)

All three servers are real subprocesses on loopback; the load comes from this process (an
aiohttp client, asyncio tasks), so client and server compete for the same 2 cores. The client's CPU
use is reported beside each rate: near 100 % of a core means the client, not the server,
set the pace. The workload is `runlake.demo` (realistic events, ~30 per run).

- ingest, NDJSON: batches of 1 000 events over 4 connections, events/s acknowledged (202);
- ingest, single events: one event per POST from 16 concurrent clients, events/s;
- reads: p50/p99 of N sequential requests per read route once the data is loaded and
  folded, at the baseline's size for both (same workload), and for runlake also at
  `--read-events` (a log written by `runlake demo --append`, folded at start-up);
- memory: server RSS, peak (VmHWM) and after the load;
- limits: the limit server ingests the same NDJSON and single events (decode with runlake's
  decoder, append the raw bytes, one fdatasync per group of concurrent requests), its
  repetitions alternating with runlake's; after each of runlake's read measurements, its
  bare handler answers every route with runlake's own answer, timed the same way.

The baseline writes each event with its own DuckDB statement (a few hundred events/s), so it
ingests `--baseline-events` / `--baseline-single-events` instead: the table says so.
Every rate is the median of `--reps` runs on fresh servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from runlake.demo import ndjson_batches

BASELINE = Path(__file__).resolve().parent / "baseline" / "server.py"
LIMIT = Path(__file__).resolve().parent / "limit_server.py"
EVENTS_PER_RUN = 30.5  # what runlake.demo averages
COMPONENT = "generator"  # the demo's biggest component (40 % of runs)
SEARCH_TERM = "out of memory"  # in run errors and log lines of failed runs
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Target:
    """A DESIGN §9 ratio target on runlake ÷ a reference measured in the same run: at
    least `bound` (rates), or at most `bound` (latencies)."""

    bound: float
    at_most: bool = False

    def text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bound:g}×"

    def met(self, ratio: float) -> bool:
        return ratio <= self.bound if self.at_most else ratio >= self.bound


INGEST_VS_BASELINE = Target(100.0)
INGEST_VS_LIMIT = Target(0.75)  # the minimal durable server
REPLAY_VS_LIMIT = Target(0.75)  # a plain DuckDB load of the same log
READ_VS_BASELINE = Target(1.0, at_most=True)  # p99: at least as fast as the baseline
READ_VS_LIMIT = Target(2.0, at_most=True)  # p99 within 2× of the bare handler
RSS_TARGET_MB = 1024.0


@dataclass
class Sizes:
    """How much work each measurement does (`quick()` for a smoke run)."""

    events: int = 1_000_000  # runlake NDJSON ingest
    read_events: int = 1_000_000  # runlake reads at size
    baseline_events: int = 20_000  # baseline NDJSON ingest; both systems' reads at this size
    single_events: int = 20_000  # runlake single-event POSTs
    baseline_single_events: int = 2_000
    reps: int = 3
    read_requests: int = 200  # timed requests per route
    ndjson_connections: int = 4
    single_clients: int = 16
    seed: int = 7

    @classmethod
    def quick(cls) -> Sizes:
        return cls(events=50_000, read_events=50_000, baseline_events=2_000,
                   single_events=2_000, baseline_single_events=300, reps=1, read_requests=30)


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    """A server subprocess: its URL and what it costs (CPU, memory)."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def peak_rss_mb(self) -> float:
        """The kernel's high-water mark of the resident set (Linux), else the current RSS."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return self.rss_mb()

    def stop(self, timeout: float = 600.0) -> None:
        """SIGTERM (runlake folds to the end and rolls its log), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _start(name: str, cmd: list[str], prefix: str, stderr_path: Path,
           timeout: float = 120.0) -> Server:
    """Run `cmd` (stderr to `stderr_path`) until it prints its one line: `prefix` + URL."""
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stdout = proc.stdout
    assert stdout is not None

    def fail(why: str) -> RuntimeError:
        proc.kill()
        proc.wait()
        stdout.close()
        tail = stderr_path.read_text(errors="replace")[-3000:]
        return RuntimeError(f"{name} did not start ({why}; exit code {proc.returncode}):\n{tail}")

    fd, line, deadline = stdout.fileno(), b"", time.monotonic() + timeout
    while not line.endswith(b"\n"):
        if time.monotonic() > deadline:
            raise fail(f"no line in {timeout:g} s")
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 1)
            if not chunk:  # end of file: the server exited (or closed its stdout)
                raise fail(f"its stdout closed after {line!r}")
            line += chunk
        elif proc.poll() is not None:  # exited, yet a child holds the pipe open
            raise fail("it exited")
    text = line.decode().strip()
    if not text.startswith(prefix):
        raise fail(f"unexpected first line {text!r}")
    return Server(name, proc, text[len(prefix):])


def start_runlake(data: Path, *flags: str) -> Server:
    """`python -m runlake serve --data DATA --port 0 --no-inbox` (plus `flags`)."""
    cmd = [sys.executable, "-m", "runlake", "serve", "--data", str(data), "--port", "0",
           "--no-inbox", "--log-level", "warning", *flags]
    return _start("runlake", cmd, "runlake listening on ", data.parent / f"{data.name}.log")


def start_baseline(db: Path, script: Path = BASELINE) -> Server:
    cmd = [sys.executable, str(script), "--db", str(db), "--host", "127.0.0.1", "--port", "0"]
    return _start("baseline", cmd, "listening on ", db.with_suffix(".log"))


def start_limit(where: Path) -> Server:
    """The limit server (`bench/limit_server.py`), appending to `where`/events.raw."""
    cmd = [sys.executable, str(LIMIT), "--file", str(where / "events.raw"),
           "--host", "127.0.0.1", "--port", "0"]
    return _start("limit", cmd, "limit listening on ", where / "limit.log")


def append_demo_log(data: Path, runs: int, seed: int) -> None:
    """A big runlake log without HTTP: `runlake demo --runs N --append`."""
    subprocess.run(
        [sys.executable, "-m", "runlake", "demo", "--runs", str(runs), "--seed", str(seed),
         "--append", "--data", str(data), "--log-level", "warning"],
        check=True, capture_output=True)


# -- workload -----------------------------------------------------------------------------


@dataclass
class Workload:
    """A demo stream of about `events` events, stored as NDJSON chunks of 1 000 in a file
    (so ten million events do not sit in the client's memory)."""

    path: Path
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    events: int = 0

    @classmethod
    def write(cls, path: Path, events: int, seed: int) -> Workload:
        runs = max(1, round(events / EVENTS_PER_RUN))  # the whole stream: all 60 days covered
        work = cls(path)
        with path.open("wb") as f:
            for chunk in ndjson_batches(runs, seed=seed, batch_size=1000):
                work.chunks.append((f.tell(), len(chunk)))
                work.events += chunk.count(b"\n")
                f.write(chunk)
        return work

    def read_chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            for offset, length in self.chunks:
                f.seek(offset)
                yield f.read(length)


def single_events(count: int, seed: int) -> list[bytes]:
    """`count` events, each one JSON object: the bodies of single-event POSTs."""
    out: list[bytes] = []
    for chunk in ndjson_batches(count // 25 + 10, seed=seed, batch_size=1000):
        out += chunk.splitlines()
        if len(out) >= count:
            return out[:count]
    raise RuntimeError("the demo stream ran short")


# -- measurements -------------------------------------------------------------------------


@dataclass
class Rate:
    """One throughput measurement. CPU figures are fractions of one core."""

    events: int
    seconds: float
    client_cpu: float
    server_cpu: float
    visible_seconds: float | None = None  # runlake: until the fold caught up

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=900))


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, ctype: str) -> int:
    async with session.post(url, data=body, headers={"Content-Type": ctype}) as resp:
        reply = await resp.read()
        if resp.status != 202:
            raise RuntimeError(f"POST {url}: {resp.status} {reply[:500]!r}")
        return int(json.loads(reply)["accepted"])


async def _timed_load(server: Server, bodies: Iterator[bytes], ctype: str, workers: int,
                      fold: bool) -> Rate:
    """POST every body, `workers` at a time; time to the last 202 (and to the fold)."""
    accepted = 0
    url = server.url + "/api/events"
    async with _session(workers) as session:

        async def worker() -> None:
            nonlocal accepted
            for body in bodies:  # a shared iterator: each body goes to one worker
                n = await _post(session, url, body, ctype)
                accepted += n  # not `accepted += await ...`: that reads `accepted` too early

        cpu0, scpu0 = time.process_time(), server.cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        seconds = time.perf_counter() - t0
        cpu, scpu = time.process_time() - cpu0, server.cpu_seconds() - scpu0
        visible = await wait_folded(session, server.url) - t0 if fold else None
    return Rate(accepted, seconds, cpu / seconds, scpu / seconds, visible)


async def ingest_ndjson(server: Server, work: Workload, connections: int = 4,
                        fold: bool = False) -> Rate:
    """NDJSON batches of 1 000 over `connections` connections, events/s acknowledged."""
    return await _timed_load(server, work.read_chunks(), NDJSON, connections, fold)


async def ingest_single(server: Server, events: list[bytes], clients: int = 16,
                        fold: bool = False) -> Rate:
    """One event per POST from `clients` concurrent clients."""
    return await _timed_load(server, iter(events), "application/json", clients, fold)


async def readiness(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/readyz") as resp:
        return dict(await resp.json())  # 503 while lagging: the body still says how far


async def wait_folded(session: aiohttp.ClientSession, url: str, timeout: float = 3600) -> float:
    """Poll runlake's /readyz until the fold has caught up with the log; returns when."""
    deadline = time.perf_counter() + timeout
    while True:
        ready = await readiness(session, url)
        if ready["lag_events"] == 0:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"fold still {ready['lag_events']} events behind")
        await asyncio.sleep(0.02)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status} {body[:500]!r}")
        return json.loads(body)


async def read_routes(url: str) -> dict[str, str]:
    """The read routes to time, with a model and a run taken from the data itself."""
    c = f"/api/{COMPONENT}/db"
    async with _session(1) as session:
        base = url + c
        model = (await get_json(session, f"{base}/models/stats?limit=1"))["items"][0]["model"]
        m = urllib.parse.quote(model, safe="")
        runs = await get_json(session, f"{base}/runs?model={m}&limit=1")
    run_id = urllib.parse.quote(runs["items"][0]["run_id"], safe="")
    term = urllib.parse.quote(SEARCH_TERM)
    return {
        "models/stats": f"{c}/models/stats",
        "hardware/stats": f"{c}/hardware/stats",
        "runs?model&status": f"{c}/runs?model={m}&status=completed",
        "runs?sort=-duration_s": f"{c}/runs?sort=-duration_s",
        "run/{id}": f"{c}/run/{run_id}",
        "batches": f"{c}/batches",
        "performance?days=30": f"{c}/performance?days=30",
        "overview": "/api/db/overview",
        "model/{m}": f"/api/db/model/{m}",
        "search (component)": f"{c}/search?query={term}",
        "search (global)": f"/api/db/search?query={term}",
    }


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def read_latency(url: str, routes: dict[str, str], requests: int, warmup: int = 3,
                       bodies: dict[str, bytes] | None = None) -> dict[str, dict[str, float]]:
    """p50/p99 in ms of `requests` sequential GETs per route, on one keep-alive connection
    (each answer read and parsed as JSON), and the answer's size in bytes. With `bodies`,
    keeps each route's last answer there (what the limit server then serves)."""
    out: dict[str, dict[str, float]] = {}
    async with _session(1) as session:
        for name, path in routes.items():
            times, body = [], b""
            for i in range(warmup + requests):
                t0 = time.perf_counter()
                async with session.get(url + path) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {url + path}: {resp.status} {body[:500]!r}")
                    json.loads(body)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000)
            out[name] = {"p50": percentile(times, 0.5), "p99": percentile(times, 0.99),
                         "bytes": len(body)}
            if bodies is not None:
                bodies[name] = body
    return out


async def limit_reads(root: Path, bodies: dict[str, bytes], requests: int
                      ) -> dict[str, dict[str, float]]:
    """The read limit: the same load generator against a fresh limit server whose bare
    handler answers each route with runlake's own answer (same bytes), cached."""
    where = root / "limit-reads"
    where.mkdir()
    server = start_limit(where)
    try:
        routes = {name: f"/cache/{n}" for n, name in enumerate(bodies)}
        async with _session(1) as session:
            for name, path in routes.items():
                async with session.put(server.url + path, data=bodies[name]) as resp:
                    if resp.status != 204:
                        raise RuntimeError(f"PUT {path}: {resp.status}")
        return await read_latency(server.url, routes, requests)
    finally:
        server.stop()
        shutil.rmtree(where, ignore_errors=True)


# -- the whole benchmark ------------------------------------------------------------------


def log(message: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _median_rate(rates: list[Rate]) -> dict[str, Any]:
    """The rep with the median acknowledged rate, and its CPU figures; the visible rate is
    the median of the reps' own visible rates (not necessarily that rep's)."""
    best = sorted(rates, key=lambda r: r.per_second)[len(rates) // 2]
    visible = [r.events / r.visible_seconds for r in rates if r.visible_seconds]
    return {"events": best.events, "events_per_s": best.per_second,
            "client_cpu": best.client_cpu, "server_cpu": best.server_cpu,
            "visible_events_per_s": statistics.median(visible) if visible else None,
            "all_events_per_s": [r.per_second for r in rates]}


async def ingest_reps(systems: tuple[str, ...], root: Path, work: Workload,
                      singles: list[bytes], sizes: Sizes, baseline_script: Path = BASELINE,
                      reads: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """`sizes.reps` rounds; in each, every one of `systems` in turn on a fresh server:
    NDJSON ingest, then single-event POSTs, then RSS. Alternating the systems round by
    round spreads the machine's drift over all of them. With `reads` (baseline), the first
    server also answers the read benchmark between the two, while it holds exactly the
    NDJSON workload."""
    got: dict[str, dict[str, list[Any]]] = {
        s: {"ndjson": [], "single": [], "peak": [], "after": []} for s in systems}
    for rep in range(sizes.reps):
        for system in systems:
            await _ingest_rep(system, root / f"{system}-{rep}", work, singles, sizes,
                              baseline_script, reads if rep == 0 else None, got[system])
    return {s: {"ndjson": _median_rate(g["ndjson"]), "single": _median_rate(g["single"]),
                "rss_peak_mb": max(g["peak"]), "rss_after_mb": max(g["after"])}
            for s, g in got.items()}


async def _ingest_rep(system: str, where: Path, work: Workload, singles: list[bytes],
                      sizes: Sizes, baseline_script: Path, reads: dict[str, Any] | None,
                      got: dict[str, list[Any]]) -> None:
    where.mkdir()
    fold = system == "runlake"  # only runlake has a fold to wait for
    if system == "runlake":
        server = start_runlake(where / "data")
    elif system == "limit":
        server = start_limit(where)
    else:
        server = start_baseline(where / "baseline.duckdb", baseline_script)
    try:
        rate = await ingest_ndjson(server, work, sizes.ndjson_connections, fold)
        got["ndjson"].append(rate)
        log(f"{system} rep {len(got['ndjson'])}: NDJSON {rate.per_second:,.0f} ev/s "
            f"(client CPU {rate.client_cpu:.0%}, server CPU {rate.server_cpu:.0%})")
        if reads is not None:
            reads["routes"] = await read_routes(server.url)
            reads["latency"] = await read_latency(server.url, reads["routes"],
                                                  sizes.read_requests)
            log(f"{system}: reads at {work.events:,} events done")
        rate = await ingest_single(server, singles, sizes.single_clients, fold)
        got["single"].append(rate)
        log(f"{system} rep {len(got['single'])}: single {rate.per_second:,.0f} ev/s "
            f"(client CPU {rate.client_cpu:.0%}, server CPU {rate.server_cpu:.0%})")
        got["peak"].append(server.peak_rss_mb())
        got["after"].append(server.rss_mb())
    finally:
        server.stop()
        shutil.rmtree(where, ignore_errors=True)


async def runlake_reads(root: Path, work: Workload | None, runs: int, sizes: Sizes,
                        routes: dict[str, str] | None = None) -> dict[str, Any]:
    """Read latency on a fresh runlake server holding `work` (POSTed as NDJSON), or, without
    it, a `runlake demo --append` log of `runs` runs folded at start-up."""
    where = root / f"runlake-reads-{work.events if work else runs}"
    where.mkdir()
    data = where / "data"
    if work is None:
        t0 = time.perf_counter()
        append_demo_log(data, runs, sizes.seed)
        log(f"runlake: wrote a demo log of {runs:,} runs in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()  # before the start: the server may catch up before it listens
    server = start_runlake(data)
    try:
        if work is not None:
            await ingest_ndjson(server, work)  # untimed; the wait below covers the fold
        async with _session(1) as session:
            await wait_folded(session, server.url)
            events = (await readiness(session, server.url))["last_seq"]
        fold_s = time.perf_counter() - t0
        log(f"runlake: {events:,} events folded in {fold_s:.0f} s; timing reads")
        routes = routes or await read_routes(server.url)
        bodies: dict[str, bytes] = {}
        lat = await read_latency(server.url, routes, sizes.read_requests, bodies=bodies)
        out = {"events": events, "load_and_fold_s": fold_s, "latency": lat,
               "routes": routes, "rss_peak_mb": server.peak_rss_mb(),
               "rss_after_mb": server.rss_mb()}
    finally:
        server.stop()
        shutil.rmtree(where, ignore_errors=True)
    out["limit"] = await limit_reads(root, bodies, sizes.read_requests)
    return out


async def run(sizes: Sizes, root: Path, baseline_script: Path = BASELINE) -> dict[str, Any]:
    """Every measurement; returns the raw figures (see `markdown`)."""
    log(f"writing workloads ({sizes.events:,} and {sizes.baseline_events:,} events)")
    big = Workload.write(root / "big.ndjson", sizes.events, sizes.seed)
    small = Workload.write(root / "small.ndjson", sizes.baseline_events, sizes.seed)
    singles = single_events(sizes.single_events, sizes.seed + 1)
    figures: dict[str, Any] = {
        "sizes": asdict(sizes), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "workload_events": {"runlake": big.events, "baseline": small.events}}

    base_reads: dict[str, Any] = {}
    figures["baseline"] = (await ingest_reps(
        ("baseline",), root, small, singles[:sizes.baseline_single_events], sizes,
        baseline_script, reads=base_reads))["baseline"]
    figures["baseline"]["reads"] = base_reads
    # runlake and the limit server on the same workload, alternating round by round.
    figures.update(await ingest_reps(("runlake", "limit"), root, big, singles, sizes))
    # Same workload, same size, same routes (model and run picked from the baseline's
    # answers: `ingest_reps` chose them on the baseline server).
    figures["runlake"]["reads_small"] = await runlake_reads(root, small, 0, sizes,
                                                           base_reads["routes"])
    figures["runlake"]["reads_big"] = await runlake_reads(
        root, None, max(1, round(sizes.read_events / EVENTS_PER_RUN)), sizes)
    figures["loadavg_end"] = os.getloadavg()
    big.path.unlink()
    small.path.unlink()
    return figures


# -- report -------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def ratio_text(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2f}×"


Check = tuple[str, bool]  # a target as printed, and whether it was met


def _row(metric: str, ours: str, base: str = "—", limit: str = "—",
         vs_base: float | None = None, vs_limit: float | None = None,
         checks: list[Check] | None = None) -> str:
    """One line of the table: the figures, both ratios side by side, each target and
    whether it was met."""
    checks = checks or []
    return (f"| {metric} | {ours} | {base} | {limit} | "
            f"{'—' if vs_base is None else ratio_text(vs_base)} | "
            f"{'—' if vs_limit is None else ratio_text(vs_limit)} | "
            f"{'; '.join(t for t, _ in checks) or '—'} | "
            f"{'; '.join('yes' if m else '**no**' for _, m in checks) or '—'} |")


def rate_checks(vs_base: float | None, vs_limit: float | None) -> list[Check]:
    """The ingest targets a ratio pair meets or misses (a missing side has none)."""
    out = []
    if vs_base is not None:
        out.append(("÷ baseline " + INGEST_VS_BASELINE.text(), INGEST_VS_BASELINE.met(vs_base)))
    if vs_limit is not None:
        out.append(("÷ limit " + INGEST_VS_LIMIT.text(), INGEST_VS_LIMIT.met(vs_limit)))
    return out


def read_checks(vs_base: float | None, vs_limit: float | None) -> list[Check]:
    """The read targets (p99 ratios) a ratio pair meets or misses."""
    out = []
    if vs_base is not None:
        out.append(("÷ baseline " + READ_VS_BASELINE.text(), READ_VS_BASELINE.met(vs_base)))
    if vs_limit is not None:
        out.append(("÷ limit " + READ_VS_LIMIT.text(), READ_VS_LIMIT.met(vs_limit)))
    return out


def _rate(rate: dict[str, Any]) -> str:
    """The median rate, with the min–max of the repetitions beside it."""
    reps = rate.get("all_events_per_s") or []
    spread = f" ({_fmt(min(reps))}–{_fmt(max(reps))})" if len(reps) > 1 else ""
    return _fmt(rate["events_per_s"]) + spread


def _lat(lat: dict[str, float] | None) -> str:
    return "—" if lat is None else f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])}"


HEADER = ["| metric | runlake | baseline | limit | runlake ÷ baseline | runlake ÷ limit "
          "| targets | met? |", "|---|---:|---:|---:|---:|---:|---|---|"]
RATIO_NOTE = (
    "runlake ÷ baseline and runlake ÷ limit: rates are runlake's events/s over the other's "
    "(higher is better); read latencies are runlake's p99 over the other's (lower is "
    "better). The limit is `bench/limit_server.py` measured in the same run on the same "
    "data: for ingest, a minimal aiohttp server that decodes with runlake's msgspec "
    "decoder, appends the raw bytes and fdatasyncs once per group of concurrent requests; "
    "for reads, a bare handler answering each route with runlake's own answer (same "
    "bytes), cached. Targets are DESIGN §9's ratios.")


def markdown(fig: dict[str, Any]) -> str:
    """The figures as one Markdown table, then the notes that qualify them."""
    r, b, lim = fig["runlake"], fig["baseline"], fig["limit"]
    ev_r, ev_b = fig["workload_events"]["runlake"], fig["workload_events"]["baseline"]
    big = r["reads_big"]
    rn, bn, ln = r["ndjson"], b["ndjson"], lim["ndjson"]
    rs, bs, ls = r["single"], b["single"], lim["single"]
    nb, nl = rn["events_per_s"] / bn["events_per_s"], rn["events_per_s"] / ln["events_per_s"]
    sb, sl = rs["events_per_s"] / bs["events_per_s"], rs["events_per_s"] / ls["events_per_s"]
    visible = rn["visible_events_per_s"]
    lines = HEADER + [
        _row(f"ingest NDJSON batches of 1 000, {fig['sizes']['ndjson_connections']} "
             f"connections, events/s (runlake and limit {ev_r:,} events, baseline {ev_b:,})",
             _rate(rn), _rate(bn), _rate(ln), nb, nl, rate_checks(nb, nl)),
        _row("… until visible in the views (fold caught up), events/s", _fmt(visible),
             _fmt(bn["events_per_s"]), "—", visible / bn["events_per_s"] if visible else None),
        _row(f"ingest single-event POSTs, {fig['sizes']['single_clients']} clients, events/s "
             f"(runlake and limit {rs['events']:,} events, baseline {bs['events']:,})",
             _rate(rs), _rate(bs), _rate(ls), sb, sl, rate_checks(sb, sl)),
        _row("client CPU during NDJSON ingest (one core = 100 %)", f"{rn['client_cpu']:.0%}",
             f"{bn['client_cpu']:.0%}", f"{ln['client_cpu']:.0%}"),
        _row("client CPU during single-event ingest", f"{rs['client_cpu']:.0%}",
             f"{bs['client_cpu']:.0%}", f"{ls['client_cpu']:.0%}"),
        _row("server CPU during NDJSON / single-event ingest",
             f"{rn['server_cpu']:.0%} / {rs['server_cpu']:.0%}",
             f"{bn['server_cpu']:.0%} / {bs['server_cpu']:.0%}",
             f"{ln['server_cpu']:.0%} / {ls['server_cpu']:.0%}"),
    ]
    small = r["reads_small"]
    for name, theirs in b["reads"]["latency"].items():
        ours, bare = small["latency"][name], small["limit"][name]
        vb, vl = ours["p99"] / theirs["p99"], ours["p99"] / bare["p99"]
        lines.append(_row(f"read {name} @ {ev_b:,} events ({ours['bytes']:,} B), p50 / p99 ms",
                          _lat(ours), _lat(theirs), _lat(bare), vb, vl, read_checks(vb, vl)))
    for name, ours in big["latency"].items():
        bare = big["limit"][name]
        vl = ours["p99"] / bare["p99"]
        lines.append(_row(f"read {name} @ {big['events']:,} events ({ours['bytes']:,} B), "
                          "p50 / p99 ms", _lat(ours), "—", _lat(bare), None, vl,
                          read_checks(None, vl)))
    peak = max(r["rss_peak_mb"], big["rss_peak_mb"])
    lines.append(_row("server RSS peak, MiB (ingest; fold and reads at size)", _fmt(peak),
                      _fmt(b["rss_peak_mb"]), _fmt(lim["rss_peak_mb"]),
                      checks=[(f"≤ {RSS_TARGET_MB:,.0f} MiB", peak <= RSS_TARGET_MB)]))
    lines.append(_row("server RSS after load, MiB",
                      _fmt(max(r["rss_after_mb"], big["rss_after_mb"])),
                      _fmt(b["rss_after_mb"]), _fmt(lim["rss_after_mb"])))
    notes = [
        "",
        RATIO_NOTE + f" Rates are medians of {fig['sizes']['reps']} runs on fresh servers "
        "(min–max in brackets), runlake and the limit alternating run by run. The baseline "
        f"ingests fewer events ({ev_b:,} as NDJSON, {bs['events']:,} single) because it "
        "writes each event with its own DuckDB statement; the three systems' reads are "
        f"compared on that same {ev_b:,}-event workload (same routes, same model and run), "
        f"and runlake's against the limit alone at {big['events']:,} events (a `runlake demo "
        f"--append` log; from server start to fold caught up: {big['load_and_fold_s']:.0f} "
        f"s). Read latency: {fig['sizes']['read_requests']} sequential requests per route on "
        "one keep-alive connection, timed by the client (HTTP and JSON parsing included); "
        "B is the size of runlake's answer, which the limit serves too. The client runs in "
        "this process on the same machine: load average "
        f"{fig['loadavg_start'][0]:.1f} at start, {fig['loadavg_end'][0]:.1f} at end, "
        f"{fig['cpus']} CPUs shared by client and servers.",
    ]
    return "\n".join(lines + notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = Sizes()
    p.add_argument("--events", type=int, default=d.events, help="runlake NDJSON ingest")
    p.add_argument("--read-events", type=int, default=d.read_events,
                   help="runlake read latency at this size")
    p.add_argument("--baseline-events", type=int, default=d.baseline_events,
                   help="baseline NDJSON ingest; reads of both compared at this size")
    p.add_argument("--single-events", type=int, default=d.single_events)
    p.add_argument("--baseline-single-events", type=int, default=d.baseline_single_events)
    p.add_argument("--read-requests", type=int, default=d.read_requests)
    p.add_argument("--reps", type=int, default=d.reps)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--baseline-script", type=Path, default=BASELINE, help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes(
        events=args.events, read_events=args.read_events, baseline_events=args.baseline_events,
        single_events=args.single_events, baseline_single_events=args.baseline_single_events,
        reps=args.reps, read_requests=args.read_requests)
    with tempfile.TemporaryDirectory(prefix="runlake-bench-http-") as tmp:
        figures = asyncio.run(run(sizes, Path(tmp), args.baseline_script))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(markdown(figures))


if __name__ == "__main__":
    main()
