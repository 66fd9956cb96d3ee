"""Auth against one real server (DESIGN §6, docs/security.md): every route in the route
table × every kind of caller → the expected status, and a refused request changes
nothing; component limits on ingest and on cross-component reads; failures in /metrics
and in the log, never with the key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.server import Reply, ThreadedServer, serve_in_thread

from runlake.api.keys import add_key, revoke_key
from runlake.api.routes import ROUTE_TABLE
from runlake.api.state import PAGE_ROUTES

TS = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
COMPONENTS = ("alpha", "beta")
# alpha only: for checking that a beta-only key cannot find it
ALPHA_ONLY_MODEL = "only-alpha"


def seed() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for c in COMPONENTS:
        base = {"component": c, "run_id": "r1", "ts": TS}
        events += [
            {**base, "type": "run", "model": "m1", "hardware": "h1", "batch_id": "b1"},
            {**base, "type": "status", "status": "completed"},
            {**base, "type": "tag", "key": "team", "value": f"team-{c}"},
            {**base, "type": "metric", "name": "latency_ms", "value": 3.0},
            {**base, "type": "log", "level": "info", "message": f"needle in {c}"},
            {**base, "type": "result", "test": "t::a", "outcome": "passed"},
        ]
    events.append({"type": "run", "component": "alpha", "run_id": "r2", "ts": TS,
                   "model": ALPHA_ONLY_MODEL})
    return events


@dataclass
class Keys:
    admin: str
    read: str
    ingest: str
    other: str  # admin, but only for component beta
    revoked: str
    beta_reader: str  # read, only for component beta
    unknown: str = "rl_" + "x" * 43  # well-formed, never stored


@dataclass
class Lake:
    server: ThreadedServer
    keys: Keys
    tmp: Path

    def send(self, method: str, path: str, key: str | None = None, *, bearer: bool = False,
             body: Any = None, headers: dict[str, str] | None = None,
             content_type: str | None = "application/json") -> Reply:
        headers = dict(headers or {})
        if key is not None:
            if bearer:
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers["X-API-Key"] = key
        data = body if body is None or isinstance(body, bytes) else msgspec.json.encode(body)
        if data is None:
            content_type = None
        return self.server.run(self.server.client.request(
            method, path, data=data, headers=headers, content_type=content_type))

    def log_state(self) -> tuple[int, int]:
        event_log = self.server.client.event_log
        return event_log.last_seq, event_log.appended_events


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    tmp = tmp_path_factory.mktemp("auth")
    keys_path = tmp / "data" / "keys.json"
    secrets = {role: add_key(keys_path, role, name=role)[1] for role in ("admin", "read", "ingest")}
    other = add_key(keys_path, "admin", ["beta"], name="other")[1]
    revoked = add_key(keys_path, "admin", name="revoked")[1]
    beta_reader = add_key(keys_path, "read", ["beta"], name="beta-reader")[1]
    revoke_key(keys_path, "revoked")
    keys = Keys(secrets["admin"], secrets["read"], secrets["ingest"], other, revoked, beta_reader)
    with serve_in_thread(tmp, jobs_component="alpha") as server:
        lake = Lake(server, keys, tmp)
        reply = lake.send("POST", "/api/events", keys.ingest, body=seed())
        assert reply.status == 202, reply.body
        last = reply.json()["last_seq"]
        reply = lake.send("GET", f"/api/db/overview?min_seq={last}", keys.admin)
        assert reply.status == 200, reply.body
        yield lake


# -- the matrix ---------------------------------------------------------------------

WHO = ("none", "unknown", "revoked", "ingest", "read", "admin", "other")
ROLE_OF = {"ingest": "ingest", "read": "read", "admin": "admin", "other": "admin"}
PARAMS = {"component": "alpha", "run_id": "r1", "batch_id": "b1", "model": "m1",
          "job_id": "r1", "name": "t::a"}  # the jobs routes read alpha (jobs_component, in `lake`)
# DELETEs target runs and batches that do not exist, so the matrix order does not
# matter: a caller allowed to delete gets 404 (and nothing is appended).
DELETE_PARAMS = {**PARAMS, "run_id": "gone", "batch_id": "gone"}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the route's template
    role: str | None  # None: no route matches
    status: int  # when the caller may call it

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


CASES = [Case(r.method, r.path, r.role, r.status) for r in ROUTE_TABLE] + [
    Case("GET", "/api/no/such/route", None, 404),
    Case("GET", "/api/events", None, 405),
]
# Bodies for the routes that take one; a route not listed gets `{}` and, when
# allowed, only has to be neither refused nor a 500.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/events"): [{"type": "metric", "component": "alpha", "run_id": "rm",
                               "name": "x", "value": 1.0}],
    ("POST", "/api/{component}/events"): [{"type": "metric", "run_id": "rm", "name": "x",
                                           "value": 1.0}],
    ("POST", "/api/{component}/db/search"): {"query": "needle"},
    ("POST", "/api/db/search"): {"query": "needle"},
    ("POST", "/api/{component}/db/export"): {},
    ("POST", "/api/{component}/junit"):
        b'<testsuite name="s"><testcase classname="m" name="t" time="0.1"/></testsuite>',
    ("POST", "/api/{component}/reportlog"):
        b'{"$report_type": "TestReport", "nodeid": "m.py::t", "when": "call", '
        b'"outcome": "passed", "duration": 0.1}\n',
}
CONTENT_TYPES = {("POST", "/api/{component}/junit"): "application/xml",
                 ("POST", "/api/{component}/reportlog"): "application/x-ndjson"}
QUERIES = {"/api/{component}/db/search": "?query=needle", "/api/db/search": "?query=needle",
           "/api/db/{component}/search": "?query=needle",
           "/api/{component}/db/facets": "?field=model",
           "/api/db/{component}/facets": "?field=model",
           # a live stream ends only when told: this one once caught up (docs/stream.md)
           "/api/stream": "?after=0&until=caught_up",
           "/api/stream/ws": "?after=0&until=caught_up"}
QUERIES |= {path.format(run=run): "?name=x" for run in ("run", "task") for path in (
    "/api/{{component}}/db/{run}/{{run_id}}/metrics/buckets",
    "/api/db/{{component}}/{run}/{{run_id}}/metrics/buckets")}
# Routes the matrix's plain HTTP request cannot complete: the WebSocket stream needs an
# Upgrade (tests/test_stream.py opens real ones), so an allowed caller gets its 400.
NO_UPGRADE = {"/api/stream/ws"}


def expected(case: Case, who: str) -> int:
    if case.role == "open":
        return case.status
    if who in ("none", "unknown", "revoked"):
        return 401
    role = ROLE_OF[who]
    if case.role is not None and role != "admin" and role != case.role:
        return 403
    # `other` may touch only beta; the matrix names alpha (in the URL or the events).
    if who == "other" and ("{component}" in case.path or case.id == "POST /api/events"
                           or case.path.startswith(("/api/jobs", "/api/stats"))):
        return 403
    if case.path in NO_UPGRADE:
        return 400
    return 404 if case.method == "DELETE" else case.status


def request_for(case: Case) -> tuple[str, Any]:
    params = DELETE_PARAMS if case.method == "DELETE" else PARAMS
    path = case.path.format(**params)
    if case.method == "GET":
        path += QUERIES.get(case.path, "")
    body = BODIES.get((case.method, case.path), {} if case.method == "POST" else None)
    return path, body


def key_for(keys: Keys, who: str) -> str | None:
    return None if who == "none" else getattr(keys, who)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("who", WHO)
def test_route_matrix(lake: Lake, case: Case, who: str) -> None:
    path, body = request_for(case)
    want = expected(case, who)
    key = key_for(lake.keys, who)
    for bearer in ((False,) if key is None else (False, True)):
        before = lake.log_state()
        reply = lake.send(case.method, path, key, bearer=bearer, body=body,
                          content_type=CONTENT_TYPES.get((case.method, case.path),
                                                         "application/json"))
        where = (case.id, who, "bearer" if bearer else "x-api-key", reply.body[:300])
        known = (case.method, case.path) in BODIES or case.method in ("GET", "DELETE")
        if want in (401, 403) or known:
            assert reply.status == want, where
        else:  # a route this test has no request recipe for: it must at least get through
            assert reply.status not in (401, 403) and reply.status < 500, where
        if reply.status in (401, 403):
            error = reply.json()["error"]
            assert error["code"] == ("unauthorized" if want == 401 else "forbidden"), where
            assert lake.log_state() == before, f"a refused request changed the log: {where}"
        if reply.status == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Bearer"), where


def test_matrix_covers_every_route(lake: Lake) -> None:
    """The matrix is built from ROUTE_TABLE: check it against what the running app
    really serves, so a route registered outside the table cannot slip by untested."""
    assert {c.id for c in CASES} >= {f"{r.method} {r.path}" for r in ROUTE_TABLE}
    app = lake.server.client.app
    assert app is not None
    # The dashboard's pages are open and hold no data; tests/web covers them.
    served = [(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None  # HEAD: aiohttp's own
              and route not in app[PAGE_ROUTES]]
    assert len(set(served)) == len(served), "a route registered twice"
    assert set(served) == {(r.method, r.path) for r in ROUTE_TABLE}, "a route outside the table"
    assert {(c.method, c.path) for c in CASES if c.role is not None} == set(served)
    assert all(r.role in ("open", "ingest", "read", "admin") for r in ROUTE_TABLE)
    assert {r.path for r in ROUTE_TABLE if r.role == "open"} == {"/healthz", "/readyz"}


# -- component limits ----------------------------------------------------------------


def test_limited_key_sees_only_its_components_across_components(lake: Lake) -> None:
    full = lake.send("GET", "/api/db/overview", lake.keys.admin).json()
    assert set(full["components"]) == set(COMPONENTS)
    for key in (lake.keys.beta_reader, lake.keys.other):
        overview = lake.send("GET", "/api/db/overview", key)
        assert overview.status == 200, overview.body
        body = overview.json()
        assert set(body["components"]) == {"beta"}
        assert body["total"]["runs"] == full["components"]["beta"]["runs"]

        model = lake.send("GET", "/api/db/model/m1", key).json()
        assert set(model["components"]) == {"beta"}
        assert lake.send("GET", f"/api/db/model/{ALPHA_ONLY_MODEL}", key).status == 404

        for method in ("GET", "POST"):
            found = lake.send(method, "/api/db/search?query=needle", key,
                              body={"query": "needle"} if method == "POST" else None).json()
            assert set(found["results"]) == {"beta"}, found
            assert found["result_counts"] == {"total": 1, "beta": 1}
        alpha_only = lake.send("GET", "/api/db/search?query=team-alpha", key).json()
        # every component the key may see is listed, 0 where nothing matched (issue 17)
        assert alpha_only["results"] == {"beta": []}
        assert alpha_only["result_counts"] == {"total": 0, "beta": 0}

        assert lake.send("GET", "/api/beta/db/runs", key).status == 200
        assert lake.send("GET", "/api/alpha/db/runs", key).status == 403
    exported = lake.send("GET", "/api/db/export?what=events&format=ndjson", lake.keys.other)
    assert exported.status == 200, exported.body
    lines = [msgspec.json.decode(line) for line in exported.body.splitlines() if line.strip()]
    assert lines and {e["component"] for e in lines} == {"beta"}
    model = lake.send("GET", f"/api/db/model/{ALPHA_ONLY_MODEL}", lake.keys.admin)
    assert model.status == 200  # it exists: the 404 above was the limit


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
def test_ingest_of_another_components_event_is_refused_whole(lake: Lake, ndjson: bool) -> None:
    events = [{"type": "metric", "component": c, "run_id": "lim", "name": "x", "value": 1.0}
              for c in ("beta", "beta", "alpha", "alpha")]
    body = (b"".join(msgspec.json.encode(e) + b"\n" for e in events) if ndjson
            else msgspec.json.encode(events))
    ctype = "application/x-ndjson" if ndjson else "application/json"
    before = lake.log_state()
    reply = lake.send("POST", "/api/events", lake.keys.other, body=body, content_type=ctype)
    assert reply.status == 403, reply.body
    error = reply.json()["error"]
    assert error["details"] == [{"event": 2, "field": "component",
                                 "message": "key 'other' may not append to component 'alpha'"}]
    assert "event 2" in error["message"]
    assert lake.log_state() == before

    beta_only = [e for e in events if e["component"] == "beta"]
    reply = lake.send("POST", "/api/events", lake.keys.other, body=beta_only)
    assert reply.status == 202, reply.body
    reply = lake.send("POST", "/api/beta/events", lake.keys.other,
                      body=[{"type": "metric", "run_id": "lim", "name": "x", "value": 2.0}])
    assert reply.status == 202, reply.body


def test_delete_events_need_admin_on_the_ingest_routes_too(lake: Lake) -> None:
    delete = [{"type": "delete", "component": "alpha", "run_id": "never-there"}]
    before = lake.log_state()
    for path in ("/api/events", "/api/alpha/events"):
        reply = lake.send("POST", path, lake.keys.ingest, body=delete)
        assert reply.status == 403, reply.body
        assert reply.json()["error"]["details"][0]["field"] == "type"
    assert lake.log_state() == before
    assert lake.send("POST", "/api/events", lake.keys.admin, body=delete).status == 202


# -- headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer   "},
    {"X-API-Key": ""},
    {"X-API-Key": "   "},
], ids=["basic", "bearer-empty", "bearer-blank", "x-api-key-empty", "x-api-key-blank"])
def test_no_usable_key_is_401_missing(lake: Lake, headers: dict[str, str]) -> None:
    reply = lake.send("GET", "/api/db/overview", headers=headers)
    assert reply.status == 401, reply.body
    assert "X-API-Key" in reply.json()["error"]["message"]


@pytest.mark.parametrize("value", ["rl_é", "rl_" + "a" * 4000, "x"],
                         ids=["latin1", "long", "short"])
def test_odd_keys_are_401_unknown_never_500(lake: Lake, value: str) -> None:
    before = failures(lake)
    reply = lake.send("GET", "/api/db/overview", headers={"X-API-Key": value})
    assert reply.status == 401, reply.body
    # The whole envelope: a fixed message, no details, nothing of the key echoed back.
    assert reply.json() == {"error": {
        "code": "unauthorized", "message": "the API key is not valid (unknown or revoked)",
        "details": []}}
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    after = failures(lake)
    assert {k: after[k] - before[k] for k in after} == {"missing": 0, "unknown": 1,
                                                         "forbidden": 0}


def test_bearer_scheme_is_case_insensitive_and_x_api_key_wins(lake: Lake) -> None:
    reply = lake.send("GET", "/api/db/overview",
                      headers={"Authorization": f"bearer {lake.keys.read}"})
    assert reply.status == 200, reply.body
    both = {"X-API-Key": lake.keys.ingest, "Authorization": f"Bearer {lake.keys.read}"}
    assert lake.send("GET", "/api/db/overview", headers=both).status == 403


# -- failures in /metrics and the log ----------------------------------------------------


def failures(lake: Lake) -> dict[str, int]:
    text = lake.send("GET", "/metrics", lake.keys.admin).body.decode()
    return {m[1]: int(m[2]) for m in
            re.finditer(r'^runlake_auth_failures_total\{reason="(\w+)"\} (\d+)$', text, re.M)}


def test_failures_are_counted_and_logged_without_the_key(
    lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    assert "runlake_auth_enabled 1" in lake.send("GET", "/metrics", lake.keys.read).body.decode()
    before = failures(lake)
    assert set(before) == {"missing", "unknown", "forbidden"}
    wrong = "rl_wrong-" + "z" * 30
    with caplog.at_level("WARNING", logger="runlake.auth"):
        lake.send("GET", "/api/alpha/db/runs")
        lake.send("GET", "/api/alpha/db/runs", wrong)
        lake.send("GET", "/api/alpha/db/runs", wrong, bearer=True)
        lake.send("DELETE", "/api/alpha/db/run/gone", lake.keys.read)
        lake.send("GET", "/api/alpha/db/runs", lake.keys.other)
    after = failures(lake)
    assert {k: after[k] - before[k] for k in after} == {"missing": 1, "unknown": 2,
                                                         "forbidden": 2}
    refusals = [r.getMessage() for r in caplog.records if r.name == "runlake.auth"]
    assert len(refusals) == 5, refusals
    assert all("route=/api/{component}/" in m and "remote=127.0.0.1" in m for m in refusals)
    assert [re.search(r"reason=(\w+)", m)[1] for m in refusals] == [  # type: ignore[index]
        "missing", "unknown", "unknown", "forbidden", "forbidden"]
    logged = caplog.text
    for secret in (wrong, *vars(lake.keys).values()):
        assert secret not in logged


def test_unauthorized_metrics_scrape_is_refused(lake: Lake) -> None:
    assert lake.send("GET", "/metrics").status == 401
    assert lake.send("GET", "/metrics", lake.keys.ingest).status == 403
    assert lake.send("GET", "/metrics", lake.keys.read).status == 200


# -- with no keys on loopback, auth is off ------------------------------------------


def test_no_keys_on_loopback_means_auth_off(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as server:
        client = server.client
        reply = server.run(client.get("/api/db/overview"))
        assert reply.status == 200, reply.body
        reply = server.run(client.post_events([{"type": "delete", "component": "a",
                                                "run_id": "x"}]))
        assert reply.status == 202, reply.body
        metrics = server.run(client.get("/metrics")).body.decode()
        assert "runlake_auth_enabled 0" in metrics
        assert 'runlake_auth_failures_total{reason="missing"} 0' in metrics
