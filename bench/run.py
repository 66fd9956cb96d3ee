"""The benchmark suite (issue 7, DESIGN §9): runlake beside the seed-style baseline and beside
the limit of this machine, in one run.

    python bench/run.py --quick          # ~1 M events, a few minutes
    python bench/run.py                  # 10 M events; scale curve 1 M, 3 M, 10 M
    python bench/run.py --json out.json --dir /big/tmp

One command, one set of tables. It composes the other bench scripts, each measuring with
the real parts (subprocess servers on loopback, load from this process):

1. HTTP (`bench/http_api.py`): NDJSON batches of 1 000 and single events at 16 clients,
   runlake and the limit server (`bench/limit_server.py`) alternating on fresh servers, and
   the baseline; read latency p50/p99 of every read route on the same workload for all
   three (the limit: a bare handler answering runlake's own bytes); server RSS.
2. Watched folder (`bench/folder.py`): drop → durable and → visible, NDJSON and Parquet;
   the baseline ingests the same NDJSON events one statement each.
3. Fold (`bench/fold.py`), at each size of the scale curve: a plain DuckDB load of the log
   (the replay's limit), then replay events/s, bytes on disk (log and database),
   incremental 1 000-event batch latency, and read latencies on a server over that
   database, then the limit's; at the largest size, acknowledged → visible p50/p99 under a
   sustained 100 k events/s.

Every target is a ratio to a reference measured in the same run (DESIGN §9), since absolute
figures drift on a shared machine; the tables print runlake ÷ baseline and runlake ÷ limit
side by side and mark each target met or not. The baseline writes each event as it arrives
(a few hundred events/s), so it is measured at smaller sizes; the table says where, and
ratios compare rates, never extrapolations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules

import aiohttp
import fold as fold_bench  # bench/fold.py
import folder as folder_bench
import http_api
from http_api import log, ratio_text


@dataclass
class Plan:
    http: http_api.Sizes
    folder_events: int
    folder_file_events: int
    folder_baseline_events: int
    scale: tuple[int, ...]
    incremental_batches: int
    sustained_rate: int
    sustained_seconds: float

    @classmethod
    def quick(cls) -> Plan:
        return cls(http_api.Sizes(events=200_000, read_events=100_000, baseline_events=5_000,
                                  single_events=10_000, baseline_single_events=1_000, reps=3,
                                  read_requests=100),
                   folder_events=500_000, folder_file_events=100_000,
                   folder_baseline_events=2_000, scale=(300_000, 1_000_000),
                   incremental_batches=50, sustained_rate=100_000, sustained_seconds=10)

    @classmethod
    def full(cls) -> Plan:
        return cls(http_api.Sizes(events=2_000_000, read_events=1_000_000, baseline_events=20_000,
                                  single_events=30_000, baseline_single_events=2_000, reps=3,
                                  read_requests=200),
                   folder_events=2_000_000, folder_file_events=100_000,
                   folder_baseline_events=5_000, scale=(1_000_000, 3_000_000, 10_000_000),
                   incremental_batches=100, sustained_rate=100_000, sustained_seconds=30)


def machine() -> dict[str, Any]:
    versions = {p: metadata.version(p) for p in ("duckdb", "pyarrow", "aiohttp", "msgspec")}
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "memory_gib": round(mem, 1), "platform": platform.platform(), **versions}


def measure_folder(plan: Plan, root: Path) -> dict[str, Any]:
    where = root / "folder"
    where.mkdir()
    files = folder_bench.make_files(where, plan.folder_events, plan.folder_file_events)
    out: dict[str, Any] = {"baseline": {
        "events": plan.folder_baseline_events,
        "events_per_s": folder_bench.baseline_rate(
            files["ndjson"], plan.folder_baseline_events, where / "baseline.duckdb")}}
    for fmt in ("ndjson", "parquet"):
        events, durable, visible = asyncio.run(
            folder_bench.ingest(files[fmt], where / fmt / "data", plan.folder_file_events))
        out[fmt] = {"events": events, "durable_per_s": events / durable,
                    "visible_per_s": events / visible}
        log(f"folder {fmt}: {events / durable:,.0f} events/s durable, "
            f"{events / visible:,.0f} visible")
    shutil.rmtree(where, ignore_errors=True)
    return out


async def reads_on(data: Path, requests: int, root: Path) -> dict[str, Any]:
    """Read latency on a server over `data`, once its fold has caught up with the log (the
    incremental measurement leaves events appended but not folded); then the same requests
    against the limit server, answering each route with runlake's own answer."""
    server = http_api.start_runlake(data)
    bodies: dict[str, bytes] = {}
    try:
        async with aiohttp.ClientSession() as session:
            await http_api.wait_folded(session, server.url)
        routes = await http_api.read_routes(server.url)
        latency = await http_api.read_latency(server.url, routes, requests, bodies=bodies)
        rss = server.rss_mb()
    finally:
        server.stop()
    limit = await http_api.limit_reads(root, bodies, requests)
    return {"latency": latency, "limit": limit, "rss_mb": rss}


def measure_scale(plan: Plan, root: Path) -> list[dict[str, Any]]:
    """Per size: build the log, load it plainly (the limit), replay it, time incremental
    batches and the reads (and the limit's)."""
    points = []
    for size in plan.scale:
        data = root / f"scale-{size}"
        log_dir, db = data / "log", data / "runlake.duckdb"
        t0 = time.perf_counter()
        fold_bench.make_log(log_dir, size)
        log(f"scale {size:,}: log written in {time.perf_counter() - t0:.0f} s; loading plainly")
        plain = fold_bench.measure_plain_load(log_dir, root / "plain.duckdb")
        log(f"scale {size:,}: plain DuckDB load {plain['events_per_s']:,.0f} events/s; replaying")
        point: dict[str, Any] = {"size": size, "plain_load": plain,
                                 "replay": fold_bench.measure_replay(log_dir, db)}
        if plain["events"] != point["replay"]["events"]:
            raise RuntimeError(f"the plain load read {plain['events']:,} events, the replay "
                               f"{point['replay']['events']:,}: not the same log")
        log(f"scale {size:,}: replay {point['replay']['events_per_s']:,.0f} events/s")
        point["incremental"] = fold_bench.measure_incremental(
            log_dir, db, plan.incremental_batches, 1000)
        point["reads"] = asyncio.run(reads_on(data, plan.http.read_requests, root))
        log(f"scale {size:,}: incremental p50 {point['incremental']['p50_ms']:.0f} ms")
        if size == plan.scale[-1]:
            point["sustained"] = fold_bench.measure_sustained(
                log_dir, db, plan.sustained_rate, plan.sustained_seconds, 1000)
            log(f"sustained: p99 {point['sustained']['p99_ms']:.0f} ms")
        points.append(point)
        shutil.rmtree(data, ignore_errors=True)
    return points


def _n(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(fig: dict[str, Any]) -> str:
    lines = [http_api.markdown(fig["http"]), ""]
    f = fig["folder"]
    target = http_api.INGEST_VS_BASELINE
    lines += ["| watched folder | events | durable events/s | visible events/s | baseline "
              "events/s | runlake (visible) ÷ baseline | target | met? |",
              "|---|---:|---:|---:|---:|---:|---|---|"]
    for fmt in ("ndjson", "parquet"):
        r = f[fmt]
        ratio = r["visible_per_s"] / f["baseline"]["events_per_s"]
        lines.append(f"| {fmt} | {r['events']:,} | {_n(r['durable_per_s'])} | "
                     f"{_n(r['visible_per_s'])} | {_n(f['baseline']['events_per_s'])} "
                     f"({f['baseline']['events']:,} events) | {ratio_text(ratio)} | "
                     f"{target.text()} | {_met(target.met(ratio))} |")
    target = http_api.REPLAY_VS_LIMIT
    lines += ["", "| scale: events | replay events/s | plain DuckDB load events/s (limit) | "
              "replay ÷ limit | target | met? | log MB | database MB (plain load) | "
              "incremental 1 000-event batch p50 / p99 ms |",
              "|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    for p in fig["scale"]:
        r, plain, i = p["replay"], p["plain_load"], p["incremental"]
        ratio = r["events_per_s"] / plain["events_per_s"]
        lines.append(f"| {p['size']:,} | {_n(r['events_per_s'])} | "
                     f"{_n(plain['events_per_s'])} | {ratio_text(ratio)} | {target.text()} | "
                     f"{_met(target.met(ratio))} | {r['log_bytes'] / 1e6:,.1f} | "
                     f"{r['db_bytes'] / 1e6:,.1f} ({plain['db_bytes'] / 1e6:,.1f}) | "
                     f"{i['p50_ms']:.0f} / {i['p99_ms']:.0f} |")
    target = http_api.READ_VS_LIMIT
    sizes = [p["size"] for p in fig["scale"]]
    lines += ["", "| reads, p50 / p99 ms | " + " | ".join(
        f"{n:,}: runlake | {n:,}: limit | {n:,}: p99 ÷ limit" for n in sizes)
        + " | target | met? |", "|---|" + "---:|" * (3 * len(sizes)) + "---|---|"]
    for name in fig["scale"][0]["reads"]["latency"]:
        cells, met = [], True
        for p in fig["scale"]:
            ours, bare = p["reads"]["latency"][name], p["reads"]["limit"][name]
            ratio = ours["p99"] / bare["p99"]
            met = met and target.met(ratio)
            cells.append(f"{ours['p50']:.1f} / {ours['p99']:.1f} | "
                         f"{bare['p50']:.1f} / {bare['p99']:.1f} | {ratio_text(ratio)}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target.text()} at every "
                     f"size | {_met(met)} |")
    s = fig["scale"][-1]["sustained"]
    lines += ["", f"Acknowledged → visible at {s['rate_achieved']:,.0f} events/s offered "
              f"(target rate {s['rate_target']:,}), {fig['scale'][-1]['size']:,}-event "
              f"database: p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, max "
              f"{s['max_ms']:.0f} ms (target p99 ≤ 1 000 ms: {_met(s['p99_ms'] <= 1000)})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="~1 M events, a few minutes")
    p.add_argument("--json", type=Path, help="write every raw figure here")
    p.add_argument("--dir", type=Path, help="scratch space (needs a few GB in full mode)")
    args = p.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    started = time.perf_counter()
    fig: dict[str, Any] = {"mode": "quick" if args.quick else "full", "machine": machine(),
                           "commit": _commit(), "loadavg_start": os.getloadavg()}
    log(f"bench/run.py {fig['mode']}: {fig['machine']}")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="runlake-bench-") as tmp:
        root = Path(tmp)
        (root / "http").mkdir()
        fig["http"] = asyncio.run(http_api.run(plan.http, root / "http"))
        fig["folder"] = measure_folder(plan, root)
        fig["scale"] = measure_scale(plan, root)
    fig["loadavg_end"] = os.getloadavg()
    fig["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=str))
    print(markdown(fig))
    print(f"\n{fig['mode']} run in {fig['seconds'] / 60:.1f} min; load average "
          f"{fig['loadavg_start'][0]:.1f} → {fig['loadavg_end'][0]:.1f}")
    return 0


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
