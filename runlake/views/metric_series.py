"""The performance report's series: every metric group's daily rollups, in memory.

A report over N days merges, for each group on its page, N days of counts and
histograms. In DuckDB a group's days lie scattered over the rollups (the fold
appends each day's rows as they come), so a page read most of the window's rows:
36-48 ms at 10 M events whatever the layout tried (BENCHMARKS.md, sessions 4-5).
Here each group keeps its days together, in order, in compact arrays, and a page
costs a few milliseconds of Python.

This is a cache of `metric_daily` and `metric_hist`, which stay the truth:
- loaded from them (one snapshot) the first time a report needs it;
- kept by the fold: after each batch commits, the (group, day) entries the batch
  touched are replaced by their new rows, read inside the batch's transaction
  (`changes`, then `apply`), before the fold publishes its new high-water mark,
  so a read with `min_seq` sees its writes here too;
- dropped when a replay swaps the database file, and loaded again from the new one.
Memory: ~12 bytes per `metric_hist` row and ~45 per `metric_daily` row (~40 MB
at 10 M events); loading at 10 M events takes about a second.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from typing import Any

import duckdb
import pyarrow as pa

from runlake.views.metric_daily import QUANTILES, merged_percentile

Cursor = duckdb.DuckDBPyConnection
GroupKey = tuple[str | None, str | None, str]  # (model, hardware, metric)
EPOCH = date(1970, 1, 1)
_DAY = "(day - DATE '1970-01-01')::INTEGER"  # days since the epoch: a small int

# Loading: the groups in the report's order with their number of days, then every
# day's figures and every histogram row in the same order (group keys are unique),
# so that they line up: only numbers cross to Python, as whole columns.
_GROUP_ORDER = "component, model NULLS LAST, hardware NULLS LAST, metric"
_LOAD_GROUPS = f"""SELECT component, model, hardware, metric, count(*) FROM metric_daily
GROUP BY ALL ORDER BY {_GROUP_ORDER}"""
_LOAD_DAILY = f"""
SELECT {_DAY.replace("day", "d.day")} AS day, d.count, d.sum, d.min, d.max, h.rows
FROM metric_daily d JOIN (
    SELECT component, model, hardware, metric, day, count(*) AS rows FROM metric_hist GROUP BY ALL
) h ON d.component = h.component AND d.model IS NOT DISTINCT FROM h.model
    AND d.hardware IS NOT DISTINCT FROM h.hardware AND d.metric = h.metric AND d.day = h.day
ORDER BY d.component, d.model NULLS LAST, d.hardware NULLS LAST, d.metric, d.day"""
_LOAD_HIST = f"SELECT bucket, count FROM metric_hist ORDER BY {_GROUP_ORDER}, day, bucket"

# The new rows of the (group, day) keys the fold's batch touched (its scope table
# `touched_metrics`): a key without a daily row lost all its points. Both read
# only from the batch's earliest day on, so zone maps skip the older row groups.
_TOUCHED = "(SELECT min(day) FROM touched_metrics)"
_ON = ("t.component = r.component AND t.model IS NOT DISTINCT FROM r.model "
       "AND t.hardware IS NOT DISTINCT FROM r.hardware AND t.metric = r.metric AND t.day = r.day")
_CHANGED_DAILY = f"""
SELECT t.component, t.model, t.hardware, t.metric, {_DAY.replace("day", "t.day")},
       r.count, r.sum, r.min, r.max
FROM touched_metrics t LEFT JOIN (SELECT * FROM metric_daily WHERE day >= {_TOUCHED}) r ON {_ON}"""
_CHANGED_HIST = f"""
SELECT r.component, r.model, r.hardware, r.metric, {_DAY.replace("day", "r.day")}, r.bucket, r.count
FROM metric_hist r SEMI JOIN touched_metrics t ON {_ON}
WHERE r.day >= {_TOUCHED} ORDER BY ALL"""


def _order(key: GroupKey) -> tuple[Any, ...]:
    """The report's order of groups: model, hardware (NULLs last), metric."""
    model, hardware, metric = key
    return (model is None, model or "", hardware is None, hardware or "", metric)


class _Group:
    """One (component, model, hardware, metric): its days in order, and for each its
    count/sum/min/max and histogram (bucket keys in order, counts), the histograms
    of all days laid end to end, day k's at [hoff[k], hoff[k+1])."""

    __slots__ = ("key", "order", "days", "count", "sum", "min", "max", "hoff", "hb", "hc")

    def __init__(self, key: GroupKey) -> None:
        self.key, self.order = key, _order(key)
        self.days, self.count = array("i"), array("q")
        self.sum, self.min, self.max = array("d"), array("d"), array("d")
        self.hoff, self.hb, self.hc = array("q", [0]), array("i"), array("q")

    def put(self, day: int, count: int, total: float, lo: float, hi: float,
            buckets: Sequence[int], counts: Sequence[int]) -> None:
        """Set day `day`'s rollup, replacing what it held."""
        k = bisect.bisect_left(self.days, day)
        if k == len(self.days) or self.days[k] != day:
            for col, value in ((self.days, day), (self.count, 0), (self.sum, 0.0),
                               (self.min, 0.0), (self.max, 0.0)):
                col.insert(k, value)
            self.hoff.insert(k + 1, self.hoff[k])
        self.count[k], self.sum[k], self.min[k], self.max[k] = count, total, lo, hi
        self._set_hist(k, buckets, counts)

    def drop(self, day: int) -> None:
        """Forget day `day` (all its points are gone)."""
        k = bisect.bisect_left(self.days, day)
        if k == len(self.days) or self.days[k] != day:
            return
        self._set_hist(k, (), ())
        for col in (self.days, self.count, self.sum, self.min, self.max):
            del col[k]
        del self.hoff[k + 1]

    def _set_hist(self, k: int, buckets: Sequence[int], counts: Sequence[int]) -> None:
        a, b = self.hoff[k], self.hoff[k + 1]
        self.hb[a:b], self.hc[a:b] = array("i", buckets), array("q", counts)
        if shift := len(buckets) - (b - a):
            for i in range(k + 1, len(self.hoff)):
                self.hoff[i] += shift

    def report(self, start: int, end: int, dates: dict[int, date]) -> dict[str, Any]:
        """This group over days [start, end]: its totals, percentiles and trend."""
        i, j = bisect.bisect_left(self.days, start), bisect.bisect_right(self.days, end)
        n = sum(self.count[i:j])
        model, hardware, metric = self.key
        item: dict[str, Any] = {
            "model": model, "hardware": hardware, "metric": metric, "count": n,
            "mean": sum(self.sum[i:j]) / n, "min": min(self.min[i:j]), "max": max(self.max[i:j])}
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
        keys, cum, running = list(buckets), [], 0
        for c in counts:
            running += c
            cum.append(running)
        for q in QUANTILES:
            item[f"p{round(q * 100)}"] = merged_percentile(keys, cum, q)
        item["trend"] = [
            {"day": dates[d], "count": c, "mean": s / c, "min": lo, "max": hi}
            for d, c, s, lo, hi in zip(self.days[i:j], self.count[i:j], self.sum[i:j],
                                       self.min[i:j], self.max[i:j], strict=True)]
        return item


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


@dataclass(frozen=True)
class Changes:
    """The new rollups of the (group, day) keys a fold batch touched: per key
    (component, model, hardware, metric, day), its daily row (count, sum, min, max)
    and histogram, or None if the day lost all its points."""

    days: dict[tuple[Any, ...], tuple[tuple[int, float, float, float], list[int], list[int]] | None]


class MetricSeries:
    """Thread-safe: the fold applies changes while readers build reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, _Component] | None = None  # None: not loaded

    @property
    def loaded(self) -> bool:
        return self._components is not None

    def reset(self) -> None:
        """Forget everything (the database file was replaced): the next report loads."""
        with self._lock:
            self._components = None

    def ensure_loaded(self, cur: Cursor) -> None:
        """Load from the rollups if not loaded yet. The lock is held throughout, so a
        fold batch that commits meanwhile applies its changes after the load's
        snapshot, and one that committed before is in it (replacing is idempotent)."""
        with self._lock:
            self._loaded(cur)

    def _loaded(self, cur: Cursor) -> dict[str, _Component]:
        """The components, loaded first if need be; the caller holds the lock."""
        if self._components is None:
            self._components = _load(cur)
        return self._components

    def rows(self, cur: Cursor) -> list[tuple[Any, ...]]:
        """Every (group, day) held, as (component, model, hardware, metric, day, count,
        sum, min, max, ((bucket, count), ...)) in key order: what the tests compare
        with the rollups' own rows."""
        with self._lock:
            out = []
            for component, comp in self._loaded(cur).items():
                for g in comp.in_order():
                    for k, day in enumerate(g.days):
                        a, b = g.hoff[k], g.hoff[k + 1]
                        out.append((component, *g.key, EPOCH + timedelta(days=day), g.count[k],
                                    g.sum[k], g.min[k], g.max[k],
                                    tuple(zip(g.hb[a:b], g.hc[a:b], strict=True))))
        return sorted(out, key=lambda r: (r[0], _order(r[1:4]), r[4]))

    @staticmethod
    def changes(con: Cursor) -> Changes:
        """Read, inside the fold's transaction after the views' refresh, the new rows
        of what the batch touched (its `touched_metrics`)."""
        out: dict[tuple[Any, ...], Any] = {}
        for *key, count, total, lo, hi in con.execute(_CHANGED_DAILY).fetchall():
            out[tuple(key)] = None if count is None else ((count, total, lo, hi), [], [])
        for *key, bucket, count in con.execute(_CHANGED_HIST).fetchall():
            entry = out[tuple(key)]
            entry[1].append(bucket)
            entry[2].append(count)
        return Changes(out)

    def apply(self, changes: Changes | None) -> None:
        """Replace the touched (group, day) entries (after the batch committed).
        None: the batch's changes were not read, as the series was not loaded when
        it began; if it loaded meanwhile its snapshot may lack them: load again."""
        with self._lock:
            if changes is None:
                self._components = None
            if self._components is None:  # the next report loads what committed
                return
            for (component, model, hardware, metric, day), entry in changes.days.items():
                comp = self._components.setdefault(component, _Component())
                if entry is None:
                    if (g := comp.by_key.get((model, hardware, metric))) is not None:
                        g.drop(day)
                        if not g.days:
                            comp.sorted = False  # in_order drops it
                    continue
                (count, total, lo, hi), buckets, counts = entry
                comp.group((model, hardware, metric)).put(day, count, total, lo, hi,
                                                          buckets, counts)

    def report(self, cur: Cursor, component: str, days: int, *, today: date,
               model: str | None = None, hardware: str | None = None,
               metric: str | None = None, limit: int = 100, offset: int = 0
               ) -> tuple[int, list[dict[str, Any]]]:
        """(groups with points in the window, the page's items): the window is the
        `days` days ending `today`; items in (model, hardware, metric) order."""
        start, end = (today - EPOCH).days - (days - 1), (today - EPOCH).days
        dates = {d: EPOCH + timedelta(days=d) for d in range(start, end + 1)}
        with self._lock:
            comp = self._loaded(cur).get(component)
            groups = comp.in_order() if comp is not None else []
            if model is not None or hardware is not None or metric is not None:
                groups = [g for g in groups if (model is None or g.key[0] == model)
                          and (hardware is None or g.key[1] == hardware)
                          and (metric is None or g.key[2] == metric)]
            # Groups with a day in the window, inline: this runs for every group of
            # the component (4 000 at 10 M events), a method call each cost ~1 ms.
            # A group's days are never empty here (in_order drops emptied groups).
            match = [g for g in groups if (d := g.days)[0] <= end and d[-1] >= start
                     and (d[0] >= start or d[-1] <= end or d[bisect.bisect_left(d, start)] <= end)]
            return len(match), [g.report(start, end, dates)
                                for g in match[offset:offset + limit]]


def _load(cur: Cursor) -> dict[str, _Component]:
    """Every group's days from one snapshot of the rollups."""
    cur.execute("BEGIN")
    try:
        groups = cur.execute(_LOAD_GROUPS).fetchall()
        daily = cur.sql(_LOAD_DAILY).to_arrow_table()
        hist = cur.sql(_LOAD_HIST).to_arrow_table()
    finally:
        cur.execute("COMMIT")
    days, count, total, lo, hi, rows = (_array(code, daily.column(i))
                                        for i, code in enumerate("iqdddq"))
    buckets, counts = _array("i", hist.column(0)), _array("q", hist.column(1))
    del daily, hist
    offsets = array("q", [0])  # where each day's histogram starts in buckets/counts
    offsets.extend(accumulate(rows))
    components: dict[str, _Component] = {}
    at = 0
    for component, model, hardware, metric, n in groups:
        g = components.setdefault(component, _Component()).group((model, hardware, metric))
        end = at + n
        g.days, g.count, g.sum = days[at:end], count[at:end], total[at:end]
        g.min, g.max = lo[at:end], hi[at:end]
        first, last = offsets[at], offsets[end]
        g.hoff = array("q", [x - first for x in offsets[at:end + 1]])
        g.hb, g.hc = buckets[first:last], counts[first:last]
        at = end
    return components


def _array(code: str, column: pa.ChunkedArray) -> array:
    """A non-null numeric column as a compact array, without a Python object per value."""
    assert column.null_count == 0, "only the validity bitmap would say which are null"
    out = array(code)
    for chunk in column.chunks:
        data = chunk.buffers()[1]
        width = out.itemsize
        out.frombytes(memoryview(data)[chunk.offset * width:(chunk.offset + len(chunk)) * width])
    return out
