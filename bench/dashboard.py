"""The dashboard's pages in headless Chromium over a demo data folder (issue 21).

    python bench/dashboard.py --quick     # ~100 k events, a 100 k-point metric
    python bench/dashboard.py             # ~2 M events, a 1 M-point metric
    python bench/dashboard.py --runs 293000 --points 1000000   # ~10 M events

For each page: the shell's first byte (the browser's navigation timing: responseStart −
requestStart), when the page was drawn (app.js marks `runlake:drawn` once its API calls
are in and the DOM is built; ms since navigation start), the span of its API calls
(first fetch start to last fetch end, in the same load), and the bytes transferred with
a cold cache. Medians of --repeat loads, each in a fresh browser context. Ratios, all
from this run: first byte ÷ the issue's 100 ms, drawn ÷ the issue's 1 s, and drawn ÷
the page's own API span (what the browser adds to the reads it waits for), and the API
call the page waited on longest (its path, most frequent over the loads; median ms). Then a
run with one long metric: the buckets call's time and uPlot's construction time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
FIRST_BYTE_TARGET_MS = 100.0
DRAWN_TARGET_MS = 1000.0
LONG_RUN = "bench-long"

TIMING_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const api = res.filter((r) => r.initiatorType === "fetch");
  const drawn = performance.getEntriesByName("runlake:drawn")[0];
  const charts = performance.getEntriesByName("runlake:chart").map((m) => m.duration);
  return {
    first_byte_ms: nav.responseStart - nav.requestStart,
    drawn_ms: drawn ? drawn.startTime : null,
    api_ms: api.length ? Math.max(...api.map((r) => r.responseEnd))
                         - Math.min(...api.map((r) => r.startTime)) : 0,
    api_calls: api.length,
    bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
    chart_ms: charts.length ? Math.max(...charts) : null,
    slowest: api.length ? api.reduce((a, b) => (b.duration > a.duration ? b : a)) : null,
  };
}"""


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=600) as resp:
        return json.load(resp)


def lag(url: str) -> int:
    """Events the fold is behind (/readyz answers 503 while lagging, with the same body)."""
    try:
        return int(get(url + "/readyz")["lag_events"])
    except urllib.error.HTTPError as e:
        return int(json.load(e)["lag_events"])


def post_ndjson(url: str, lines: list[bytes]) -> Any:
    req = urllib.request.Request(url, data=b"".join(lines), method="POST",
                                 headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)


def start_server(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "runlake", "serve", "--data", str(data),
                             "--port", "0", "--no-inbox", "--log-level", "warning"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    url = line.rsplit(" ", 1)[-1]
    return proc, url


def post_long_metric(url: str, component: str, points: int) -> int:
    """One run with `points` points of one metric; returns the last seq."""
    last = 0
    batch = 50_000
    for start in range(0, points, batch):
        lines = [json.dumps({"type": "metric", "component": component, "run_id": LONG_RUN,
                             "name": "loss", "value": (i % 1000) / 1000, "step": i}).encode()
                 + b"\n" for i in range(start, min(points, start + batch))]
        last = post_ndjson(url + "/api/events", lines)["last_seq"]
    return last


def measure(browser: Browser, url: str, repeat: int) -> dict[str, Any]:
    runs, slowest = [], []
    for _ in range(repeat):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_selector("main[aria-busy=false]")
        timing = page.evaluate(TIMING_JS)
        slow = timing.pop("slowest")  # the API call the page waited on longest
        timing["slowest_ms"] = slow["duration"] if slow else None
        slowest.append((slow or {}).get("name", "-").split("/api/", 1)[-1].split("?")[0])
        runs.append(timing)
        context.close()
    out: dict[str, Any] = {}
    for k in runs[0]:
        values = [r[k] for r in runs if r[k] is not None]
        out[k] = statistics.median(values) if values else None
    out["slowest"] = statistics.mode(slowest)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, help="demo runs (~30 events each)")
    ap.add_argument("--points", type=int, help="points of the long metric")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None,
                    help="keep the data folder here; reuse it if it is already built")
    args = ap.parse_args()
    runs = args.runs or (3_300 if args.quick else 33_000)
    points = args.points or (100_000 if args.quick else 1_000_000)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data = args.data or Path(tmp) / "data"
        marker = data.with_name(data.name + ".built")  # outside: the folder is the server's
        built = marker.exists()
        t0 = time.perf_counter()
        if not built:
            subprocess.run([sys.executable, "-m", "runlake", "demo", "--append", "--runs",
                            str(runs), "--data", str(data), "--log-level", "warning"],
                           check=True, stderr=subprocess.DEVNULL)
        proc, url = start_server(data)
        try:
            while lag(url):  # the server folds the demo's log first
                time.sleep(0.5)
            overview = get(url + "/api/db/overview")
            component = max(overview["components"],
                            key=lambda c: overview["components"][c]["runs"])
            last = 0 if built else post_long_metric(url, component, points)
            marker.touch()
            overview = get(f"{url}/api/db/overview?min_seq={last}")
            events = overview["total"]["events"]
            print(f"# {events:,} events, {overview['total']['runs']:,} runs "
                  f"(set up in {time.perf_counter() - t0:.0f} s); component {component}")
            recent = [r for r in get(f"{url}/api/{component}/db/runs?limit=3")["items"]
                      if r["run_id"] != LONG_RUN][:2]
            run = get(f"{url}/api/{component}/db/run/{recent[0]['run_id']}")
            metric = run["metrics"][0]["name"] if run["metrics"] else "loss"
            model = next(m["model"] for m in get(
                f"{url}/api/{component}/db/models/stats?limit=5")["items"] if m["model"])
            pages = {
                "home": "/",
                "runs": f"/runs?component={component}",
                "run": f"/run/{component}/{recent[0]['run_id']}",
                "run (long metric)": f"/run/{component}/{LONG_RUN}",
                "models × hardware": f"/models?component={component}&metric={metric}",
                "model": f"/model/{model}",
                "performance": f"/performance?component={component}",
                "batches": f"/batches?component={component}",
                "search": f"/search?query={model[:4] or 'a'}",
                "compare": f"/compare?run={component}/{recent[0]['run_id']}"
                           f"&run={component}/{recent[-1]['run_id']}",
            }
            t = time.perf_counter()
            buckets = get(f"{url}/api/{component}/db/run/{LONG_RUN}/metrics/buckets"
                          f"?name=loss&buckets=2000")
            buckets_ms = (time.perf_counter() - t) * 1000
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                try:
                    results = {}
                    for name, path in pages.items():
                        print(f"# {name}: {path}", file=sys.stderr, flush=True)
                        results[name] = measure(browser, url + path, args.repeat)
                finally:
                    browser.close()
        finally:
            proc.terminate()
            proc.wait(120)

    print(f"{'page':<20} {'first byte ms':>13} {'÷100 ms':>8} {'drawn ms':>9} {'÷1 s':>6} "
          f"{'API span ms':>11} {'drawn÷API':>9} {'calls':>5} {'KB cold':>8}  slowest call (ms)")
    for name, r in results.items():
        api = r["api_ms"] or float("nan")
        print(f"{name:<20} {r['first_byte_ms']:>13.1f} "
              f"{r['first_byte_ms'] / FIRST_BYTE_TARGET_MS:>8.2f} {r['drawn_ms']:>9.0f} "
              f"{r['drawn_ms'] / DRAWN_TARGET_MS:>6.2f} {api:>11.0f} "
              f"{r['drawn_ms'] / api:>9.2f} {r['api_calls']:>5.0f} {r['bytes'] / 1024:>8.1f}  "
              f"{r['slowest']} ({r['slowest_ms'] or 0:.0f})")
    long = results["run (long metric)"]
    print(f"# long metric: {buckets['points']:,} points -> {len(buckets['buckets'])} buckets; "
          f"buckets call {buckets_ms:.0f} ms; uPlot construction {long['chart_ms']:.1f} ms")


if __name__ == "__main__":
    main()
