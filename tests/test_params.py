"""Query parameters are parsed strictly, by one function, from each route's Struct:
unknown names, repeats, lenient numbers and times, and bad choices get a 400 naming
the parameter (and the allowed values); deletes validate `min_seq` and answer 404,
appending nothing, for what does not exist. One server serves the whole table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers.server import Reply, ThreadedServer, serve_in_thread

from runlake.api.params import MAX_TAG_FILTERS
from runlake.events.schema import RUN_STATUSES

RUNS = "/api/test/db/runs"


@dataclass
class Case:
    id: str
    path: str
    parameter: str | None  # the parameter the error's details must name
    message: str = ""  # a substring of the message
    allowed: list[str] | None = None  # the allowed values the details must list
    method: str = "GET"


ARABIC_FIVE = "\u0665"  # Python's int() takes it; a query parameter must not
CASES = [
    Case("unknown_parameter", f"{RUNS}?bogus=1", "bogus", "bogus"),
    Case("unknown_on_overview", "/api/db/overview?limit=5", "limit", "limit"),
    Case("unknown_on_healthz_free_route", "/api/db/model/m?x=1", "x"),
    Case("since_a_number", f"{RUNS}?since=0.5", "since", "RFC 3339"),
    Case("since_without_timezone", f"{RUNS}?since=2026-01-01T00:00:00", "since"),
    Case("min_seq_with_space", f"{RUNS}?min_seq=%205", "min_seq", "integer"),
    Case("min_seq_arabic_digits", f"{RUNS}?min_seq={quote(ARABIC_FIVE)}", "min_seq"),
    Case("limit_arabic_digits", f"{RUNS}?limit={quote(ARABIC_FIVE)}", "limit"),
    Case("limit_underscore", f"{RUNS}?limit=1_0", "limit"),
    Case("limit_zero", f"{RUNS}?limit=0", "limit", ">= 1"),
    Case("limit_too_big", f"{RUNS}?limit=1001", "limit", "<= 1000"),
    Case("limit_twice", f"{RUNS}?limit=5&limit=6", "limit", "once"),
    Case("status_unknown", f"{RUNS}?status=done", "status", "one of",
         sorted(RUN_STATUSES)),
    Case("sort_unknown", f"{RUNS}?sort=colour", "sort", "one of"),
    Case("level_unknown", "/api/test/db/run/r/logs?level=loud", "level", "one of",
         ["debug", "info", "warning", "error", "critical"]),
    Case("outcome_unknown", "/api/test/db/run/r/results?outcome=meh", "outcome", "one of"),
    Case("tag_not_key_value", f"{RUNS}?tag=novalue", "tag"),
    Case("too_many_tags", f"{RUNS}?" + "&".join(f"tag=k{i}:v" for i in range(MAX_TAG_FILTERS + 1)),
         "tag", f"<= {MAX_TAG_FILTERS}"),
    Case("days_zero", "/api/test/db/performance?days=0", "days"),
    Case("search_without_query", "/api/db/search", "query"),
    Case("post_search_without_query", "/api/db/search", "query", method="POST"),
    Case("delete_min_seq_letters", "/api/test/db/run/r?min_seq=AAA", "min_seq",
         method="DELETE"),
    Case("delete_unknown_parameter", "/api/test/db/batch/b?force=1", "force", method="DELETE"),
    Case("ingest_unknown_parameter", "/api/events?dry_run=1", "dry_run", method="POST"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    tmp: Path = tmp_path_factory.mktemp("params")
    with serve_in_thread(tmp) as server:
        events = [{"type": "run", "component": "test", "run_id": "r", "model": "m",
                   "batch_id": "b"},
                  {"type": "log", "component": "test", "run_id": "r", "level": "info",
                   "message": "bert-base found"}]
        reply = server.run(server.client.post_events(events))
        assert reply.status == 202
        # reads of a component the fold has not reached are 404: wait for it
        last = reply.json()["last_seq"]
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield server


def send(server: ThreadedServer, method: str, path: str, body: bytes | None = None,
         content_type: str | None = None) -> Reply:
    return server.run(server.client.request(method, path, data=body, content_type=content_type))


def log_state(server: ThreadedServer) -> tuple[int, int]:
    event_log = server.client.event_log
    return event_log.last_seq, event_log.appended_events


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_parameter_is_a_400_naming_it(server: ThreadedServer, case: Case) -> None:
    before = log_state(server)
    body = b'[{"type":"log","component":"test","run_id":"r","level":"info","message":"m"}]' \
        if case.id.startswith("ingest") else None
    reply = send(server, case.method, case.path, body,
                 "application/json" if body is not None else None)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "bad_request"
    assert case.message in error["message"], error
    assert case.parameter in [d.get("parameter") for d in error["details"]], error
    if case.allowed is not None:
        detail = next(d for d in error["details"] if d.get("parameter") == case.parameter)
        assert sorted(detail["allowed"]) == sorted(case.allowed)
    assert log_state(server) == before


def test_good_parameters_still_work(server: ThreadedServer) -> None:
    for path in (f"{RUNS}?limit=5&offset=0&status=pending&sort=-run_id&tag=k:v&tag=k:w",
                 f"{RUNS}?since=2020-01-01T00:00:00Z&until=2100-01-01T00:00:00%2B02:00",
                 f"{RUNS}?min_seq=1", "/api/test/db/performance?days=7&metric=x",
                 "/api/db/search?query=bert&limit=3"):
        reply = send(server, "GET", path)
        assert reply.status == 200, (path, reply.body)


def test_post_search_takes_the_query_from_the_url_or_the_body(server: ThreadedServer) -> None:
    url = send(server, "POST", "/api/db/search?query=bert-base&limit=10")
    assert url.status == 200, url.body
    assert url.json()["result_counts"]["total"] == 1
    body = send(server, "POST", "/api/db/search", b'{"query": "bert-base"}', "application/json")
    assert body.json() == url.json()
    same = send(server, "POST", "/api/db/search?query=bert-base", b'{"query": "bert-base"}',
                "application/json")
    assert same.status == 200
    body_wins = send(server, "POST", "/api/db/search?query=nothing-matches",
                     b'{"query": "bert-base"}', "application/json")
    assert body_wins.json() == url.json()


def test_unknown_body_field_is_named(server: ThreadedServer) -> None:
    reply = send(server, "POST", "/api/db/search", b'{"query": "x", "colour": "red"}',
                 "application/json")
    assert reply.status == 400
    assert reply.json()["error"]["details"][0]["field"] == "colour"


def test_delete_of_nothing_is_404_and_appends_nothing(server: ThreadedServer) -> None:
    for path in ("/api/test/db/run/nope", "/api/test/db/batch/nope",
                 "/api/other/db/run/r"):  # same run id, another component
        before = log_state(server)
        reply = send(server, "DELETE", path)
        assert reply.status == 404, reply.body
        assert reply.json()["error"]["code"] == "not_found"
        assert log_state(server) == before


def test_delete_of_a_run_that_exists_appends_one_event(server: ThreadedServer) -> None:
    assert send(server, "POST", "/api/events",
                b'{"type":"status","component":"test","run_id":"gone","status":"running"}',
                "application/json").status == 202
    last, appended = log_state(server)
    reply = send(server, "DELETE", f"/api/test/db/run/gone?min_seq={last}")
    assert reply.status == 202, reply.body
    assert reply.json()["first_seq"] == last + 1
    assert log_state(server) == (last + 1, appended + 1)
    after = send(server, "GET", f"/api/test/db/run/gone?min_seq={last + 1}")
    assert after.status == 404


def test_a_component_named_total_does_not_hide_the_overall_count(
        server: ThreadedServer) -> None:
    reply = send(server, "POST", "/api/events",
                 b'{"type":"run","component":"total","run_id":"elsewhere"}', "application/json")
    seq = reply.json()["last_seq"]
    found = send(server, "GET", f"/api/db/search?query=bert-base&min_seq={seq}").json()
    assert found["result_counts"]["total"] == 1  # the one run of `test` that matches
    assert found["result_counts"]["test"] == 1
