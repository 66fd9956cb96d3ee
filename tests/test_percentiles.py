"""The performance report's percentiles against a recompute in plain Python, through a
real server: every percentile within the window's [min, max]; exact (quantile_cont)
for windows of at most EXACT_MAX_POINTS points and for constant ones, and said to be;
within the stated relative error otherwise. Each item carries its metric's unit."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from helpers.stats import interpolated_bound, quantile_cont

from runlake.views.metric_daily import ALPHA, EXACT_MAX_POINTS

MakeServer = Callable[..., Any]
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def draw(rng: random.Random, n: int) -> list[float]:
    """n values mixing signs, zeros and magnitudes (none in (0, 1e-9), which the sketch
    reports as 0)."""
    kinds = [lambda: rng.gauss(70, 20), lambda: -rng.expovariate(0.1), lambda: 0.0,
             lambda: rng.uniform(-5, 5), lambda: rng.lognormvariate(3, 2),
             lambda: round(rng.uniform(0, 100), 2)]
    return [rng.choice(kinds)() for _ in range(n)]


# model -> (unit of each point, values by days ago)
def groups(rng: random.Random) -> dict[str, tuple[list[str | None], dict[int, list[float]]]]:
    out: dict[str, tuple[list[str | None], dict[int, list[float]]]] = {
        "single": (["ms"], {0: [70.24]}),
        "single-negative": (["ms"], {1: [-3.5]}),
        "zero": (["ms"], {0: [0.0]}),
        "constant-large": (["s"] * 300, {0: [42.5] * 200, 1: [42.5] * 100}),
        "two": ([None] * 2, {0: [1.0, 1e6]}),
        "mixed-units": (["ms", "s", None, "ms"], {0: [5.0, 6.0, 7.0, 8.0]}),
        # exact within the window (64 points over 3 days), not over the next day too
        "edge": (["ms"] * 80, {0: draw(rng, 30), 1: draw(rng, 20), 2: draw(rng, 14),
                               3: draw(rng, 16)}),
    }
    for i in range(12):  # small: exact
        n = rng.randint(3, EXACT_MAX_POINTS)
        days = {d: [] for d in range(3)}
        for v in draw(rng, n):
            days[rng.randrange(3)].append(v)
        out[f"small-{i:02d}"] = (["ms"] * n, {d: vs for d, vs in days.items() if vs})
    for i in range(6):  # large: the sketch's
        n = rng.choice([EXACT_MAX_POINTS + 1, 200, 1500])
        out[f"large-{i:02d}"] = (["ms"] * n, {0: draw(rng, n // 2), 2: draw(rng, n - n // 2)})
    return out


def events(groups: dict[str, tuple[list[str | None], dict[int, list[float]]]]
           ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for model, (units, days) in groups.items():
        run = f"run-{model}"
        out.append({"type": "run", "component": "perc", "run_id": run, "model": model,
                    "hardware": "hw", "ts": NOON.isoformat()})
        values = [(ago, v) for ago, vs in sorted(days.items()) for v in vs]
        for (ago, v), unit in zip(values, units, strict=True):
            ev = {"type": "metric", "component": "perc", "run_id": run, "name": "lat",
                  "value": v, "ts": (NOON - timedelta(days=ago)).isoformat()}
            if unit is not None:
                ev["unit"] = unit
            out.append(ev)
    return out


def check(item: dict[str, Any], units: list[str | None], days: dict[int, list[float]],
          window: int, today: date) -> None:
    """One report item against its group's points in the window (`window` days to
    `today`, the server's)."""
    model = item["model"]
    first = today - timedelta(days=window - 1)
    inside = [ago for ago in days if first <= (NOON - timedelta(days=ago)).date() <= today]
    values = sorted(v for ago in inside for v in days[ago])
    agos = [ago for ago, vs in sorted(days.items()) for _ in vs]  # as events() sends them
    unit_of = [u for u, ago in zip(units, agos, strict=True) if ago in inside]
    assert item["unit"] == min((u for u in unit_of if u is not None), default=None), model
    lo, hi = values[0], values[-1]
    assert (item["count"], item["min"], item["max"]) == (len(values), lo, hi), model
    exact = len(values) <= EXACT_MAX_POINTS or lo == hi
    assert item["approximate"] is not exact, model
    assert item["relative_error"] == (0.0 if exact else ALPHA), model
    for name, q in QUANTILES:
        got, want = item[name], quantile_cont(values, q)
        assert lo <= got <= hi, (model, name, got, lo, hi)
        if exact:
            assert got == want, (model, name, got, want)
        else:
            assert abs(got - want) <= interpolated_bound(values, q, ALPHA), (model, name)


def test_percentiles_match_a_recompute(make_server: MakeServer) -> None:
    rng = random.Random(1616)
    data = groups(rng)

    async def main() -> None:
        async with make_server() as client:
            reply = await client.post_events(events(data))
            assert reply.status == 202, reply.body
            last = reply.json()["last_seq"]
            for window in (1, 3, 10):
                got = await client.get(
                    f"/api/perc/db/performance?days={window}&limit=1000&min_seq={last}")
                assert got.status == 200, got.body
                report = got.json()
                today = date.fromisoformat(report["until"])
                items = {i["model"]: i for i in report["items"]}
                want = {m for m, (_, days) in data.items()
                        if any((NOON - timedelta(days=a)).date() >= today - timedelta(
                            days=window - 1) for a in days)}
                assert set(items) == want, window
                for model, item in items.items():
                    check(item, *data[model], window, today)
            assert items["single"]["p50"] == 70.24  # the example
            assert items["edge"]["approximate"] and not items["small-00"]["approximate"]

    asyncio.run(main())
