"""Databases as data, for comparing folds: fold into a fresh file, dump every table,
compare two dumps (floats within a relative tolerance)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from helpers.compare import REL_TOL, same_value
from runlake.ingest.fold import fold_table, rebuild_views
from runlake.views import VIEWS
from runlake.views.db import Database

Rows = list[tuple[Any, ...]]


def dump_database(con: duckdb.DuckDBPyConnection) -> dict[str, Rows]:
    """Every table of the database (base tables and views), each as sorted rows."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE schema_name = 'main' AND NOT temporary ORDER BY 1"
        ).fetchall()
    ]
    return {name: sorted_rows(con.execute(f'SELECT * FROM "{name}"').fetchall()) for name in names}


def dump_file(path: Path, before: Callable[[Database], object] | None = None
              ) -> dict[str, Rows]:
    """`dump_database` of the file at `path` (made if missing), after `before(db)` (a
    fold, a check) if given; the file is closed again."""
    db = Database(path).open()
    try:
        if before is not None:
            before(db)
        return dump_database(db.connection)
    finally:
        db.close()


def fold_into(path: Path, table: pa.Table, cuts: Sequence[int] = (), *,
              incremental: bool = True) -> dict[str, Rows]:
    """`table` (seqs 1..n) folded into a fresh file at `path`, one batch between each two
    `cuts`; with `incremental=False`, base tables only and then `rebuild_views`. Returns
    the dump, which must hold every view. An incremental fold also keeps a performance
    series (loaded before the first batch), which must end equal to the rollups."""

    def fold(db: Database) -> None:
        con = db.connection
        series = db.series if incremental else None
        if series is not None:
            with closing(con.cursor()) as cur:
                series.ensure_loaded(cur)
        for part, hi in zip(split(table, cuts), [*cuts, table.num_rows], strict=True):
            assert fold_table(con, part, incremental=incremental, series=series) == hi
        if not incremental:
            rebuild_views(con)
        else:
            assert db.series.loaded, "a batch dropped the series"
            with closing(con.cursor()) as cur:  # reads the keys the batches noted
                kept = db.series.rows(cur)
            assert kept == series_rows(dump_database(con)), "the series kept by the fold"

    dump = dump_file(path, fold)
    assert {v.name for v in VIEWS} <= set(dump)
    return dump


def series_rows(dump: dict[str, Rows]) -> Rows:
    """What a performance series holds (`MetricSeries.rows`), from a dump's rollups:
    each metric_daily row with its metric_hist rows, in the report's order."""
    hist: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for *key, bucket, count in dump["metric_hist"]:
        hist.setdefault(tuple(key), []).append((bucket, count))
    rows = [(*key, count, total, lo, hi, unit, vals, tuple(sorted(hist.pop(tuple(key)))))
            for *key, count, total, lo, hi, unit, vals in dump["metric_daily"]]
    assert not hist, f"histograms without a daily row: {list(hist)[:3]}"

    def order(row: tuple[Any, ...]) -> tuple[Any, ...]:
        component, model, hardware, metric, day = row[:5]
        return (component, model is None, model or "", hardware is None, hardware or "",
                metric, day)

    return sorted(rows, key=order)


def split(table: pa.Table, cuts: Sequence[int]) -> list[pa.Table]:
    """`table` cut before each row index in `cuts` (ascending)."""
    return [table.slice(lo, hi - lo)
            for lo, hi in zip([0, *cuts], [*cuts, table.num_rows], strict=True)]


def sorted_rows(rows: Rows) -> Rows:
    """Rows as a sorted multiset; None sorts first in any column."""
    return sorted(rows, key=lambda row: tuple(_sort_key(v) for v in row))


def _sort_key(value: Any) -> tuple[Any, ...]:
    if value is None:
        return (0,)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return (1, float(value))
    if isinstance(value, datetime | date):
        return (2, value.isoformat())
    return (3, str(value))


def assert_same_database(
    actual: dict[str, Rows], expected: dict[str, Rows], what: str = ""
) -> None:
    """Same tables, and in each the same sorted rows (floats within REL_TOL)."""
    assert sorted(actual) == sorted(expected), f"{what}: different tables"
    for name in expected:
        got, want = actual[name], expected[name]
        assert len(got) == len(want), (
            f"{what}: table {name} has {len(got)} rows, expected {len(want)}\n"
            f"only in actual: {[r for r in got if r not in want][:5]}\n"
            f"only in expected: {[r for r in want if r not in got][:5]}"
        )
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            ok = len(g) == len(w) and all(
                same_value(x, y, REL_TOL) for x, y in zip(g, w, strict=True))
            assert ok, f"{what}: table {name}, row {i}:\n  actual   {g}\n  expected {w}"
