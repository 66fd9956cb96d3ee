"""A replay writes every table in the physical order the fold leaves it in (docs/views.md,
"Physical order"): reads rely on it, since zone maps skip the row groups a filter rules
out only when rows lie in the order the filter follows.

- the base tables of a run's rows, in `seq` order (a run's detail filters on its span),
  even though a bulk replay reads many segments in parallel through anti-joins;
- `runs` and `run_metric_summary`, in `last_seq` order (the fold rewrites a touched run's
  rows at the end): the newest-first runs list's top-N filter on `created_at` then reads
  the last row groups alone;
- `run_span`, in `first_seq` order (the fold adds a run when its first event comes).

The demo's run ids grow with time but its components interleave, so key order
(component, run_id) is not `last_seq` order: a replay writing `runs` by key fails here.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from helpers.folder import fill_log

from runlake.events import EventLog
from runlake.ingest.replay import build

RUNS = 400  # ~12 k events, with duplicates, run and batch deletes (fill_log)

# Table: the column whose order its rows keep.
ORDER = {
    "run_span": "first_seq",
    "run_events": "seq", "status_events": "seq", "steps": "seq", "tags": "seq",
    "metrics": "seq", "logs": "seq", "artifacts": "seq", "results": "seq",
    "batch_events": "seq",
    "runs": "last_seq", "run_metric_summary": "last_seq",
}
# Upserted: a batch's MERGE updates a key's row where it lies, as the fold does, so
# only a bulk replay (one INSERT of each key's latest row) writes them in seq order.
UPSERTED = {"steps", "tags", "results"}


def out_of_order(con: duckdb.DuckDBPyConnection, table: str, column: str) -> list[tuple[int, int]]:
    """Neighbouring rows of `table`, in storage (rowid) order, whose `column` goes down."""
    return con.execute(f"""
        SELECT prev, cur FROM (SELECT {column} AS cur, lag({column}) OVER (ORDER BY rowid) AS prev
                               FROM {table})
        WHERE cur < prev LIMIT 5""").fetchall()


@pytest.mark.parametrize("bulk_min_rows", [0, 10**12], ids=["bulk", "batches"])
def test_replay_writes_each_table_in_the_folds_order(tmp_path: Path, bulk_min_rows: int) -> None:
    fill_log(tmp_path / "log", RUNS)
    db = tmp_path / "replayed.duckdb"
    with EventLog(tmp_path / "log", readonly=True) as event_log:
        # batch_rows: several batches on the batched path, so its MERGEs are covered too.
        build(event_log, db, batch_rows=3_000, bulk_min_rows=bulk_min_rows)
    con = duckdb.connect(str(db), read_only=True)
    try:
        for table, column in ORDER.items():
            if bulk_min_rows and table in UPSERTED:
                continue
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
            assert out_of_order(con, table, column) == [], f"{table} not in {column} order"
        # Not vacuous for runs: its key order differs from its last_seq order here.
        assert con.execute("""SELECT count(*) FROM (SELECT last_seq,
                                  lag(last_seq) OVER (ORDER BY component, run_id) AS prev FROM runs)
                              WHERE last_seq < prev""").fetchone()[0] > 0
    finally:
        con.close()
