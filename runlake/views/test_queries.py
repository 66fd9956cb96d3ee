"""Reads of the per-test view (issue 20): the tests list and one test's figures with
its history strip. Named functions over `test_stats` and `results`; the API layer
holds no SQL."""

from __future__ import annotations

from typing import Any

from runlake.views.keyset import Key, Kind, page_sql, token_values
from runlake.views.queries import Cursor, _dicts, _one, _page, contains_text
from runlake.views.tests import TRANSITIONS_SQL, transition_score

# `-x`: descending. Flakiness is the transition score over the window, then how many
# runs and commits were flaky (definition a); failure rate is 1 - pass_rate. Each sort
# is its keys (aliases of list_tests' query), every one NULLS LAST, then the test name:
# the same order pages by offset and by `next` (keyset.after).
TEST_SORTS: dict[str, list[tuple[str, Kind]]] = {
    "flakiness": [("flakiness", "number"), ("flaky_n", "number")],
    "failure_rate": [("failure_rate_", "number")],
    "duration": [("duration_p95", "number")],
    "last_seen": [("last_seen", "time")],
    "test": [("test", "text")],
}


def sort_keys(sort: str) -> list[Key]:
    """The keyset keys of a tests sort (params.TestSort, `-` for descending)."""
    desc = sort.startswith("-")
    return [Key(col, desc, kind) for col, kind in TEST_SORTS[sort.removeprefix("-")]]


_COLUMNS = """component, test, runs, attempts, passed, failed, error, skipped, xfailed,
    xpassed, pass_rate, last_outcome, last_run_id, last_ts, last_failure_run_id,
    last_failure_message, last_failure_ts, duration_p50, duration_p95, first_seen,
    last_seen, retried_runs, flaky_runs, flaky_commits, recent"""
_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def _item(row: dict[str, Any], window: int) -> dict[str, Any]:
    recent = row.pop("recent")
    for extra in ("flakiness", "flaky_n", "failure_rate_"):
        row.pop(extra, None)
    row["outcomes"] = {o: row.pop(o) for o in _OUTCOMES}
    rate = row["pass_rate"]
    row["failure_rate"] = None if rate is None else 1.0 - rate
    failure = {k: row.pop(f"last_failure_{k}") for k in ("run_id", "message", "ts")}
    row["last_failure"] = failure if failure["run_id"] is not None else None
    row["duration_p50_s"], row["duration_p95_s"] = row.pop("duration_p50"), row.pop("duration_p95")
    row["flaky"] = row["flaky_runs"] + row["flaky_commits"] > 0
    states = recent[-window:]
    row["window"] = {"size": window, "results": len(states),
                     "transitions": sum(a != b for a, b in zip(states, states[1:], strict=False)),
                     "score": transition_score(recent, window)}
    return row


def list_tests(cur: Cursor, component: str, *, window: int, flaky: bool | None = None,
               failing: bool | None = None, q: str | None = None, sort: str = "-last_seen",
               limit: int = 50, offset: int = 0, after_row: tuple[list[Any], str] | None = None
               ) -> tuple[dict[str, Any], tuple[list[Any], str] | None]:
    """A page of the component's tests, filtered and sorted (params.TestsQuery), and
    where it ended (the last row's sort values as a token holds them, and its name)
    when more rows follow, else None. `after_row` (SQL-ready sort values and a test
    name, from a `next` token) starts the page past that row instead of skipping
    `offset` rows; `total` counts every match either way."""
    where, params = ["component = ?"], [component]
    if flaky is not None:
        where.append(("" if flaky else "NOT ") + "(flaky_runs + flaky_commits > 0)")
    if failing is not None:
        where.append(("" if failing else "NOT ") + "(last_outcome IN ('failed', 'error'))")
    if q is not None:
        text, text_params = contains_text(("test",), q)
        where.append(text)
        params += text_params
    cond = " AND ".join(where)
    keys = sort_keys(sort)
    total = _one(cur, f"SELECT count(*) FROM test_stats WHERE {cond}", params)
    flakiness = TRANSITIONS_SQL.format(window=int(window))
    rows = _dicts(cur, *page_sql(f"""
        SELECT * FROM (
            SELECT {_COLUMNS}, {flakiness} AS flakiness,
                   flaky_runs + flaky_commits AS flaky_n, 1 - pass_rate AS failure_rate_
            FROM test_stats WHERE {cond})""", "true", params, keys, "test", limit, offset,
        after_row))
    ended = None
    if len(rows) > limit and limit:
        ended = (token_values(keys, rows[limit - 1]), rows[limit - 1]["test"])
    return _page([_item(r, window) for r in rows[:limit]], limit, offset, total), ended


def get_test(cur: Cursor, component: str, test: str, *, window: int,
             history: int) -> dict[str, Any] | None:
    """One test's figures and its last `history` results (every attempt), newest first,
    each with its run's commit."""
    rows = _dicts(cur, f"SELECT {_COLUMNS} FROM test_stats WHERE component = ? AND test = ?",
                  [component, test])
    if not rows:
        return None
    item = _item(rows[0], window)
    item["history"] = _dicts(cur, """
        SELECT r.run_id, r.attempt, r.outcome, r.duration_s, r.message, r.worker, r.ts, r.seq,
               coalesce(t.value, json_extract_string(k.params, '$.commit')) AS commit
        FROM (SELECT * FROM results WHERE component = ? AND test = ?
              ORDER BY ts DESC, seq DESC LIMIT ?) r
        LEFT JOIN runs k ON k.component = r.component AND k.run_id = r.run_id
        LEFT JOIN tags t ON t.component = r.component AND t.run_id = r.run_id
            AND t.key = 'commit'
        ORDER BY r.ts DESC, r.seq DESC""", [component, test, history])
    return item
