"""Benchmark: `GET /api/db/search` (issue 21) on servers already running, each on its own
copy of one data folder (e.g. this branch's code and the base's), requests alternating
between them so that both see the same machine load.

    python bench/search.py --url NAME=http://127.0.0.1:PORT [--url NAME=URL ...]
                           [--reps 7] [--query TEXT ...]
    python bench/search.py --db COPY_OF/runlake.duckdb --query TEXT [...]

With `--db` (a copy: it is opened read-only, but a server must not be writing it), each
searched column's predicate instead: `col ILIKE ? ESCAPE '\\'` (the base's) beside
`contains(lower(col), lower(?))`, count(*) over the whole table, warm (one untimed run
first), median ms of `--reps`.

The default queries are those of issue 21: a model's first 4 characters (the dashboard
bench's `/search?query=`), a rare word (one run's commit tag), a word in no row, and one
letter (matches nearly every run). Prints, per query and server, the median and min of
`--reps` wall times and the result_counts total (which must agree across servers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.parse
import urllib.request


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=600) as resp:
        return json.loads(resp.read())


def default_queries(url: str) -> list[str]:
    runs = get(f"{url}/api/db/search?query=run&limit=1")["results"]
    c, items = max(runs.items(), key=lambda kv: len(kv[1]))
    model = items[0]["model"]
    run = get(f"{url}/api/{c}/db/run/{urllib.parse.quote(items[0]['run_id'])}")
    commit = run["tags"].get("commit") or items[0]["run_id"]
    return [model[:4], commit, "zzqqxy-no-such-word", "e"]


def predicates(db: str, queries: list[str], reps: int) -> None:
    import duckdb

    from runlake.views.queries import SEARCH_SOURCES, _like

    con = duckdb.connect(db, read_only=True)

    def timed(sql: str, param: str) -> tuple[float, int]:
        con.execute(sql, [param]).fetchall()
        xs = []
        for _ in range(reps):
            t = time.perf_counter()
            (n,), = con.execute(sql, [param]).fetchall()
            xs.append((time.perf_counter() - t) * 1000)
        return statistics.median(xs), n

    for q in queries:
        for table, col in SEARCH_SOURCES:
            like, n1 = timed(f"SELECT count(*) FROM {table} WHERE {col} ILIKE ? ESCAPE '\\'",
                             _like(q))
            contains, n2 = timed(
                f"SELECT count(*) FROM {table} WHERE contains(lower({col}), lower(?))", q)
            assert n1 == n2, (q, table, col, n1, n2)
            print(f"{q!r:24} {table + '.' + col:16} ILIKE ESCAPE {like:6.1f} ms  "
                  f"contains(lower) {contains:6.1f} ms  rows {n1}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", action="append", help="NAME=URL")
    ap.add_argument("--db", help="a DuckDB file to time each column's predicate on")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--query", action="append")
    args = ap.parse_args()
    if args.db:
        predicates(args.db, args.query or ["llam"], args.reps)
        return
    if not args.url:
        ap.error("--url or --db is required")
    servers = dict(u.split("=", 1) for u in args.url)
    queries = args.query or default_queries(next(iter(servers.values())))
    for q in queries:
        path = f"/api/db/search?{urllib.parse.urlencode({'query': q})}"
        times: dict[str, list[float]] = {n: [] for n in servers}
        totals: dict[str, int] = {}
        for name, url in servers.items():  # warm-up, not timed
            totals[name] = get(url + path)["result_counts"]["total"]
        for _ in range(args.reps):
            for name, url in servers.items():
                t = time.perf_counter()
                get(url + path)
                times[name].append((time.perf_counter() - t) * 1000)
        for name, xs in times.items():
            print(f"{q!r:24} {name:8} median {statistics.median(xs):7.0f} ms  "
                  f"min {min(xs):7.0f} ms  total {totals[name]}")


if __name__ == "__main__":
    main()
