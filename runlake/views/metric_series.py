"""The performance report's series: every metric group's daily rollups, in memory.

A report over N days merges, for each group on its page, N days of counts and
histograms. In DuckDB a group's days lie scattered over the rollups (the fold
appends each day's rows as they come), so a page read most of the window's rows:
36-48 ms at 10 M events whatever the layout tried (BENCHMARKS.md, sessions 4-5).
Here each group keeps its days together, in order, in compact arrays, and a page
costs a few milliseconds of Python.

This is a cache of `metric_daily` and `metric_hist`, which stay the truth:
- loaded from them (one snapshot) when the server starts, or by the first report;
- brought up to date lazily: each fold batch notes the (group, day) keys it touched
  (`touched`, then `note`, before the fold publishes its high-water mark), and the
  next report first reads those keys' current rows and replaces its entries. The
  fold's own cost stays a few columns per batch: reading the rows at every batch
  took a quarter of the NDJSON ingest rate, as the fold shares the GIL with it;
- dropped when a replay swaps the database file, and loaded again from the new one.
Memory: ~12 bytes per `metric_hist` row, ~50 per `metric_daily` row and 8 per
value a small day keeps (`vals`, at most EXACT_MAX_POINTS a day).

A window of at most EXACT_MAX_POINTS points has exact percentiles, from the values
its days keep; a larger one has the histograms' (within ALPHA, never outside the
window's [min, max]), exact again when min = max. Each item says which it has.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from itertools import accumulate
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from runlake.views.metric_daily import (
    ALPHA,
    EXACT_MAX_POINTS,
    QUANTILES,
    exact_percentile,
    merged_percentile,
)
from runlake.views.view import NULLABLE_KEYS, same

Cursor = duckdb.DuckDBPyConnection
GroupKey = tuple[str | None, str | None, str]  # (model, hardware, metric)
EPOCH = date(1970, 1, 1)
KEY = ("component", "model", "hardware", "metric")
# Keys of (group, day) waiting to be read again: beyond this many, loading anew is
# cheaper than reading them (a load reads a few million rows at most; BENCHMARKS.md).
MAX_PENDING = 300_000


def _day(alias: str) -> str:
    """`alias.day` as days since the epoch: a small int that crosses to Python as one."""
    return f"({alias}.day - DATE '1970-01-01')::INTEGER"


def _group_order(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" + (" NULLS LAST" if c in NULLABLE_KEYS else "")
                     for c in KEY)


# Loading: the groups in the report's order with their number of days, then every
# day's figures and every histogram row in the same order (group keys are unique),
# so that they line up: only numbers cross to Python, as whole columns (units as
# indexes into the few distinct ones, a small day's values flattened).
_LOAD_GROUPS = f"""SELECT component, model, hardware, metric, count(*) FROM metric_daily d
GROUP BY ALL ORDER BY {_group_order("d")}"""
_LOAD_DAILY = f"""
SELECT {_day("d")}, d.count, d.sum, d.min, d.max, h.rows, d.unit, d.vals
FROM metric_daily d JOIN (
    SELECT component, model, hardware, metric, day, count(*) AS rows FROM metric_hist GROUP BY ALL
) h ON {same("d", "h", *KEY, "day")}
ORDER BY {_group_order("d")}, d.day"""
_LOAD_HIST = f"SELECT bucket, count FROM metric_hist h ORDER BY {_group_order('h')}, day, bucket"

# The current rows of the (group, day) keys in `series_keys` (fold batches touched
# them since they were last read): a key without a daily row lost all its points.
# Both read only from the earliest day on, so zone maps skip older row groups.
_SINCE = "(SELECT min(day) FROM series_keys)"
_ON = same("t", "r", *KEY, "day")
_CHANGED_DAILY = f"""
SELECT t.component, t.model, t.hardware, t.metric, {_day("t")}, r.count, r.sum, r.min, r.max,
       r.unit, r.vals
FROM (SELECT DISTINCT * FROM series_keys) t
LEFT JOIN (SELECT * FROM metric_daily WHERE day >= {_SINCE}) r ON {_ON}"""
_CHANGED_HIST = f"""
SELECT r.component, r.model, r.hardware, r.metric, {_day("r")}, r.bucket, r.count
FROM metric_hist r SEMI JOIN series_keys t ON {_ON}
WHERE r.day >= {_SINCE} ORDER BY ALL"""


def _order(key: GroupKey) -> tuple[Any, ...]:
    """The report's order of groups: model, hardware (NULLs last), metric."""
    model, hardware, metric = key
    return (model is None, model or "", hardware is None, hardware or "", metric)


class _Group:
    """One (component, model, hardware, metric): its days in order, and for each its
    count/sum/min/max, unit (an index into the series' units, -1 for none), histogram
    (bucket keys in order, counts) and values if it keeps them. The histograms of all
    days lie end to end, day k's at [hoff[k], hoff[k+1]); so do the values, at
    [voff[k], voff[k+1]) (empty for a day of more than EXACT_MAX_POINTS points)."""

    __slots__ = ("key", "order", "days", "count", "sum", "min", "max", "unit",
                 "hoff", "hb", "hc", "voff", "vv")

    def __init__(self, key: GroupKey) -> None:
        self.key, self.order = key, _order(key)
        self.days, self.count = array("i"), array("q")
        self.sum, self.min, self.max = array("d"), array("d"), array("d")
        self.unit = array("i")
        self.hoff, self.hb, self.hc = array("q", [0]), array("i"), array("q")
        self.voff, self.vv = array("q", [0]), array("d")

    def put(self, day: int, count: int, total: float, lo: float, hi: float, unit: int,
            values: Sequence[float], buckets: Sequence[int], counts: Sequence[int]) -> None:
        """Set day `day`'s rollup, replacing what it held."""
        k = bisect.bisect_left(self.days, day)
        if k == len(self.days) or self.days[k] != day:
            for col, value in ((self.days, day), (self.count, 0), (self.sum, 0.0),
                               (self.min, 0.0), (self.max, 0.0), (self.unit, -1)):
                col.insert(k, value)
            self.hoff.insert(k + 1, self.hoff[k])
            self.voff.insert(k + 1, self.voff[k])
        self.count[k], self.sum[k], self.min[k], self.max[k] = count, total, lo, hi
        self.unit[k] = unit
        _splice(self.hoff, (self.hb, self.hc), k, (buckets, counts))
        _splice(self.voff, (self.vv,), k, (values,))

    def drop(self, day: int) -> None:
        """Forget day `day` (all its points are gone)."""
        k = bisect.bisect_left(self.days, day)
        if k == len(self.days) or self.days[k] != day:
            return
        _splice(self.hoff, (self.hb, self.hc), k, ((), ()))
        _splice(self.voff, (self.vv,), k, ((),))
        for col in (self.days, self.count, self.sum, self.min, self.max, self.unit):
            del col[k]
        del self.hoff[k + 1]
        del self.voff[k + 1]

    def report(self, start: int, end: int, dates: dict[int, date],
               units: list[str], trend: bool = True) -> dict[str, Any]:
        """This group over days [start, end]: its totals, percentiles and (if `trend`,
        else empty) its daily trend."""
        i, j = bisect.bisect_left(self.days, start), bisect.bisect_right(self.days, end)
        n = sum(self.count[i:j])
        lo, hi = min(self.min[i:j]), max(self.max[i:j])
        model, hardware, metric = self.key
        item: dict[str, Any] = {
            "model": model, "hardware": hardware, "metric": metric,
            "unit": min((units[u] for u in self.unit[i:j] if u >= 0), default=None),
            "count": n, "mean": sum(self.sum[i:j]) / n, "min": lo, "max": hi}
        approximate = n > EXACT_MAX_POINTS and lo != hi
        if not approximate:
            values = sorted(self.vv[self.voff[i]:self.voff[j]]) if lo != hi else [lo]
            for q in QUANTILES:
                item[f"p{round(q * 100)}"] = exact_percentile(values, q)
        else:
            keys, cum = self._histogram(i, j)
            for q in QUANTILES:
                item[f"p{round(q * 100)}"] = merged_percentile(keys, cum, q, lo, hi)
        item["approximate"] = approximate
        item["relative_error"] = ALPHA if approximate else 0.0
        item["trend"] = [
            {"day": dates[d], "count": c, "mean": s / c, "min": lo, "max": hi}
            for d, c, s, lo, hi in zip(self.days[i:j], self.count[i:j], self.sum[i:j],
                                       self.min[i:j], self.max[i:j], strict=True)
        ] if trend else []
        return item

    def _histogram(self, i: int, j: int) -> tuple[list[int], list[int]]:
        """Days [i, j)'s histograms merged: bucket keys in order, running counts."""
        a, b = self.hoff[i], self.hoff[j]
        if j - i == 1:  # one day: its buckets are already in order
            buckets: Iterable[int] = self.hb[a:b]
            counts: Iterable[int] = self.hc[a:b]
        else:
            merged: dict[int, int] = {}
            get = merged.get
            for bucket, c in zip(self.hb[a:b], self.hc[a:b], strict=True):
                merged[bucket] = get(bucket, 0) + c
            buckets = sorted(merged)
            counts = [merged[bucket] for bucket in buckets]
        return list(buckets), list(accumulate(counts))


def _splice(offsets: array, cols: tuple[array, ...], k: int,
            new: tuple[Sequence[Any], ...]) -> None:
    """Set row k's slice [offsets[k], offsets[k+1]) of the parallel arrays `cols` to
    `new`, moving the later rows' offsets."""
    a, b = offsets[k], offsets[k + 1]
    for col, values in zip(cols, new, strict=True):
        col[a:b] = array(col.typecode, values)
    if shift := len(new[0]) - (b - a):
        for i in range(k + 1, len(offsets)):
            offsets[i] += shift


class _Component:
    """A component's groups, by key and in the report's order (sorted when read)."""

    __slots__ = ("by_key", "ordered", "sorted")

    def __init__(self) -> None:
        self.by_key: dict[GroupKey, _Group] = {}
        self.ordered: list[_Group] = []
        self.sorted = True

    def group(self, key: GroupKey) -> _Group:
        if (g := self.by_key.get(key)) is None:
            g = self.by_key[key] = _Group(key)
            self.ordered.append(g)
            self.sorted = False
        return g

    def in_order(self) -> list[_Group]:
        if not self.sorted:
            self.ordered = [g for g in self.ordered if g.days]  # emptied groups go
            self.by_key = {g.key: g for g in self.ordered}
            self.ordered.sort(key=lambda g: g.order)
            self.sorted = True
        return self.ordered


class MetricSeries:
    """Thread-safe: the fold notes what it touched while readers build reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, _Component] | None = None  # None: not loaded
        self._units = _Units()  # the days' units, each held once
        self._pending: list[pa.Table] = []  # keys noted since the last read
        self._pending_rows = 0

    @property
    def loaded(self) -> bool:
        return self._components is not None

    def reset(self) -> None:
        """Forget everything (the database file was replaced): the next report loads."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._components, self._pending, self._pending_rows = None, [], 0
        self._units = _Units()

    def ensure_loaded(self, cur: Cursor) -> None:
        """Load from the rollups if not loaded yet (and read what batches touched)."""
        with self._lock:
            self._current(cur)

    @staticmethod
    def touched(con: Cursor) -> pa.Table:
        """The (group, day) keys the fold's last batch touched (its `touched_metrics`, a
        temp table of the fold's connection): a few columns, no Python object per key."""
        return con.sql("SELECT * FROM touched_metrics").to_arrow_table()

    def note(self, keys: pa.Table) -> None:
        """After a fold batch committed: its keys are to be read again by the next
        report. A series not loaded ignores them: its load will read the batch (the
        load holds the lock from before its snapshot, so a batch noted after the
        load began committed before it). A key noted twice is read twice, the same."""
        with self._lock:
            if self._components is None or keys.num_rows == 0:
                return
            self._pending.append(keys)
            self._pending_rows += keys.num_rows
            if self._pending_rows > MAX_PENDING:
                self._drop()

    def _current(self, cur: Cursor) -> dict[str, _Component]:
        """The components, loaded or brought up to date first; the caller holds the
        lock. Pending keys are read in one snapshot, which holds every batch they
        came from (each committed before it was noted)."""
        if self._components is None:
            self._components, self._units = _load(cur)
        elif self._pending:
            keys = pa.concat_tables(self._pending)
            cur.register("series_keys", keys)
            try:
                with _snapshot(cur):
                    daily = cur.execute(_CHANGED_DAILY).fetchall()
                    hist = cur.execute(_CHANGED_HIST).fetchall()
            finally:
                cur.unregister("series_keys")
            self._pending, self._pending_rows = [], 0
            self._replace(daily, hist)
        return self._components

    def _replace(self, daily: list[tuple[Any, ...]], hist: list[tuple[Any, ...]]) -> None:
        """Set each (group, day) of `daily` to its row and histogram, or drop it."""
        assert self._components is not None
        buckets: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
        for *key, bucket, count in hist:
            b, c = buckets.setdefault(tuple(key), ([], []))
            b.append(bucket)
            c.append(count)
        for component, model, hardware, metric, day, count, total, lo, hi, unit, vals in daily:
            if count is None:
                comp = self._components.get(component)
                if comp is not None and (g := comp.by_key.get((model, hardware, metric))) is not None:
                    g.drop(day)
                    if not g.days:
                        comp.sorted = False  # in_order drops it
                continue
            if (comp := self._components.get(component)) is None:
                comp = self._components[component] = _Component()
            b, c = buckets[(component, model, hardware, metric, day)]
            comp.group((model, hardware, metric)).put(
                day, count, total, lo, hi, self._units.id(unit), vals or (), b, c)

    def rows(self, cur: Cursor) -> list[tuple[Any, ...]]:
        """Every (group, day) held, as (component, model, hardware, metric, day, count,
        sum, min, max, unit, vals, ((bucket, count), ...)) in the report's order: what
        the tests compare with the rollups' own rows (`vals` None where not kept)."""
        with self._lock:
            components = self._current(cur)
            units = self._units.names
            return [(component, *g.key, EPOCH + timedelta(days=day), g.count[k], g.sum[k],
                     g.min[k], g.max[k], units[g.unit[k]] if g.unit[k] >= 0 else None,
                     list(g.vv[g.voff[k]:g.voff[k + 1]])
                     if g.count[k] <= EXACT_MAX_POINTS else None,
                     tuple(zip(g.hb[g.hoff[k]:g.hoff[k + 1]], g.hc[g.hoff[k]:g.hoff[k + 1]],
                               strict=True)))
                    for component, comp in sorted(components.items())
                    for g in comp.in_order() for k, day in enumerate(g.days)]

    def report(self, cur: Cursor, component: str, since: date, until: date, *,
               model: str | None = None, hardware: str | None = None,
               metric: str | None = None, limit: int = 100, offset: int = 0,
               after: GroupKey | None = None, trend: bool = True
               ) -> tuple[int, list[dict[str, Any]]]:
        """(groups with points in the window, the page's items): the window is the
        days `since` to `until`, both included; items in (model, hardware, metric) order,
        from `offset` among those after the group `after` (a `next` token's) if given;
        each item's daily trend only if `trend` (else empty)."""
        start, end = (since - EPOCH).days, (until - EPOCH).days
        dates = {d: EPOCH + timedelta(days=d) for d in range(start, end + 1)}
        with self._lock:
            comp = self._current(cur).get(component)
            groups = comp.in_order() if comp is not None else []
            if model is not None or hardware is not None or metric is not None:
                groups = [g for g in groups if (model is None or g.key[0] == model)
                          and (hardware is None or g.key[1] == hardware)
                          and (metric is None or g.key[2] == metric)]
            # Groups with a day in the window, inline: this runs for every group of
            # the component (4 000 at 10 M events), where a method call per group
            # cost ~1 ms in all.
            # A group's days are never empty here (in_order drops emptied groups).
            match = [g for g in groups if (d := g.days)[0] <= end and d[-1] >= start
                     and (d[0] >= start or d[-1] <= end or d[bisect.bisect_left(d, start)] <= end)]
            units = self._units.names
            rest = match
            if after is not None:  # a group's key never changes: keyset by it
                past = _order(after)
                rest = [g for g in match if g.order > past]
            return len(match), [g.report(start, end, dates, units, trend)
                                for g in rest[offset:offset + limit]]


@contextmanager
def _snapshot(cur: Cursor) -> Iterator[None]:
    """The queries inside read one state of the database, whatever the fold commits.
    On an error (an interrupted read) the transaction is rolled back: a COMMIT of the
    aborted transaction would raise, hiding the error, and so would what the caller
    undoes in it (`unregister`)."""
    cur.execute("BEGIN")
    try:
        yield
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


class _Units:
    """The distinct units of the series' days, each an index into `names`."""

    __slots__ = ("names", "ids")

    def __init__(self, names: list[str] | None = None) -> None:
        self.names = names or []
        self.ids = {name: i for i, name in enumerate(self.names)}

    def id(self, unit: str | None) -> int:
        if unit is None:
            return -1
        if (i := self.ids.get(unit)) is None:
            i = self.ids[unit] = len(self.names)
            self.names.append(unit)
        return i


def _load(cur: Cursor) -> tuple[dict[str, _Component], _Units]:
    """Every group's days from one snapshot of the rollups."""
    with _snapshot(cur):
        groups = cur.execute(_LOAD_GROUPS).fetchall()
        daily = cur.sql(_LOAD_DAILY).to_arrow_table()
        hist = cur.sql(_LOAD_HIST).to_arrow_table()
    days, count, total, lo, hi, rows = (_array(code, daily.column(i))
                                        for i, code in enumerate("iqdddq"))
    names = pc.unique(daily.column(6)).drop_null()
    units = _Units(names.to_pylist())
    unit = _array("i", pc.fill_null(pc.index_in(daily.column(6), value_set=names), -1))
    vals = daily.column(7)
    values = _array("d", pc.list_flatten(vals))
    value_rows = pc.fill_null(pc.list_value_length(vals), 0).cast(pa.int64())
    buckets, counts = _array("i", hist.column(0)), _array("q", hist.column(1))
    del daily, hist, vals
    offsets = array("q", [0])  # where each day's histogram starts in buckets/counts
    offsets.extend(accumulate(rows))
    voffsets = array("q", [0])  # where each day's values start in values
    voffsets.extend(accumulate(_array("q", value_rows)))
    if (sum(n for *_, n in groups) != len(days) or offsets[-1] != len(buckets)
            or voffsets[-1] != len(values)):
        raise RuntimeError("metric_daily and metric_hist disagree: replay the log")
    components: dict[str, _Component] = {}
    at = 0
    for component, model, hardware, metric, n in groups:
        g = components.setdefault(component, _Component()).group((model, hardware, metric))
        end = at + n
        g.days, g.count, g.sum = days[at:end], count[at:end], total[at:end]
        g.min, g.max, g.unit = lo[at:end], hi[at:end], unit[at:end]
        first, last = offsets[at], offsets[end]
        g.hoff = array("q", [x - first for x in offsets[at:end + 1]])
        g.hb, g.hc = buckets[first:last], counts[first:last]
        first, last = voffsets[at], voffsets[end]
        g.voff = array("q", [x - first for x in voffsets[at:end + 1]])
        g.vv = values[first:last]
        at = end
    for comp in components.values():
        comp.in_order()  # DuckDB sorted them, but in its collation: sort them as reports do
    return components, units


def _array(code: str, column: pa.ChunkedArray) -> array:
    """A non-null numeric column as a compact array, without a Python object per value."""
    out = array(code)
    width = out.itemsize
    if column.null_count or column.type.bit_width != 8 * width:
        raise TypeError(f"{column.type} with {column.null_count} nulls is not array({code!r})")
    for chunk in column.chunks:
        data = chunk.buffers()[1]
        out.frombytes(memoryview(data)[chunk.offset * width:(chunk.offset + len(chunk)) * width])
    return out
