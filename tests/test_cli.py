"""The command line (DESIGN §7), run as a real subprocess: `runlake ingest`, `runlake log
stats`, `runlake demo` (to a file, into the log, or to a running server), `runlake --help`."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.event_log import log_ids
from helpers.plain_http import request
from helpers.server import ServerProcess

from runlake.events import EventLog, decode_events, events_to_table


def runlake(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m runlake ARGS` in `cwd`, so the default data folder is `cwd/data`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNLAKE_")}
    return subprocess.run(
        [sys.executable, "-m", "runlake", *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = runlake(cwd, *args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stats(cwd: Path, data: Path | None = None) -> dict[str, Any]:
    """`runlake log stats`, parsed: total events and counts by type and by component."""
    out = ok(cwd, "log", "stats", *(["--data", str(data)] if data else []))
    total = re.search(r"^events: ([\d,]+)", out, re.M)
    assert total, out
    parsed: dict[str, Any] = {"events": int(total[1].replace(",", "")), "type": {},
                              "component": {}}
    section = None
    for line in out.splitlines():
        if line.startswith("by "):
            section = line[3:].rstrip(":")
        elif section and line.startswith("  "):
            name, count = line.split()
            parsed[section][name] = int(count.replace(",", ""))
    return parsed


def wires(start: int, count: int) -> list[dict[str, Any]]:
    kinds = ("metric", "tag", "status", "log")
    out = []
    for n in range(start, start + count):
        kind = kinds[n % 4]
        ev: dict[str, Any] = {"type": kind, "component": ("test", "jobs")[n % 2],
                              "run_id": f"r{n // 8}", "id": f"ev-{n}",
                              "ts": f"2024-05-01T12:00:{n % 60:02d}Z"}
        ev |= {
            "metric": {"name": "loss", "value": n / 3, "step": n},
            "tag": {"key": "branch", "value": "main"},
            "status": {"status": "running"},
            "log": {"level": "info", "message": f"line {n}"},
        }[kind]
        out.append(ev)
    return out


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def parquet(events: list[dict[str, Any]]) -> bytes:
    table = events_to_table(decode_events(json.dumps(events).encode()), 1, 0)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


def test_help(tmp_path: Path) -> None:
    out = ok(tmp_path, "--help")
    for command in ("serve", "ingest", "replay", "log", "demo"):
        assert command in out
    assert "FILE" in ok(tmp_path, "ingest", "--help")
    assert "--append" in ok(tmp_path, "demo", "--help")
    assert runlake(tmp_path).returncode == 2  # a command is required
    assert runlake(tmp_path, "frobnicate").returncode == 2


def test_ingest_good_files_of_every_format(tmp_path: Path) -> None:
    files = {
        "a.ndjson": (wires(0, 30), ndjson),
        "b.json": (wires(30, 20), lambda evs: json.dumps(evs).encode()),
        "c.json": (wires(50, 1), lambda evs: json.dumps(evs[0]).encode()),  # one object
        "d.jsonl": (wires(51, 10), ndjson),
        "e.ndjson.gz": (wires(61, 20), lambda evs: gzip.compress(ndjson(evs))),
        "f.json.gz": (wires(81, 10), lambda evs: gzip.compress(json.dumps(evs).encode())),
        "g.parquet": (wires(91, 20), parquet),
        "h.parquet.gz": (wires(111, 9), lambda evs: gzip.compress(parquet(evs))),
    }
    for name, (events, encode) in files.items():
        (tmp_path / name).write_bytes(encode(events))
    out = ok(tmp_path, "ingest", *files)
    seq = 1
    for name, (events, _) in files.items():
        assert f"{name}: {len(events)} events, seq {seq}..{seq + len(events) - 1}" in out
        seq += len(events)
    everything = [e for events, _ in files.values() for e in events]
    assert log_ids(tmp_path / "data" / "log", check_seqs=True) == ids_of(everything)
    counted = stats(tmp_path)
    assert counted["events"] == 120
    assert counted["type"] == {"metric": 30, "tag": 30, "status": 30, "log": 30}
    assert counted["component"] == {"test": 60, "jobs": 60}
    # A stopped log is all Parquet.
    log_dir = tmp_path / "data" / "log"
    assert sum(p.stat().st_size for p in (log_dir / "wal").iterdir()) == 0
    assert len(list(log_dir.glob("seg-*.parquet"))) == 1


def test_ingest_appends_after_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "one.ndjson").write_bytes(ndjson(wires(0, 5)))
    (tmp_path / "two.ndjson").write_bytes(ndjson(wires(5, 7)))
    ok(tmp_path, "ingest", "one.ndjson")
    assert "seq 6..12" in ok(tmp_path, "ingest", "two.ndjson")
    assert log_ids(tmp_path / "data" / "log", check_seqs=True) == ids_of(wires(0, 12))
    assert stats(tmp_path)["events"] == 12


def test_a_bad_ndjson_file_names_line_and_field_and_appends_nothing(tmp_path: Path) -> None:
    events = wires(0, 6)
    events[2]["value"] = "high"  # line 3: a metric's value as a string
    events[4]["colour"] = "red"  # line 5: an unknown field
    (tmp_path / "bad.ndjson").write_bytes(ndjson(events))
    done = runlake(tmp_path, "ingest", "bad.ndjson")
    assert done.returncode != 0
    assert "bad.ndjson" in done.stderr
    assert re.search(r"'line': 3, 'field': 'value'", done.stderr), done.stderr
    assert re.search(r"'line': 5, 'field': 'colour'", done.stderr), done.stderr
    assert log_ids(tmp_path / "data" / "log", check_seqs=True) == []
    assert stats(tmp_path)["events"] == 0


def test_a_bad_file_among_good_ones_is_skipped_whole(tmp_path: Path) -> None:
    bad = wires(100, 5)
    del bad[3]["run_id"]
    (tmp_path / "good1.ndjson").write_bytes(ndjson(wires(0, 4)))
    (tmp_path / "bad.json").write_bytes(json.dumps(bad).encode())
    (tmp_path / "good2.ndjson").write_bytes(ndjson(wires(4, 3)))
    done = runlake(tmp_path, "ingest", "good1.ndjson", "bad.json", "good2.ndjson")
    assert done.returncode == 1
    assert re.search(r"'event': 3, 'field': 'run_id'", done.stderr), done.stderr
    assert "good1.ndjson: 4 events, seq 1..4" in done.stdout
    assert "good2.ndjson: 3 events, seq 5..7" in done.stdout
    assert log_ids(tmp_path / "data" / "log", check_seqs=True) == ids_of(wires(0, 7))


def test_a_bad_parquet_file_is_held_to_the_same_rules(tmp_path: Path) -> None:
    table = pq.read_table(io.BytesIO(parquet(wires(0, 4))))
    components = table.column("component").to_pylist()
    components[1] = None  # row 2 has no component
    table = table.set_column(
        table.schema.get_field_index("component"), pa.field("component", pa.string()),
        pa.array(components, pa.string()),
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    done = runlake(tmp_path, "ingest", "bad.parquet")
    assert done.returncode == 1
    assert re.search(r"'line': 2, 'field': 'component'", done.stderr), done.stderr
    assert stats(tmp_path)["events"] == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("events.csv", b"type,component\n", "unknown file type"),
        ("events.ndjson.gz", b"not gzip at all", "gzip"),
        ("events.parquet", b"PAR1 not really", "Parquet"),
        ("events.json", b"", "empty"),
    ],
)
def test_unreadable_files_are_reported(tmp_path: Path, name: str, content: bytes,
                                       message: str) -> None:
    (tmp_path / name).write_bytes(content)
    done = runlake(tmp_path, "ingest", name, "missing.ndjson")
    assert done.returncode == 1
    assert message in done.stderr
    assert "missing.ndjson" in done.stderr
    assert stats(tmp_path)["events"] == 0


def test_ingest_refuses_a_log_another_process_is_writing(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson").write_bytes(ndjson(wires(0, 3)))
    with EventLog(tmp_path / "data" / "log") as log:
        log.append(decode_events(ndjson(wires(50, 2)), ndjson=True))
        done = runlake(tmp_path, "ingest", "a.ndjson")
        assert done.returncode == 2
        assert "in use" in done.stderr
    assert log_ids(tmp_path / "data" / "log", check_seqs=True) == ["ev-50", "ev-51"]


def test_demo_out_then_ingest(tmp_path: Path) -> None:
    ok(tmp_path, "demo", "--runs", "50", "--out", "f.ndjson")
    body = (tmp_path / "f.ndjson").read_bytes()
    events = decode_events(body, ndjson=True)  # the demo writes valid events
    assert len(events) > 50 * 10
    assert sum(1 for e in events if e.__struct_config__.tag == "run") >= 50
    out = ok(tmp_path, "ingest", "f.ndjson")
    assert f"f.ndjson: {len(events)} events, seq 1..{len(events)}" in out
    counted = stats(tmp_path)
    logged = log_ids(tmp_path / "data" / "log", check_seqs=True)
    assert counted["events"] == len(events) == len(logged)
    assert set(counted["component"]) <= {"test", "generator", "benchmark", "jobs"}
    assert {"run", "status", "metric"} <= set(counted["type"])


def test_demo_to_stdout_is_deterministic(tmp_path: Path) -> None:
    first = ok(tmp_path, "demo", "--runs", "10", "--seed", "4", "--out", "-")
    assert first == ok(tmp_path, "demo", "--runs", "10", "--seed", "4")
    assert first != ok(tmp_path, "demo", "--runs", "10", "--seed", "5")
    assert len(decode_events(first.encode(), ndjson=True)) == first.count("\n")


def test_demo_append(tmp_path: Path) -> None:
    expected = ok(tmp_path, "demo", "--runs", "30", "--seed", "2", "--out", "-").count("\n")
    out = ok(tmp_path, "demo", "--runs", "30", "--seed", "2", "--append")
    assert f"last seq {expected}" in out
    assert stats(tmp_path)["events"] == expected
    out = ok(tmp_path, "demo", "--runs", "30", "--seed", "2", "--append")
    assert f"last seq {2 * expected}" in out
    assert len(log_ids(tmp_path / "data" / "log", check_seqs=True)) == 2 * expected
    assert not (tmp_path / "f.ndjson").exists()


def test_data_flag_and_environment_choose_the_log(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson").write_bytes(ndjson(wires(0, 3)))
    ok(tmp_path, "ingest", "--data", str(tmp_path / "flag"), "a.ndjson")
    ok(tmp_path, "ingest", "a.ndjson", env={"RUNLAKE_DATA": str(tmp_path / "env")})
    assert (log_ids(tmp_path / "flag" / "log", check_seqs=True)
            == log_ids(tmp_path / "env" / "log", check_seqs=True) == ids_of(wires(0, 3)))
    assert stats(tmp_path, tmp_path / "flag")["events"] == 3
    assert not (tmp_path / "data").exists()


# -- runlake demo --url: the demo sent to a running server --------------------------


def runs_by_component(ndjson_text: str) -> dict[str, int]:
    """How many distinct runs each component has in an NDJSON stream."""
    runs = {(e["component"], e["run_id"]) for e in map(json.loads, ndjson_text.splitlines())
            if "run_id" in e}
    return dict(Counter(component for component, _ in runs))


def folded_runs(url: str, components: Iterable[str], key: str | None = None) -> dict[str, int]:
    headers = {"X-API-Key": key} if key else {}
    totals = {}
    for c in components:
        status, body = request(f"{url}/api/{c}/db/runs?limit=1", headers=headers)
        assert status == 200, body
        totals[c] = json.loads(body)["total"]
    return totals


def test_demo_url_sends_to_a_running_server_and_waits_for_the_fold(
    tmp_path: Path, start_server_process: Callable[..., ServerProcess]
) -> None:
    expected = ok(tmp_path, "demo", "--runs", "30", "--seed", "2", "--out", "-")
    count, runs = expected.count("\n"), runs_by_component(expected)
    server = start_server_process(tmp_path / "data", inbox=False)
    out = ok(tmp_path, "demo", "--runs", "30", "--seed", "2", "--url", server.url)
    assert f"sent {count} events to {server.url}, last seq {count}, folded" in out
    # No waiting here: the command returned once the server had folded them.
    assert folded_runs(server.url, runs) == runs
    assert server.stop() == 0
    assert len(log_ids(tmp_path / "data" / "log", check_seqs=True)) == count


def test_commands_that_need_the_log_say_what_to_do_while_a_server_runs(
    tmp_path: Path, start_server_process: Callable[..., ServerProcess]
) -> None:
    server = start_server_process(tmp_path / "data", inbox=False)
    (tmp_path / "a.ndjson").write_bytes(ndjson(wires(0, 3)))
    for args, hint in [
        (["demo", "--runs", "5", "--append"], "--url http://"),
        (["ingest", "a.ndjson"], "POST the events to it"),
        (["watch"], "a server watches"),
    ]:
        done = runlake(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "in use by a running server" in done.stderr and hint in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert server.stop() == 0
    assert log_ids(tmp_path / "data" / "log", check_seqs=True) == []


def test_demo_url_with_api_keys(
    tmp_path: Path, start_server_process: Callable[..., ServerProcess]
) -> None:
    admin = ok(tmp_path, "keys", "add", "--role", "admin").strip()
    ingest = ok(tmp_path, "keys", "add", "--role", "ingest").strip()
    expected = ok(tmp_path, "demo", "--runs", "10", "--out", "-")
    count, runs = expected.count("\n"), runs_by_component(expected)
    server = start_server_process(tmp_path / "data", inbox=False)

    refused = runlake(tmp_path, "demo", "--runs", "10", "--url", server.url)
    assert refused.returncode == 2
    assert f"{server.url} answered 401 to /api/events" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    # An ingest key sends, but may not read: the command does not wait for the fold.
    out = ok(tmp_path, "demo", "--runs", "10", "--url", server.url, "--key", ingest)
    assert f"sent {count} events to {server.url}, last seq {count};" in out
    out = ok(tmp_path, "demo", "--runs", "10", "--url", server.url,
             env={"RUNLAKE_API_KEY": admin})
    assert f"sent {count} events to {server.url}, last seq {2 * count}, folded" in out
    assert folded_runs(server.url, runs, admin) == runs  # the same runs, twice over
    assert server.stop() == 0


def test_demo_url_that_answers_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        done = runlake(tmp_path, "demo", "--runs", "3", "--url", url)
    assert done.returncode == 2
    assert f"cannot reach {url}" in done.stderr and "Traceback" not in done.stderr
    done = runlake(tmp_path, "demo", "--runs", "3", "--url", "localhost:8080")
    assert done.returncode == 2 and "http://" in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("how, want", [
    ({"env": {"RUNLAKE_READ_BUDGET_S": "abc"}}, "RUNLAKE_READ_BUDGET_S='abc'"),
    ({"env": {"RUNLAKE_INBOX": "maybe"}}, "RUNLAKE_INBOX='maybe'"),
    ({"env": {"RUNLAKE_FLAKY_WINDOW": "1000"}}, "RUNLAKE_FLAKY_WINDOW='1000'"),
    ({"args": ["--flaky-window", "1"]}, "--flaky-window 1"),
    ({"env": {"RUNLAKE_LOG_LEVEL": "verbose"}}, "debug, info, warning, error"),
])
def test_a_bad_setting_is_named_and_nothing_starts(tmp_path: Path, how: dict[str, Any],
                                                    want: str) -> None:
    out = runlake(tmp_path, "serve", "--port", "0", *how.get("args", []), env=how.get("env"))
    assert out.returncode == 2, out
    assert out.stderr.startswith("runlake: ") and want in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()  # refused before the data folder is made
