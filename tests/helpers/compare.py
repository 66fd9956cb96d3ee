"""Equality with room for floats: DuckDB sums in an order that depends on batching and
threads, so sums and averages may differ in their last bits."""

from __future__ import annotations

import math
from typing import Any

REL_TOL = 1e-9  # sums and averages may differ in the last bits by summation order


def same_value(a: Any, b: Any, rel_tol: float = REL_TOL, *, scale: float = 0.0,
               finite: bool = False) -> bool:
    """Equal and of one type; two floats may differ by `rel_tol` times the larger of
    |a|, |b| and `scale` (for interpolations between values of opposite sign, whose
    result may be near 0). Two NaNs, or two equal infinities, are the same unless
    `finite`: then a NaN or an infinity matches nothing."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return not finite and math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return not finite and a == b
        return abs(a - b) <= rel_tol * max(abs(a), abs(b), scale)
    return type(a) is type(b) and a == b


def assert_same_json(got: Any, expected: Any, where: str = "", rel_tol: float = REL_TOL,
                     *, finite: bool = False) -> None:
    """Equal JSON (dicts with the same keys, lists of the same length), leaves compared
    by `same_value`; a failure names the path to the leaf that differs."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same_json(got[key], expected[key], f"{where}/{key}", rel_tol, finite=finite)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same_json(g, e, f"{where}[{i}]", rel_tol, finite=finite)
    else:
        ok = same_value(got, expected, rel_tol, finite=finite)
        assert ok, f"{where}: {got!r} != {expected!r}"
