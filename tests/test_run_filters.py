"""The runs list's filters, sorts and keyset paging, and facets (issue 17, docs/facets.md),
against a real server: every expected answer is recomputed here in plain Python from
the runs the test describes and posts, never read back from runlake."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from helpers.server import Reply, ThreadedServer, serve_in_thread

from runlake.views import facets as facets_module

C = "lab"
T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
PROMPTS = ("a cat", "a dog", "a cat, in a hat", "rain")


@dataclass
class Spec:
    """One run as the test posts it, and the columns the runs list must show for it."""

    run_id: str
    model: str | None
    hardware: str | None
    batch_id: str | None
    name: str | None
    params: dict[str, Any] | None
    status: str
    tags: dict[str, str]
    created: datetime
    after_s: int  # the status event's ts, seconds after created

    @property
    def status_ts(self) -> datetime:
        return self.created + timedelta(seconds=self.after_s)

    def column(self, col: str) -> Any:
        """The runs list's value of `col` (DESIGN §3 definitions)."""
        if col in ("created_at",):
            return self.created
        if col == "updated_at":
            return self.created if self.status == "pending" else self.status_ts
        if col == "started_at":
            return self.status_ts if self.status == "running" else None
        if col == "finished_at":
            return self.status_ts if self.status in TERMINAL else None
        if col == "duration_s":
            return float(self.after_s) if self.status in TERMINAL else None
        if col == "error":
            return f"boom {self.run_id}" if self.status == "failed" else None
        return getattr(self, col)

    def param(self, path: str) -> str | None:
        """The params' value at a dot path, as text (JSON numbers as written)."""
        value: Any = self.params
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value if isinstance(value, str) else str(value)

    def events(self) -> list[dict[str, Any]]:
        base = {"component": C, "run_id": self.run_id}
        run = {**base, "type": "run", "ts": self.created.isoformat()}
        for key in ("model", "hardware", "batch_id", "name", "params"):
            if getattr(self, key) is not None:
                run[key] = getattr(self, key)
        out = [run] + [{**base, "type": "tag", "key": k, "value": v, "ts": self.created.isoformat()}
                       for k, v in self.tags.items()]
        if self.status != "pending":
            status = {**base, "type": "status", "status": self.status,
                      "ts": self.status_ts.isoformat()}
            if self.status == "failed":
                status["error"] = f"boom {self.run_id}"
            out.append(status)
        return out


def make_specs(rng: random.Random, n: int, prefix: str = "r",
               minutes: tuple[int, int] = (0, 40)) -> list[Spec]:
    specs = []
    for i in range(n):
        params: dict[str, Any] | None = rng.choice([
            None, {"other": 1},
            {"prompt": rng.choice(PROMPTS), "a": {"b": rng.randint(1, 3)}},
            {"prompt": rng.choice(PROMPTS)}])
        tags = {}
        if rng.random() < 0.7:
            tags["env"] = rng.choice(["prod", "dev"])
        if rng.random() < 0.5:
            tags["team"] = rng.choice(["x", "y", "z"])
        specs.append(Spec(
            run_id=f"{prefix}{i:03d}", model=rng.choice(["alpha", "beta", "gamma", None]),
            hardware=rng.choice(["h100", "a100", None]), batch_id=rng.choice(["b1", "b2", None]),
            name=rng.choice(["job-1", "job-2", "job-3", "mix,ed", "Job_1", "A_b%c", None]),
            params=params,
            status=rng.choice(STATUSES), tags=tags,
            created=T0 + timedelta(minutes=rng.randint(*minutes)),  # ties on purpose
            after_s=rng.randint(1, 500)))
    return specs


SPECS = make_specs(random.Random(17), 90)


@dataclass
class Lake:
    server: ThreadedServer
    specs: list[Spec] = field(default_factory=list)
    last_seq: int = 0

    def send(self, path: str) -> Reply:
        sep = "&" if "?" in path else "?"
        return self.server.run(self.server.client.get(f"{path}{sep}min_seq={self.last_seq}"))

    def get(self, path: str) -> Any:
        reply = self.send(path)
        assert reply.status == 200, (path, reply.body[:400])
        return reply.json()

    def post(self, specs: list[Spec]) -> None:
        events = [e for s in specs for e in s.events()]
        reply = self.server.run(self.server.client.post_events(events))
        assert reply.status == 202, reply.body[:400]
        self.last_seq = reply.json()["last_seq"]
        self.specs += specs


def _serve(tmp: Path) -> Iterator[Lake]:
    with serve_in_thread(tmp) as server:
        lake = Lake(server)
        lake.post(SPECS)
        yield lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    yield from _serve(tmp_path_factory.mktemp("filters"))


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Lake]:
    yield from _serve(tmp_path)


# -- the filter table -------------------------------------------------------------

Pred = Callable[[Spec], bool]


def _any(col: str, *values: str) -> Pred:
    return lambda s: s.column(col) in values


def _all(*preds: Pred) -> Pred:
    return lambda s: all(p(s) for p in preds)


# (query string, which runs match): OR within a field, AND across fields.
FILTERS: list[tuple[str, Pred]] = [
    ("", lambda s: True),
    ("status=failed&status=cancelled", _any("status", "failed", "cancelled")),
    ("status=failed,cancelled", _any("status", "failed", "cancelled")),
    ("model=alpha,beta&hardware=h100", _all(_any("model", "alpha", "beta"),
                                            _any("hardware", "h100"))),
    ("batch_id=b1&status=completed,failed&status=pending",
     _all(_any("batch_id", "b1"), _any("status", "completed", "failed", "pending"))),
    ("name=job-1,job-2", _any("name", "job-1", "job-2")),
    ("name=" + quote("mix\\,ed"), _any("name", "mix,ed")),
    ("name=job-3&name=" + quote("mix\\,ed"), _any("name", "job-3", "mix,ed")),
    ("param.prompt=" + quote("a cat"), lambda s: s.param("prompt") == "a cat"),
    ("param.prompt=" + quote("a cat, in a hat"), lambda s: s.param("prompt") == "a cat, in a hat"),
    ("param.prompt=" + quote("a cat") + "&param.prompt=rain",
     lambda s: s.param("prompt") in ("a cat", "rain")),
    ("param.a.b=2&model=alpha", lambda s: s.param("a.b") == "2" and s.model == "alpha"),
    ("param.a.b=1&param.prompt=rain",
     lambda s: s.param("a.b") == "1" and s.param("prompt") == "rain"),
    ("tag=env:prod&status=completed",
     lambda s: s.tags.get("env") == "prod" and s.status == "completed"),
    ("tag=env:dev&tag=team:x&param.a.b=3",
     lambda s: s.tags.get("env") == "dev" and s.tags.get("team") == "x" and s.param("a.b") == "3"),
    ("q=job-1", lambda s: "job-1" in s.run_id or "job-1" in (s.name or "")
     or "job-1" in (s.model or "")),
    # case-insensitive; `_` and `%` are characters, not wildcards
    ("q=JOB_", lambda s: any("job_" in (v or "").lower() for v in (s.run_id, s.name, s.model))),
    ("q=" + quote("B%C"), lambda s: any("b%c" in (v or "").lower()
                                      for v in (s.run_id, s.name, s.model))),
    ("since=" + quote((T0 + timedelta(minutes=10)).isoformat()) + "&until="
     + quote((T0 + timedelta(minutes=30)).isoformat()) + "&hardware=a100,h100",
     lambda s: T0 + timedelta(minutes=10) <= s.created < T0 + timedelta(minutes=30)
     and s.hardware in ("a100", "h100")),
]
FILTER_IDS = [f"f{i}" for i in range(len(FILTERS))]

SORTS = [f"{sign}{col}" for col in (
    "created_at", "updated_at", "started_at", "finished_at", "duration_s", "run_id", "status",
    "model", "hardware", "batch_id", "name", "error") for sign in ("", "-")]


def expected_order(specs: list[Spec], sort: str) -> list[str]:
    """run ids in `ORDER BY col [DESC] NULLS LAST, run_id`."""
    col, desc = sort.lstrip("-"), sort.startswith("-")
    by_id = sorted(specs, key=lambda s: s.run_id)
    valued = sorted((s for s in by_id if s.column(col) is not None),
                    key=lambda s: s.column(col), reverse=desc)  # stable: run_id breaks ties
    return [s.run_id for s in valued] + [s.run_id for s in by_id if s.column(col) is None]


def _ids(page: dict[str, Any]) -> list[str]:
    return [r["run_id"] for r in page["items"]]


@pytest.mark.parametrize(("query", "pred"), FILTERS, ids=FILTER_IDS)
def test_filter_table(lake: Lake, query: str, pred: Pred) -> None:
    want = expected_order([s for s in lake.specs if pred(s)], "-created_at")
    page = lake.get(f"/api/{C}/db/runs?limit=1000&{query}")
    assert _ids(page) == want
    assert page["total"] == len(want) and page["next"] is None
    for row in page["items"]:  # the columns the client reads, as posted
        spec = next(s for s in lake.specs if s.run_id == row["run_id"])
        assert (row["model"], row["name"], row["status"], row["params"]) == \
            (spec.model, spec.name, spec.status, spec.params)


def test_filter_table_is_not_vacuous() -> None:
    """Each filter keeps some runs and drops others, so a filter ignored would fail."""
    for query, pred in FILTERS[1:]:
        kept = sum(map(pred, SPECS))
        assert 0 < kept < len(SPECS), query


@pytest.mark.parametrize("sort", SORTS)
def test_sort_on_every_column(lake: Lake, sort: str) -> None:
    page = lake.get(f"/api/{C}/db/runs?limit=1000&sort={sort}")
    assert _ids(page) == expected_order(lake.specs, sort)


# -- keyset paging ------------------------------------------------------------------


def _pages(lake: Lake, query: str, between: Callable[[int], None] | None = None,
           limit: int = 7) -> list[str]:
    """Every run id, page by page through `next`; `between(k)` runs after page k."""
    page = lake.get(f"/api/{C}/db/runs?limit={limit}&{query}")
    ids, k = _ids(page), 0
    while page["next"] is not None:
        assert len(page["items"]) == limit
        if between is not None:
            between(k)
        k += 1
        page = lake.get(f"/api/{C}/db/runs?limit={limit}&{query}&next={page['next']}")
        assert page["offset"] == k * limit
        ids += _ids(page)
    return ids


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "run_id", "-duration_s",
                                  "model", "-name"])
def test_next_pages_stable_under_concurrent_ingest(fresh: Lake, sort: str) -> None:
    """New runs posted between page fetches (before, among and after the rows already
    paged) neither skip nor repeat a row that was there from the start."""
    rng = random.Random(sort)
    query = f"sort={sort}&status=completed,failed,running,pending"
    posted: list[Spec] = []

    def ingest(k: int) -> None:
        new = make_specs(rng, 4, prefix=f"n{k}-", minutes=(-10, 50))
        fresh.post(new)
        posted.extend(new)

    ids = _pages(fresh, query, ingest)
    assert posted, "pages were fetched with runs arriving between them"
    original = [s for s in SPECS if s.status != "cancelled"]
    seen = Counter(ids)
    assert all(n == 1 for n in seen.values()), [i for i, n in seen.items() if n > 1]
    assert {s.run_id for s in original} <= set(seen)  # none skipped
    # Whatever arrived, the rows come in the sort's order.
    by_id = {s.run_id: s for s in fresh.specs}
    assert ids == [i for i in expected_order([by_id[i] for i in ids], sort)]


def test_offset_paging_would_skip_under_the_same_ingest(fresh: Lake) -> None:
    """Why `next` exists: the same interleaving with offset paging repeats rows."""
    rng = random.Random(5)
    ids: list[str] = []
    for k in range(4):
        ids += _ids(fresh.get(f"/api/{C}/db/runs?limit=7&offset={7 * k}"))
        fresh.post(make_specs(rng, 4, prefix=f"o{k}-", minutes=(60, 70)))  # newest: first
    assert len(ids) > len(set(ids))


def test_next_is_null_on_the_last_page_and_pages_filters(lake: Lake) -> None:
    want = expected_order([s for s in lake.specs if s.status in ("failed", "cancelled")], "run_id")
    assert _pages(lake, "sort=run_id&status=failed,cancelled", limit=5) == want
    exact = lake.get(f"/api/{C}/db/runs?limit={len(want)}&sort=run_id&status=failed,cancelled")
    assert _ids(exact) == want and exact["next"] is None


@pytest.mark.parametrize(("query", "message"), [
    ("next=not-a-token", "not a token"),
    ("next=" + "A" * 40, "not a token"),
    ("sort=model&next={token}", "sort"),
    ("status=failed&next={token}", "filters"),
    ("offset=7&next={token}", "offset"),
])
def test_bad_next_is_a_400_naming_next(lake: Lake, query: str, message: str) -> None:
    token = lake.get(f"/api/{C}/db/runs?limit=7")["next"]
    assert token is not None
    reply = lake.send(f"/api/{C}/db/runs?limit=7&" + query.format(token=token))
    assert reply.status == 400, reply.body[:300]
    error = reply.json()["error"]
    assert error["details"][0]["parameter"] == "next" and message in error["message"]


def _retoken(token: str, **change: Any) -> str:
    """`token` with fields changed: a client may send anything."""
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i, name in enumerate(("version", "sort", "value", "run_id", "offset", "filters")):
        raw[i] = change.get(name, raw[i])
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("sort", "change"), [
    ("-created_at", {"value": 5.0}), ("-created_at", {"value": "not a time"}),
    ("-created_at", {"value": "2026-02-01T09:00:00"}), ("created_at", {"value": ["x"]}),
    ("-duration_s", {"value": "fast"}), ("-duration_s", {"value": True}),
    ("model", {"value": 3.5}), ("run_id", {"run_id": 7}), ("run_id", {"offset": -1}),
    ("run_id", {"version": 99}), ("run_id", {"sort": "colour"}),
])
def test_tampered_next_is_a_400_not_a_500(lake: Lake, sort: str, change: dict[str, Any]) -> None:
    token = lake.get(f"/api/{C}/db/runs?limit=7&sort={sort}")["next"]
    reply = lake.send(f"/api/{C}/db/runs?limit=7&sort={sort}&next={_retoken(token, **change)}")
    assert reply.status == 400, reply.body[:300]
    assert reply.json()["error"]["details"][0]["parameter"] == "next"


@pytest.mark.parametrize(("query", "parameter"), [
    ("param.=1", "param."), ("param.a..b=1", "param.a..b"), ("param.a%20b=1", "param.a b"),
    ("param=1", "param"), ("status=failed,done", "status"), ("model=a,", "model"),
])
def test_bad_filters_are_400s(lake: Lake, query: str, parameter: str) -> None:
    reply = lake.send(f"/api/{C}/db/runs?{query}")
    assert reply.status == 400, reply.body[:300]
    assert reply.json()["error"]["details"][0]["parameter"] == parameter


# -- facets --------------------------------------------------------------------------


def facet_of(specs: list[Spec], fld: str) -> list[dict[str, Any]]:
    """The facet recomputed: runs with a value, by value, most runs first, ties by value."""
    groups: dict[str, list[Spec]] = {}
    for s in specs:
        if fld.startswith("tag:"):
            value = s.tags.get(fld.removeprefix("tag:"))
        elif fld.startswith("param:"):
            value = s.param(fld.removeprefix("param:"))
        else:
            value = s.column(fld)
        if value is not None:
            groups.setdefault(value, []).append(s)
    items = []
    for value, runs in groups.items():
        by = Counter(s.status for s in runs)
        done = by["completed"] + by["failed"]
        items.append({"value": value, "runs": len(runs),
                      "by_status": {st: by[st] for st in STATUSES},
                      "success_rate": by["completed"] / done if done else None,
                      "last_seen": max(s.column("updated_at") for s in runs)})
    return sorted(items, key=lambda i: (-i["runs"], i["value"]))


FACET_FIELDS = ["model", "hardware", "name", "status", "batch_id", "tag:env", "tag:team",
                "param:prompt", "param:a.b"]


def _check_facet(got: dict[str, Any], want: list[dict[str, Any]], limit: int) -> None:
    assert got["total_values"] == len(want) and got["truncated"] is False
    items = [{**i, "last_seen": datetime.fromisoformat(i["last_seen"])} for i in got["items"]]
    assert items == want[:limit]


@pytest.mark.parametrize("fld", FACET_FIELDS)
@pytest.mark.parametrize(("query", "pred"), FILTERS, ids=FILTER_IDS)
def test_facets_match_a_recompute(lake: Lake, fld: str, query: str, pred: Pred) -> None:
    got = lake.get(f"/api/{C}/db/facets?field={fld}&limit=1000&{query}")
    _check_facet(got, facet_of([s for s in lake.specs if pred(s)], fld), 1000)


@pytest.mark.parametrize("fld", FACET_FIELDS)
def test_facet_limit_offset_and_gateway(lake: Lake, fld: str) -> None:
    want = facet_of(lake.specs, fld)
    got = lake.get(f"/api/{C}/db/facets?field={fld}&limit=2&offset=1")
    items = [{**i, "last_seen": datetime.fromisoformat(i["last_seen"])} for i in got["items"]]
    assert items == want[1:3] and got["total_values"] == len(want)
    assert lake.get(f"/api/db/{C}/facets?field={fld}&limit=2&offset=1") == got


def test_facet_budget_cuts_off_and_says_so(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With slices of 10 rows and no time to spare, one slice is counted: `truncated`,
    and the counts are a part of the full ones. A view-kept field is never cut off."""
    monkeypatch.setattr(facets_module, "SLICE_ROWS", 10)
    with serve_in_thread(tmp_path, facet_budget_s=0.0) as server:
        lake = Lake(server)
        lake.post(SPECS)
        for fld in ("name", "param:prompt", "tag:env", "status"):
            got = lake.get(f"/api/{C}/db/facets?field={fld}&limit=1000")
            full = {i["value"]: i["runs"] for i in facet_of(SPECS, fld)}
            assert got["truncated"] is True, fld
            counted = {i["value"]: i["runs"] for i in got["items"]}
            assert 0 < sum(counted.values()) <= 10 < sum(full.values())
            assert all(n <= full[v] for v, n in counted.items())
        got = lake.get(f"/api/{C}/db/facets?field=model&limit=1000")
        _check_facet(got, facet_of(SPECS, "model"), 1000)


@pytest.mark.parametrize("fld", ["bogus", "tag:", "param:", "param:a..b", "params:x", "run_id"])
def test_bad_facet_field_is_a_400_with_the_forms(lake: Lake, fld: str) -> None:
    reply = lake.send(f"/api/{C}/db/facets?field={quote(fld)}")
    assert reply.status == 400
    detail = reply.json()["error"]["details"][0]
    assert detail["parameter"] == "field" and "param:<path>" in detail["allowed"]


def test_facets_of_an_unknown_component_are_a_404(lake: Lake) -> None:
    reply = lake.send("/api/labb/db/facets?" + urlencode({"field": "model"}))
    assert reply.status == 404 and C in reply.json()["error"]["message"]
