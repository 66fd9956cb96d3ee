"""Benchmark: `next` (keyset) paging of the tests, jobs, batches, stats and models x
hardware lists (issues 17 and 20).

    python bench/keyset_lists.py [--events 1000000] [--limit 50] [--quick]

A log of `--events` `runlake demo` events is folded into a fresh database (untimed).
Then each list is walked to its end twice, in-process through the same view functions
the routes call: by `offset` (the baseline, measured in the same run) and by the
keyset position a `next` token holds. Printed per list: rows, pages, the two walks'
times, the keyset walk's ratio to the offset walk, and the median and last (deepest)
page of each walk.
The jobs list is read over the demo's `test` component's runs (it serves any component).

Not `bench/test_*.py` for pytest: bench/ is no test path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fold import make_log

from runlake.events import EventLog
from runlake.ingest.replay import build
from runlake.views import jobs as jq
from runlake.views import model_hardware as mh
from runlake.views import queries as q
from runlake.views import test_queries as tq
from runlake.views.db import Database
from runlake.views.keyset import sql_values

Ended = tuple[list[Any], str] | None
Page = Callable[[int, Ended], tuple[dict[str, Any], Ended]]


def walk(page: Page, limit: int, keyset: bool) -> tuple[int, int, float, float, float]:
    """rows, pages, the whole walk's seconds, its median and its last page's seconds
    (the deepest: where offset paging costs most)."""
    rows = 0
    after: Ended = None
    times: list[float] = []
    started = time.perf_counter()
    while True:
        t = time.perf_counter()
        items, ended = page(rows, after if keyset else None)
        times.append(time.perf_counter() - t)
        rows += len(items["items"])
        if ended is None:
            return (rows, len(times), time.perf_counter() - started,
                    statistics.median(times), times[-1])
        after = ended


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="100 k events")
    args = parser.parse_args()
    if args.quick:
        args.events = 100_000
    with tempfile.TemporaryDirectory() as tmp:
        log_dir, db_path = Path(tmp) / "log", Path(tmp) / "db.duckdb"
        make_log(log_dir, args.events)
        with EventLog(log_dir, readonly=True) as event_log:
            build(event_log, db_path)
        db = Database(db_path).open()
        try:
            cur = db.connection.cursor()
            keys = tq.sort_keys("-last_seen")

            def tests(offset: int, ended: Ended) -> tuple[dict[str, Any], Ended]:
                after = None if ended is None else (sql_values(keys, ended[0]), ended[1])
                return tq.list_tests(cur, "test", window=30, limit=args.limit,
                                     offset=0 if after else offset, after_row=after)

            def jobs(offset: int, ended: Ended) -> tuple[dict[str, Any], Ended]:
                after = None if ended is None else (sql_values(jq.JOB_KEYS, ended[0]),
                                                    ended[1])
                return jq.list_jobs(cur, "test", args.limit, 0 if after else offset, after)

            def popped(keys: list[Any], fn: Callable[..., dict[str, Any]]) -> Page:
                """A list whose view returns its end under `ended` (issue 17's lists)."""
                def page(offset: int, ended: Ended) -> tuple[dict[str, Any], Ended]:
                    after = None if ended is None else (sql_values(keys, ended[0]), ended[1])
                    out = fn(0 if after else offset, after)
                    return out, out.pop("ended")
                return page

            batches = popped(q.BATCH_KEYS, lambda o, a: q.list_batches(
                cur, "test", args.limit, o, a))
            models = popped(q.STATS_KEYS, lambda o, a: q.group_stats(
                cur, "test", "model", args.limit, o, a))
            hardware = popped(q.STATS_KEYS, lambda o, a: q.group_stats(
                cur, "test", "hardware", args.limit, o, a))
            cells = popped(mh.CELLS_KEYS, lambda o, a: mh.model_hardware(
                cur, "test", args.limit, o, a))

            print(f"walk to the end at {args.events:,} events, limit {args.limit} "
                  "(in-process, ms)")
            print(f"{'list':<8} {'rows':>7} {'pages':>6} {'offset walk':>12} "
                  f"{'next walk':>10} {'ratio':>6} {'p50 offset/next':>16} "
                  f"{'last offset/next':>17}")
            for name, page in (("tests", tests), ("jobs", jobs), ("batches", batches),
                               ("models", models), ("hw", hardware), ("cells", cells)):
                rows, pages, by_offset, mid_o, last_o = walk(page, args.limit, keyset=False)
                rows_k, _, by_next, mid_k, last_k = walk(page, args.limit, keyset=True)
                assert rows_k == rows, (name, rows, rows_k)
                print(f"{name:<8} {rows:>7,} {pages:>6} {by_offset * 1000:>12.1f} "
                      f"{by_next * 1000:>10.1f} {by_next / by_offset:>6.2f} "
                      f"{mid_o * 1000:>7.2f}/{mid_k * 1000:<8.2f} "
                      f"{last_o * 1000:>8.2f}/{last_k * 1000:<8.2f}")
        finally:
            db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
