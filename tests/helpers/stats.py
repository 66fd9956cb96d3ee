"""Exact percentiles for the tests' expected values, computed in plain Python."""

from __future__ import annotations

import math


def quantile_cont(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks around q·(n−1) (numpy's default,
    DuckDB's quantile_cont). `values` need not be sorted; it must not be empty."""
    assert values, "quantile_cont of no values"
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def interpolated_bound(values: list[float], q: float, rel: float) -> float:
    """How far an interpolated percentile may be from `quantile_cont` when each of the
    two ranks around q·(n−1) is known only within a relative `rel` (a sketch's ALPHA);
    the last factor allows for rounding."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi, f = xs[math.floor(pos)], xs[math.ceil(pos)], pos - math.floor(pos)
    return rel * ((1 - f) * abs(lo) + f * abs(hi)) * (1 + 1e-9)
