"""The `test_stats` view (issue 20): one row per (component, test) over every attempt
of it in the `results` table. Definitions (docs/tests.md, with worked examples):

- a run's outcome of a test is its last attempt's (highest `attempt`); `runs` and the
  outcome counts take each run once, by that outcome; `pass_rate` = passed /
  (passed + failed + error) over runs, null when that is 0;
- `last_*`: the latest result by (ts, seq), any attempt; `last_failure_*`: the latest
  failed or errored one; durations: every attempt that has one;
- flakiness (a): `flaky_runs`, runs in which the test both passed and failed (or
  errored), across its attempts; `flaky_commits`, commits (a run's `commit` tag, else
  its params' `commit`) on which it both passed and failed, over all their runs;
- flakiness (b): `recent` holds the pass (P) / fail (F) states of its last
  RECENT_MAX results (every attempt, by (ts, seq), oldest first; skips leave no
  state); the transition score over the last N (a read-time setting) is computed from
  it by `transition_score`.

A batch recomputes the tests it touched: those with results in it, and those of runs
whose attributes, tags or existence it changed (their commit may have moved), which
the fold collects in `touched_tests` before applying the batch.
"""

from runlake.views.view import View, same

RECENT_MAX = 100  # the longest window `flaky_window` may set
PASS = "'passed'"
FAILS = "('failed', 'error')"

CREATE = """
CREATE TABLE IF NOT EXISTS test_stats (
    component VARCHAR NOT NULL, test VARCHAR NOT NULL,
    runs BIGINT NOT NULL, attempts BIGINT NOT NULL,
    passed BIGINT NOT NULL, failed BIGINT NOT NULL, error BIGINT NOT NULL,
    skipped BIGINT NOT NULL, xfailed BIGINT NOT NULL, xpassed BIGINT NOT NULL,
    pass_rate DOUBLE,
    last_outcome VARCHAR NOT NULL, last_run_id VARCHAR NOT NULL, last_ts TIMESTAMP NOT NULL,
    last_failure_run_id VARCHAR, last_failure_message VARCHAR, last_failure_ts TIMESTAMP,
    duration_p50 DOUBLE, duration_p95 DOUBLE,
    first_seen TIMESTAMP NOT NULL, last_seen TIMESTAMP NOT NULL,
    retried_runs BIGINT NOT NULL, flaky_runs BIGINT NOT NULL, flaky_commits BIGINT NOT NULL,
    recent VARCHAR NOT NULL)"""

SELECT = f"""
WITH r AS (
    SELECT component, test, run_id, attempt, outcome, duration_s, message, ts, seq
    FROM results r {{scope}}
), per_run AS (
    SELECT component, test, run_id, arg_max(outcome, attempt) AS final,
           count(*) > 1 AS retried,
           bool_or(outcome = {PASS}) AS has_pass, bool_or(outcome IN {FAILS}) AS has_fail
    FROM r GROUP BY ALL
), commits AS (
    SELECT k.component, k.run_id,
           coalesce(t.value, json_extract_string(k.params, '$.commit')) AS commit
    FROM runs k SEMI JOIN (SELECT DISTINCT component, run_id FROM r) u
        ON k.component = u.component AND k.run_id = u.run_id
    LEFT JOIN tags t ON t.component = k.component AND t.run_id = k.run_id AND t.key = 'commit'
), by_commit AS (
    SELECT p.component, p.test,
           count(*) FILTER (WHERE mixed) AS flaky_commits
    FROM (SELECT p.component, p.test, c.commit, bool_or(p.has_pass) AND bool_or(p.has_fail) AS mixed
          FROM per_run p JOIN commits c USING (component, run_id)
          WHERE c.commit IS NOT NULL GROUP BY ALL) p
    GROUP BY ALL
), runs_agg AS (
    SELECT component, test, count(*) AS runs,
           count(*) FILTER (WHERE final = 'passed') AS passed,
           count(*) FILTER (WHERE final = 'failed') AS failed,
           count(*) FILTER (WHERE final = 'error') AS error,
           count(*) FILTER (WHERE final = 'skipped') AS skipped,
           count(*) FILTER (WHERE final = 'xfailed') AS xfailed,
           count(*) FILTER (WHERE final = 'xpassed') AS xpassed,
           count(*) FILTER (WHERE retried) AS retried_runs,
           count(*) FILTER (WHERE has_pass AND has_fail) AS flaky_runs
    FROM per_run GROUP BY ALL
), attempts_agg AS (
    SELECT component, test, count(*) AS attempts,
           arg_max(outcome, (ts, seq)) AS last_outcome, arg_max(run_id, (ts, seq)) AS last_run_id,
           max(ts) AS last_ts,
           arg_max(run_id, (ts, seq)) FILTER (WHERE outcome IN {FAILS}) AS last_failure_run_id,
           arg_max_null(message, (ts, seq)) FILTER (WHERE outcome IN {FAILS}) AS last_failure_message,
           max(ts) FILTER (WHERE outcome IN {FAILS}) AS last_failure_ts,
           quantile_cont(duration_s, 0.5) AS duration_p50,
           quantile_cont(duration_s, 0.95) AS duration_p95,
           min(ts) AS first_seen
    FROM r GROUP BY ALL
), recent AS (
    SELECT component, test,
           string_agg(CASE WHEN outcome = {PASS} THEN 'P' ELSE 'F' END, '' ORDER BY ts, seq) AS recent
    FROM (SELECT *, row_number() OVER (PARTITION BY component, test ORDER BY ts DESC, seq DESC) AS n
          FROM r WHERE outcome = {PASS} OR outcome IN {FAILS})
    WHERE n <= {RECENT_MAX} GROUP BY ALL
)
SELECT a.component, a.test, g.runs, a.attempts, g.passed, g.failed, g.error, g.skipped,
       g.xfailed, g.xpassed,
       CASE WHEN g.passed + g.failed + g.error > 0
            THEN g.passed / (g.passed + g.failed + g.error) END AS pass_rate,
       a.last_outcome, a.last_run_id, a.last_ts,
       a.last_failure_run_id, a.last_failure_message, a.last_failure_ts,
       a.duration_p50, a.duration_p95, a.first_seen, a.last_ts AS last_seen,
       g.retried_runs, g.flaky_runs, coalesce(c.flaky_commits, 0) AS flaky_commits,
       coalesce(e.recent, '') AS recent
FROM attempts_agg a JOIN runs_agg g USING (component, test)
LEFT JOIN by_commit c USING (component, test)
LEFT JOIN recent e USING (component, test)"""

# Collected by the fold before a batch is applied (a delete removes the results
# that say which tests a deleted run had): the tests with results in the batch, and
# those of the runs whose run events, tags or existence the batch touches.
TOUCHED = """
CREATE OR REPLACE TEMP TABLE touched_tests AS
SELECT DISTINCT component, test FROM batch_all WHERE type = 'result'
UNION SELECT DISTINCT r.component, r.test FROM results r SEMI JOIN (
    SELECT component, run_id FROM batch_all
    WHERE type IN ('run', 'tag', 'delete') AND run_id IS NOT NULL
    UNION SELECT k.component, k.run_id FROM runs k JOIN batch_all d
        ON d.type = 'delete' AND k.component = d.component AND k.batch_id = d.batch_id
) t ON r.component = t.component AND r.run_id = t.run_id"""

VIEW = View(
    name="test_stats",
    create=CREATE,
    select=SELECT,
    scope="SEMI JOIN g ON r.component = g.component AND r.test = g.test",
    groups="SELECT component, test FROM touched_tests",
    match=same("v", "g", "component", "test"),
    order="component, test",
)


def transition_score(recent: str, window: int) -> float | None:
    """Flakiness (b): the share of consecutive pairs among the last `window` states
    of `recent` that differ (P->F or F->P); None with fewer than 2 states."""
    s = recent[-window:]
    if len(s) < 2:
        return None
    return sum(a != b for a, b in zip(s, s[1:], strict=False)) / (len(s) - 1)


# The same in SQL for reads that filter or sort on it; `$window` bound by the caller.
TRANSITIONS_SQL = """(CASE WHEN length(right(recent, {window})) < 2 THEN NULL ELSE
    len(list_filter(range(1, length(right(recent, {window}))),
        lambda i: substr(right(recent, {window}), i, 1) <> substr(right(recent, {window}), i + 1, 1)))
    / (length(right(recent, {window})) - 1) END)"""
