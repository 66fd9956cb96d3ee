"""Benchmark: facets, multi-value and param filters, keyset pages, and the old clients'
route names (issue 17; docs/facets.md, docs/compat.md), from a `runlake serve` process.

    python bench/facets.py [--events 1000000] [--requests 200]

`--events` realistic events (`runlake.demo` runs tiled by `demo.drop_parquet`, dropped
into the inbox as Parquet) are folded, untimed. Then one client sends `--requests`
rounds of GETs, one request per route per round (routes interleaved, so drift on a
shared machine hits all alike), and reports p50/p99 per route with two ratios measured
in the same run:
- each facet and filtered list ÷ the plain runs list (`runs?limit=50`), the reference;
- each compatibility name (gateway `/api/db/{c}/…`, `task` aliases) ÷ the route it maps
  to: it should cost no more (≈ 1×).
A facet that hit its time budget (`facet_budget_s`) is marked `truncated`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from export import wait_folded  # bench/export.py
from http_api import percentile, start_runlake  # bench/http_api.py

from runlake import demo

C = "generator"
REFERENCE = f"/api/{C}/db/runs?limit=50"
# (label, path): each measured against REFERENCE.
ROUTES = [
    ("runs, multi-value filters", f"/api/{C}/db/runs?limit=50&status=failed,cancelled"
                                  "&hardware=nvidia-h100,nvidia-l4"),
    ("runs, param. filters", f"/api/{C}/db/runs?limit=50&param.precision=bf16"
                             "&param.batch_size=8&param.batch_size=16"),
    ("runs, sort=-duration_s", f"/api/{C}/db/runs?limit=50&sort=-duration_s"),
    ("runs, page 2 by next", f"/api/{C}/db/runs?limit=50&next={{next}}"),
    ("facet model (view)", f"/api/{C}/db/facets?field=model"),
    ("facet hardware (view)", f"/api/{C}/db/facets?field=hardware"),
    ("facet batch_id (view)", f"/api/{C}/db/facets?field=batch_id"),
    ("facet status", f"/api/{C}/db/facets?field=status"),
    ("facet name", f"/api/{C}/db/facets?field=name"),
    ("facet tag:team", f"/api/{C}/db/facets?field=tag:team"),
    ("facet param:precision", f"/api/{C}/db/facets?field=param:precision"),
    ("facet model, status=failed,cancelled",
     f"/api/{C}/db/facets?field=model&status=failed,cancelled"),
]
# (label, compatibility path, the path it maps to)
COMPAT = [
    ("gateway runs", f"/api/db/{C}/runs?limit=50", f"/api/{C}/db/runs?limit=50"),
    ("tasks alias", f"/api/{C}/db/tasks?limit=50", f"/api/{C}/db/runs?limit=50"),
    ("gateway models/stats", f"/api/db/{C}/models/stats", f"/api/{C}/db/models/stats"),
    ("task/{id} alias", f"/api/{C}/db/task/{{run}}", f"/api/{C}/db/run/{{run}}"),
    ("gateway facets", f"/api/db/{C}/facets?field=model", f"/api/{C}/db/facets?field=model"),
]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as resp:
        return json.load(resp)


async def measure(url: str, paths: list[str], rounds: int) -> tuple[dict[str, list[float]],
                                                                    dict[str, bool]]:
    """Seconds per request of each path, interleaved round by round; and whether each
    answer said truncated (facets)."""
    times: dict[str, list[float]] = {p: [] for p in paths}
    truncated: dict[str, bool] = {}
    async with aiohttp.ClientSession() as session:
        for r in range(rounds + 3):  # 3 warm-up rounds, not counted
            for path in paths:
                start = time.perf_counter()
                async with session.get(url + path) as resp:
                    body = await resp.read()
                    assert resp.status == 200, (path, body[:300])
                took = time.perf_counter() - start
                if r >= 3:
                    times[path].append(took)
                if b'"truncated":true' in body:
                    truncated[path] = True
    return times, truncated


def ms(values: list[float], q: float) -> float:
    return percentile(values, q / 100) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runlake-bench-facets-") as tmp:
        data = Path(tmp) / "data"
        demo.drop_parquet(data / "inbox", args.events)
        server = start_runlake(data, "--inbox")
        try:
            started = time.monotonic()
            wait_folded(server, args.events)
            runs = get(server.url + "/api/db/overview")["components"][C]["runs"]
            print(f"{args.events:,} events ({runs:,} {C} runs) folded in "
                  f"{time.monotonic() - started:.0f} s; {args.requests} rounds")
            first = get(server.url + REFERENCE)
            fill = {"next": first["next"], "run": first["items"][0]["run_id"]}
            routes = [(label, p.format(**fill)) for label, p in ROUTES]
            compat = [(label, a.format(**fill), b.format(**fill)) for label, a, b in COMPAT]
            paths = list(dict.fromkeys([REFERENCE, *(p for _, p in routes),
                                        *(p for _, a, b in compat for p in (a, b))]))
            times, truncated = asyncio.run(measure(server.url, paths, args.requests))
        finally:
            server.stop(60)
    ref50, ref99 = ms(times[REFERENCE], 50), ms(times[REFERENCE], 99)
    print("\n| route | p50 ms | p99 ms | p99 ÷ runs list |\n|---|---|---|---|")
    print(f"| runs list (reference) | {ref50:.1f} | {ref99:.1f} | 1.00× |")
    for label, path in routes:
        p50, p99 = ms(times[path], 50), ms(times[path], 99)
        note = " (truncated)" if truncated.get(path) else ""
        print(f"| {label}{note} | {p50:.1f} | {p99:.1f} | {p99 / ref99:.2f}× |")
    print("\n| compatibility name | p50 ms | p99 ms | maps to: p50 / p99 ms | p50 ratio | "
          "p99 ratio |\n|---|---|---|---|---|---|")
    for label, alias, target in compat:
        a50, a99, t50, t99 = (ms(times[alias], 50), ms(times[alias], 99),
                              ms(times[target], 50), ms(times[target], 99))
        print(f"| {label} | {a50:.1f} | {a99:.1f} | {t50:.1f} / {t99:.1f} | "
              f"{a50 / t50:.2f}× | {a99 / t99:.2f}× |")


if __name__ == "__main__":
    main()
