"""The job runner's reads (docs/compat.md "Job runner"): its jobs are the runs of one
component, named as the old job runner named them.

How a job's events carry what the old runner stored, with no field of their own:
tool name = the run's `name`; parameters = its `params`; a line of output = a `log`
event whose message starts with `[stdout] ` or `[stderr] ` (the rest is the line);
return code = the tag `return_code` (an integer as text); output files = `artifact`
events, total size = the sum of their `size_bytes`. The job's own log is every other
`log` event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from runlake.views.keyset import Key, page_sql, token_values
from runlake.views.queries import Cursor, _dicts, _one, _page, run_span

# Output lines are log messages with these prefixes; the rest of the message is the line.
STDOUT_PREFIX = "[stdout] "
STDERR_PREFIX = "[stderr] "
# A job's stdout/stderr in its detail is at most this many characters: the end of the
# output, which is what a failed job's reader needs (the whole is in …/db/run/{id}/logs).
STREAM_MAX_CHARS = 1_048_576
TOP_TOOLS = 5

_JOB = """run_id AS job_id, name AS tool_name, status, created_at, started_at,
          finished_at AS completed_at, duration_s AS duration"""

# A run's rows in a child table: by key, within its seq span (see queries._OF_RUN).
_OF_JOB = "component = ? AND run_id = ? AND seq BETWEEN ? AND ?"
_NOT_OUTPUT = "NOT starts_with(message, ?) AND NOT starts_with(message, ?)"


# Newest first, then by job id: the order pages by offset and by `next` (keyset.after).
JOB_KEYS = [Key("created_at", True, "time")]


def list_jobs(cur: Cursor, component: str, limit: int, offset: int,
              after_row: tuple[list[Any], str] | None = None
              ) -> tuple[dict[str, Any], tuple[list[Any], str] | None]:
    """The component's jobs, newest first, and where the page ended (its last job's
    sort values as a token holds them, and its id) when more follow, else None.
    `after_row` (SQL-ready sort values and a job id, from a `next` token) starts the
    page past that job instead of skipping `offset` rows."""
    total = _one(cur, "SELECT count(*) FROM runs WHERE component = ?", [component])
    items = _dicts(cur, *page_sql(f"SELECT {_JOB} FROM runs", "component = ?", [component],
                                  JOB_KEYS, "run_id", limit, offset, after_row))
    ended = None
    if len(items) > limit:
        last = items[limit - 1]
        ended = (token_values(JOB_KEYS, {"created_at": last["created_at"]}), last["job_id"])
    return _page(items[:limit], limit, offset, total), ended


def _stream(cur: Cursor, key: list[Any], prefix: str) -> str | None:
    """The job's output lines with `prefix`, oldest first, joined by newlines; the last
    STREAM_MAX_CHARS of it; None when it posted no such line."""
    return _one(cur, f"""
        SELECT right(string_agg(message[{len(prefix) + 1}:], chr(10) ORDER BY ts, seq), ?)
        FROM logs WHERE {_OF_JOB} AND starts_with(message, ?)""",
                [STREAM_MAX_CHARS, *key, prefix])


def get_job(cur: Cursor, component: str, job_id: str) -> dict[str, Any] | None:
    """One job with its parameters, output, return code and output files."""
    rows = _dicts(cur, f"SELECT {_JOB}, params AS parameters, first_seq, last_seq FROM runs "
                  "WHERE component = ? AND run_id = ?", [component, job_id])
    if not rows:
        return None
    job = rows[0]
    if job["parameters"] is not None:
        job["parameters"] = msgspec.json.decode(job["parameters"])
    key = [component, job_id, job.pop("first_seq"), job.pop("last_seq")]
    job["stdout"] = _stream(cur, key, STDOUT_PREFIX)
    job["stderr"] = _stream(cur, key, STDERR_PREFIX)
    # Not an integer (the tag is free text): no return code rather than a wrong one.
    job["return_code"] = _one(cur, "SELECT TRY_CAST(value AS BIGINT) FROM tags "
                              f"WHERE {_OF_JOB} AND key = 'return_code'", key)
    files = cur.execute(f"SELECT name, size_bytes FROM artifacts WHERE {_OF_JOB} ORDER BY seq",
                        key).fetchall()
    job["output_files"] = [name for name, _ in files]
    job["total_size"] = sum(size or 0 for _, size in files)
    return job


# A job's log lines, oldest first, then by seq: the order pages by offset and by
# `next` (keyset.after, the tie the seq itself).
JOB_LOG_KEYS = [Key("ts", False, "time")]


def job_logs(cur: Cursor, component: str, job_id: str, limit: int, offset: int,
             after_row: tuple[list[Any], int] | None = None
             ) -> tuple[dict[str, Any], tuple[list[Any], str] | None] | None:
    """The job's own log lines (not its output), oldest first, and where the page
    ended (its last line's time as a token holds it, and its seq) when more follow;
    None: no such job. `after_row` (from a `next` token) starts past that line."""
    span = run_span(cur, component, job_id)
    if span is None:
        return None
    params = [component, job_id, *span, STDOUT_PREFIX, STDERR_PREFIX]
    where = f"{_OF_JOB} AND {_NOT_OUTPUT}"
    total = _one(cur, f"SELECT count(*) FROM logs WHERE {where}", params)
    items = _dicts(cur, *page_sql("SELECT ts AS timestamp, level, message, seq FROM logs",
                                  where, params, JOB_LOG_KEYS, "seq", limit, offset,
                                  after_row))
    ended = None
    if len(items) > limit:
        last = items[limit - 1]
        ended = (token_values(JOB_LOG_KEYS, {"ts": last["timestamp"]}), str(last["seq"]))
    for item in items:
        del item["seq"]
    return _page(items[:limit], limit, offset, total), ended


def job_stats(cur: Cursor, component: str) -> dict[str, Any]:
    """Totals as the old runner's /api/stats gave them. success_rate is a percent of
    the finished jobs (completed / (completed + failed), cancelled counts as neither,
    DESIGN §3), 0 when none has finished; top_tools: the TOP_TOOLS most used tool
    names, most jobs first, then by name."""
    total, completed, failed = cur.execute("""
        SELECT count(*), count(*) FILTER (WHERE status = 'completed'),
               count(*) FILTER (WHERE status = 'failed')
        FROM runs WHERE component = ?""", [component]).fetchone()
    top = cur.execute("""
        SELECT name, count(*) AS n FROM runs WHERE component = ? AND name IS NOT NULL
        GROUP BY name ORDER BY n DESC, name LIMIT ?""", [component, TOP_TOOLS]).fetchall()
    finished = completed + failed
    return {"database": {
        "total_jobs": total, "completed_jobs": completed, "failed_jobs": failed,
        "success_rate": 100.0 * completed / finished if finished else 0.0,
        "top_tools": [{"tool_name": name, "count": n} for name, n in top]}}
