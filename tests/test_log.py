"""The event log (DESIGN §2): seq order across segment rolls, group commit under concurrent
appenders, reopen and recovery of torn write-ahead tails, plain-Parquet segments."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runlake.errors import LogError, LogLocked
from runlake.events import (
    LOG_SCHEMA,
    SCHEMA_VERSION,
    Event,
    EventLog,
    decode_events,
    events_to_table,
    row_to_event,
)
from runlake.events import log as log_module
from runlake.events.schema import AnyEvent, MetricEvent
from runlake.events.segments import list_segments

KINDS = ("run", "status", "step", "metric", "tag", "log", "artifact", "result", "batch", "delete")


def wire_event(n: int, kind: str | None = None, prefix: str = "e") -> dict[str, Any]:
    """A valid wire event, different for every n; every 7th has no id, every 5th no ts."""
    kind = kind or KINDS[n % len(KINDS)]
    run = f"run-{n // 10}"
    ev: dict[str, Any] = {"type": kind, "component": ("test", "generator", "jobs")[n % 3]}
    if n % 7:
        ev["id"] = f"{prefix}-{n}"
    if n % 5 == 1:
        ev["ts"] = 1_714_564_800 + n / 1000  # epoch seconds
    elif n % 5:
        ev["ts"] = f"2024-05-01T12:{n % 60:02d}:{n % 59:02d}.{n % 999_999:06d}+02:00"
    fields: dict[str, dict[str, Any]] = {
        "run": {"run_id": run, "model": "llama-3.1-8b", "name": f"run {n}",
                "params": {"lr": 1 / (n + 1), "tags": ["a", n]}},
        "status": {"run_id": run, "status": "failed", "error": f"boom {n}"},
        "step": {"run_id": run, "step": f"step-{n % 4}", "status": "running",
                 "progress": (n % 11) / 10},
        "metric": {"run_id": run, "name": "loss", "value": n * 0.5 - 3, "unit": "nats",
                   "step": n},
        "tag": {"run_id": run, "key": "branch", "value": f"b{n}"},
        "log": {"run_id": run, "level": "info", "message": f"line {n} ✓"},
        "artifact": {"run_id": run, "name": "out.bin", "size_bytes": n * 1000},
        "result": {"run_id": run, "test": f"t::{n}", "outcome": "passed", "duration_s": 0.25},
        "batch": {"batch_id": f"b-{n}", "expected_count": n % 9},
        "delete": {"run_id": f"gone-{n}"},
    }
    ev.update(fields[kind])
    return ev


def make_events(start: int, count: int, kind: str | None = None, prefix: str = "e") -> list[Event]:
    wires = [wire_event(n, kind, prefix) for n in range(start, start + count)]
    return decode_events(json.dumps(wires).encode())


def as_stored(event: Event, received_at: datetime) -> Event:
    """The event as the log gives it back: ts resolved to an instant (default: receipt)."""
    ts = event.ts
    if ts is None:
        ts = received_at
    elif isinstance(ts, float):
        ts = datetime.fromtimestamp(ts, UTC)
    return msgspec.structs.replace(event, ts=ts)


def read_rows(log: EventLog, from_seq: int = 1, to_seq: int | None = None,
              batch_rows: int = 65_536) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in log.read(from_seq, to_seq, batch_rows=batch_rows):
        assert batch.schema.equals(LOG_SCHEMA, check_metadata=False)
        rows.extend(batch.to_pylist())
    return rows


def row_event(row: dict[str, Any]) -> Event:
    """A log row back as an event (the derived `@seq` id dropped)."""
    wire = row_to_event(row)
    del wire["seq"], wire["received_at"]
    if wire["id"] == f"@{row['seq']}":
        del wire["id"]
    return msgspec.convert(wire, AnyEvent)


def check_log(log: EventLog, expected: list[Event], from_seq: int = 1) -> list[dict[str, Any]]:
    """Every event is there, identical, once, in seq order from `from_seq`."""
    rows = read_rows(log, from_seq)
    assert [r["seq"] for r in rows] == list(range(from_seq, from_seq + len(expected)))
    for row, event in zip(rows, expected, strict=True):
        assert row_event(row) == as_stored(event, row["received_at"])
        if event.id is None:
            assert row["id"] is None and row_to_event(row)["id"] == f"@{row['seq']}"
    return rows


def wal_bytes(directory: Path) -> int:
    total = 0
    for path in (directory / "wal").glob("*"):
        with contextlib.suppress(FileNotFoundError):  # a roll may delete it meanwhile
            total += path.stat().st_size
    return total


def test_events_read_back_identical_in_seq_order_across_rolls(
    tmp_path: Path, no_leaks: None
) -> None:
    expected: list[Event] = []
    with EventLog(tmp_path, roll_rows=50) as log:
        for i in range(20):
            events = make_events(len(expected), 7 + 3 * i)
            first, last = log.append(events)
            assert (first, last) == (len(expected) + 1, len(expected) + len(events))
            expected += events
        check_log(log, expected)  # segments, sealed tails and the live tail together
    segments = list_segments(tmp_path)
    assert len(segments) >= 10
    assert [s.first for s in segments] == [1] + [s.last + 1 for s in segments[:-1]]
    assert segments[-1].last == len(expected)
    with EventLog(tmp_path, readonly=True) as log:
        rows = check_log(log, expected)
    assert {r["type"] for r in rows} == set(KINDS)


def test_roll_seconds_rolls_an_idle_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A roll ends by syncing the WAL folder after deleting the rolled file: look then.
    synced = threading.Condition()
    real_fsync_dir = log_module.fsync_dir

    def fsync_dir(path: Path) -> None:
        real_fsync_dir(path)
        with synced:
            synced.notify_all()

    monkeypatch.setattr(log_module, "fsync_dir", fsync_dir)
    with EventLog(tmp_path, roll_rows=10**6, roll_seconds=0.2) as log:
        log.append(make_events(0, 30))
        with synced:  # 60 s: a guard against hanging, not a measurement
            synced.wait_for(lambda: log.segments() and not wal_bytes(tmp_path), timeout=60)
        assert [(s.first, s.last) for s in log.segments()] == [(1, 30)]
        assert wal_bytes(tmp_path) == 0
        log.append(make_events(30, 5))
        check_log(log, make_events(0, 35))


def append_in_groups(log: EventLog, events: list[Event], rng: random.Random) -> None:
    """`events` in appends of 1 to 40, one after another."""
    pos = 0
    while pos < len(events):
        n = rng.randint(1, 40)
        log.append(events[pos : pos + n])
        pos += n


# Long enough that no tail is rolled for its age while a test runs: rolls by size only.
NEVER_BY_AGE_S = 3600.0


@pytest.mark.parametrize("layout", ["segments", "sealed_tails", "all_in_the_tail"])
def test_reads_from_any_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              layout: str) -> None:
    """Reads start in the right segment, sealed tail or group commit of the tail
    (found by bisection) and stop at `to_seq`.

    Each layout is made to happen, never waited for: the roller thread writes
    segments whenever it gets to them, so `segments` closes a first log (which
    waits for the roller) and reopens it to append the rest into the tail, and
    `sealed_tails` holds the roller until the reads are done."""
    events = make_events(0, 300)
    n = len(events)
    rng = random.Random(7)
    rolled = 250 if layout == "segments" else 0
    if rolled:
        with EventLog(tmp_path, roll_rows=64, roll_seconds=NEVER_BY_AGE_S) as log:
            append_in_groups(log, events[:rolled], rng)
    released = threading.Event()
    if layout == "sealed_tails":
        real_write = log_module.write_segment

        def write_segment(*args: Any) -> Any:
            released.wait()  # set below before the log closes, pass or fail
            return real_write(*args)

        monkeypatch.setattr(log_module, "write_segment", write_segment)
    roll_rows = 64 if layout == "sealed_tails" else 10**6
    with EventLog(tmp_path, roll_rows=roll_rows, roll_seconds=NEVER_BY_AGE_S) as log:
        try:
            append_in_groups(log, events[rolled:], rng)
            ranges = [(1, None), (1, n), (n, None), (n + 1, None), (64, 65), (65, 65), (10, 9),
                      (0, 3), (200, 10**9), (rolled, rolled + 1)]
            ranges += [tuple(sorted(rng.sample(range(1, n + 1), 2))) for _ in range(20)]
            ranges += [(s, None) for s in range(1, n + 2, 5)]  # from all over
            # The layout its id names. Sealed tails: every append but the last was
            # followed by its seal, if any (each holds 64 to 103 events), so the 260+
            # events before the last append filled at least two, each in its own WAL file.
            assert bool(log.segments()) == (layout == "segments")
            wal_files = len(list((tmp_path / "wal").glob("*.arrows")))
            assert (wal_files > 2) == (layout == "sealed_tails")
            with EventLog(tmp_path, readonly=True) as readonly:
                for reader in (log, readonly):
                    for from_seq, to_seq in ranges:
                        rows = read_rows(reader, from_seq, to_seq,
                                         batch_rows=rng.choice([3, 7, 1000]))
                        stop = n if to_seq is None else min(to_seq, n)
                        want = list(range(max(from_seq, 1), stop + 1))
                        assert [r["seq"] for r in rows] == want, (from_seq, to_seq)
                        assert [r["id"] for r in rows] == [events[s - 1].id for s in want]
        finally:
            released.set()


def test_concurrent_appenders_get_no_gaps_and_no_duplicates(tmp_path: Path, no_leaks: None) -> None:
    threads, appends = 8, 40
    acks: dict[int, list[tuple[int, int, list[Event]]]] = {t: [] for t in range(threads)}
    start = threading.Barrier(threads)

    def appender(t: int, log: EventLog) -> None:
        rng = random.Random(t)
        start.wait()
        for i in range(appends):
            events = make_events(i * 100, rng.randint(1, 30), prefix=f"t{t}")
            first, last = log.append(events)
            acks[t].append((first, last, events))

    with EventLog(tmp_path, roll_rows=500) as log:
        workers = [threading.Thread(target=appender, args=(t, log)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    ranges = sorted((a, b) for per in acks.values() for a, b, _ in per)
    assert len(ranges) == threads * appends
    assert ranges[0][0] == 1
    assert all(b - a + 1 > 0 for a, b in ranges)
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in zip(ranges, ranges[1:], strict=False))
    expected: list[Event | None] = [None] * ranges[-1][1]
    for per in acks.values():
        seqs = [a for a, _, _ in per]
        assert seqs == sorted(seqs)  # one thread's appends keep their order
        for a, b, events in per:
            assert len(events) == b - a + 1
            expected[a - 1 : b] = events
    with EventLog(tmp_path) as log:
        check_log(log, [e for e in expected if e is not None])
        assert None not in expected
        assert len(list_segments(tmp_path)) > 5


def test_waiting_appends_share_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends queued while the writer is busy go out together: the writer is held in
    its first commit until 199 more are waiting (left to run, it could keep up with
    the submitter and commit each on its own)."""
    writing, released = threading.Event(), threading.Event()
    real_encode = log_module.encode_frame

    def encode_frame(table: pa.Table) -> bytes:
        writing.set()
        released.wait()  # set below, pass or fail
        return real_encode(table)

    monkeypatch.setattr(log_module, "encode_frame", encode_frame)
    with EventLog(tmp_path) as log:
        try:
            futures = [log.submit(make_events(0, 1))]
            assert writing.wait(60), "the writer never began its first commit"  # a hang guard
            futures += [log.submit(make_events(i, 1)) for i in range(1, 200)]
        finally:
            released.set()
        acks = [f.result(timeout=30) for f in futures]
        assert acks == [(i, i) for i in range(1, 201)]
        assert log.group_commits == 2  # the held one, then the 199 that waited for it
        assert log.appended_events == 200


def test_close_and_reopen_keeps_everything_and_leaves_only_parquet(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append(make_events(0, 100))
        assert wal_bytes(tmp_path) > 0  # the tail is in the write-ahead file until closed
        assert not log.segments()
    assert [(s.first, s.last) for s in list_segments(tmp_path)] == [(1, 100)]
    assert wal_bytes(tmp_path) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "LOCK", "seg-00000000000000000001-00000000000000000100.parquet", "wal",
    ]
    with EventLog(tmp_path) as log:
        assert log.last_seq == 100
        assert log.append(make_events(100, 10)) == (101, 110)
    with EventLog(tmp_path) as log:
        check_log(log, make_events(0, 110))
    assert wal_bytes(tmp_path) == 0
    with EventLog(tmp_path) as log:  # nothing appended: nothing rolled, no empty segment
        pass
    assert len(list_segments(tmp_path)) == 2


def test_close_is_idempotent_and_appends_after_close_fail(tmp_path: Path, no_leaks: None) -> None:
    log = EventLog(tmp_path).open()
    log.append(make_events(0, 3))
    log.close()
    log.close()
    with pytest.raises(LogError):
        log.append(make_events(3, 1))
    with EventLog(tmp_path, readonly=True) as ro, pytest.raises(LogError):
        ro.append(make_events(3, 1))


def test_one_writer_per_log(tmp_path: Path, no_leaks: None) -> None:
    with EventLog(tmp_path) as log:
        log.append(make_events(0, 2))
        with pytest.raises(LogLocked, match="in use"):
            EventLog(tmp_path).open()
        with EventLog(tmp_path, readonly=True) as ro:  # readers need no lock
            assert ro.last_seq == 2
    with EventLog(tmp_path) as log:
        assert log.last_seq == 2


def test_readonly_log_sees_a_consistent_prefix_while_a_writer_appends(tmp_path: Path) -> None:
    """Read-only snapshots taken over and over while a writer appends and rolls. At a
    few appends the writer holds still until a snapshot begun after it is done, so
    snapshots are made to land at (at least) those points, whatever the threads' pace."""
    events = make_events(0, 6000)
    acked = [0]  # last_seq acknowledged so far
    done = threading.Event()
    snapshots: list[int] = []
    taken = threading.Condition()  # notified on each snapshot taken
    reader_gone = [False]
    hold_after = {10, 50, 90}  # append numbers; every append holds at most 60 events
    held_at: list[int] = []

    def writer(log: EventLog) -> None:
        pos, appends = 0, 0
        rng = random.Random(3)
        try:
            while pos < len(events):
                n = rng.randint(1, 60)
                acked[0] = log.append(events[pos : pos + n])[1]
                pos += n
                appends += 1
                if appends in hold_after:
                    held_at.append(acked[0])
                    hold_for_a_snapshot()
        finally:
            done.set()  # also if an append failed: the reader must not wait for ever

    def hold_for_a_snapshot() -> None:
        with taken:  # the next snapshot but one begins after this point
            want = len(snapshots) + 2
            taken.wait_for(lambda: len(snapshots) >= want or reader_gone[0])

    with EventLog(tmp_path, roll_rows=150, roll_seconds=0.05) as log:
        thread = threading.Thread(target=writer, args=(log,))
        thread.start()
        try:
            while not done.is_set():
                before = acked[0]
                with EventLog(tmp_path, readonly=True) as ro:
                    rows = read_rows(ro)
                    assert ro.last_seq >= before  # everything acknowledged is visible
                    assert [r["seq"] for r in rows] == list(range(1, ro.last_seq + 1))
                    assert [r["id"] for r in rows] == [e.id for e in events[: len(rows)]]
                with taken:
                    snapshots.append(len(rows))
                    taken.notify_all()
        finally:
            with taken:
                reader_gone[0] = True
                taken.notify_all()
            thread.join()
    assert len(held_at) == len(hold_after)
    assert set(held_at) <= set(snapshots)  # a snapshot taken while the writer held still
    assert len(list_segments(tmp_path)) > 3


def test_a_roll_between_the_readonly_listings_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only open lists the segments, then the WAL files. A roll that finishes in
    between (its segment written, its WAL file deleted) must not hide the rolled events:
    made to happen by holding the reader after it listed the segments until the writer
    has rolled its tail (on close). The race the consistent-prefix test above runs
    into now and then, forced."""
    listed, rolled = threading.Event(), threading.Event()
    real_list_segments = log_module.list_segments

    def list_segments(directory: Path) -> Any:
        found = real_list_segments(directory)
        if threading.current_thread().name == "readonly-open":
            listed.set()
            assert rolled.wait(60), "the writer never rolled"  # a hang guard
        return found

    monkeypatch.setattr(log_module, "list_segments", list_segments)
    seen: dict[str, int] = {}

    def open_readonly() -> None:
        with EventLog(tmp_path, readonly=True) as ro:
            seen["last_seq"] = ro.last_seq
            seen["rows"] = len(read_rows(ro))

    log = EventLog(tmp_path, roll_rows=10**6, roll_seconds=NEVER_BY_AGE_S).open()
    reader = threading.Thread(target=open_readonly, name="readonly-open")
    try:
        assert log.append(make_events(0, 30)) == (1, 30)
        reader.start()
        assert listed.wait(60), "the reader never listed the segments"  # a hang guard
        log.close()  # rolls the tail into a segment and deletes its WAL file
    finally:
        rolled.set()
        log.close()
        if reader.is_alive():
            reader.join()
    assert seen == {"last_seq": 30, "rows": 30}, "acknowledged events missing from a snapshot"


def _write_unrolled_log(directory: Path, frames: int, per_frame: int) -> Path:
    """A log as a crash would leave it: every event only in the write-ahead file."""
    live = directory / "live"
    with EventLog(live) as log:
        for i in range(frames):
            log.append(make_events(i * per_frame, per_frame))
        crashed = directory / "crashed"
        shutil.copytree(live, crashed)  # a crash-consistent copy: appends were fsynced
    (wal,) = (crashed / "wal").glob("wal-*.arrows")
    return wal


def _frame_offsets(wal: Path) -> list[int]:
    """Byte offset of each frame: magic 'RLW1', u32 length, u32 crc, i64 first seq."""
    data, pos, offsets = wal.read_bytes(), 0, []
    while pos < len(data):
        assert data[pos : pos + 4] == b"RLW1"
        offsets.append(pos)
        pos += 20 + int.from_bytes(data[pos + 4 : pos + 8], "little")
    return offsets


@pytest.mark.parametrize(
    ("damage", "kept_frames"),
    [
        ("none", 5),
        ("garbage-appended", 5),
        ("zeros-appended", 5),
        ("cut-in-last-header", 4),
        ("cut-in-last-payload", 4),
        ("cut-one-byte-short", 4),
        ("flipped-byte-in-last-payload", 4),
        ("cut-in-third-frame", 2),
    ],
)
def test_torn_wal_tail_is_cut_on_reopen(tmp_path: Path, damage: str, kept_frames: int) -> None:
    per_frame = 9
    wal = _write_unrolled_log(tmp_path, 5, per_frame)
    offsets = _frame_offsets(wal)
    assert len(offsets) == 5
    size = wal.stat().st_size
    cuts = {
        "cut-in-last-header": offsets[4] + 11,
        "cut-in-last-payload": offsets[4] + 20 + (size - offsets[4] - 20) // 2,
        "cut-one-byte-short": size - 1,
        "cut-in-third-frame": offsets[2] + 100,
    }
    with open(wal, "r+b") as f:
        if damage in cuts:
            f.truncate(cuts[damage])
        elif damage == "garbage-appended":
            f.seek(0, os.SEEK_END)
            f.write(b"RLW1" + random.Random(1).randbytes(300))
        elif damage == "zeros-appended":
            f.seek(0, os.SEEK_END)
            f.write(bytes(4096))
        elif damage == "flipped-byte-in-last-payload":
            f.seek(size - 50)
            byte = f.read(1)
            f.seek(size - 50)
            f.write(bytes([byte[0] ^ 0xFF]))
    crashed = wal.parent.parent
    kept = kept_frames * per_frame
    with EventLog(crashed, readonly=True) as ro:  # a reader before recovery: whole frames only
        check_log(ro, make_events(0, kept))
    with EventLog(crashed) as log:
        assert log.last_seq == kept
        assert [(s.first, s.last) for s in log.segments()] == [(1, kept)]
        assert wal_bytes(crashed) == 0  # recovered into a segment
        assert log.append(make_events(1000, 3)) == (kept + 1, kept + 3)
    assert wal_bytes(crashed) == 0
    with EventLog(crashed) as log:
        check_log(log, make_events(0, kept) + make_events(1000, 3))


def test_recovery_skips_wal_events_a_segment_already_holds(tmp_path: Path) -> None:
    # A crash after a roll wrote its segment but before it deleted the write-ahead file.
    wal = _write_unrolled_log(tmp_path, 3, 10)
    crashed = wal.parent.parent
    (segment,) = list_segments(tmp_path / "live")
    shutil.copy(segment.path, crashed / segment.path.name)
    (crashed / f".{segment.path.name}.tmp").write_bytes(b"half a segment")
    with EventLog(crashed) as log:
        assert log.last_seq == 30
        check_log(log, make_events(0, 30))
    assert sorted(p.name for p in crashed.iterdir()) == ["LOCK", segment.path.name, "wal"]


def test_duckdb_reads_the_segments_as_plain_parquet(tmp_path: Path) -> None:
    events = make_events(0, 1000)
    with EventLog(tmp_path, roll_rows=128) as log:
        for i in range(0, 1000, 100):
            log.append(events[i : i + 100])
    counts = duckdb.sql(
        f"select type, count(*) from read_parquet('{tmp_path}/**/*.parquet') group by 1"
    ).fetchall()
    assert dict(counts) == {kind: 100 for kind in KINDS}
    stats = duckdb.sql(
        f"select count(*), count(distinct seq), min(seq), max(seq), "
        f"count(*) filter (where type = 'metric' and value is not null), "
        f"count(*) filter (where type = 'tag' and tag_value like 'b%'), "
        f"count(*) filter (where type = 'step' and step_name like 'step-%') "
        f"from '{tmp_path}/*.parquet'"
    ).fetchall()
    assert stats == [(1000, 1000, 1, 1000, 100, 100, 100)]


def test_segments_carry_the_schema_version_and_the_log_schema(tmp_path: Path) -> None:
    with EventLog(tmp_path, roll_rows=10) as log:
        for start, count in ((0, 10), (10, 12), (22, 3)):
            log.append(make_events(start, count))
    segments = list_segments(tmp_path)
    assert len(segments) == 3
    for segment in segments:
        schema = pq.read_schema(segment.path)
        assert schema.metadata[b"runlake.schema_version"] == SCHEMA_VERSION.encode()
        assert pq.read_metadata(segment.path).metadata[b"runlake.schema_version"] == b"2"
        assert schema.equals(LOG_SCHEMA, check_metadata=False)
        pf = pq.ParquetFile(segment.path)
        assert pf.metadata.row_group(0).column(0).compression == "ZSTD"


def test_no_column_changes_type_across_event_types(tmp_path: Path) -> None:
    # One segment of metrics only, one of tags only, one of steps only: same schema each.
    with EventLog(tmp_path, roll_rows=20) as log:
        log.append(make_events(0, 20, "metric"))
        log.append(make_events(20, 20, "tag"))
        log.append(make_events(40, 20, "step"))
    schemas = [pq.read_schema(s.path) for s in list_segments(tmp_path)]
    assert len(schemas) == 3
    assert all(s.equals(schemas[0]) for s in schemas)
    described = duckdb.sql(f"describe select * from '{tmp_path}/*.parquet'").fetchall()
    types = {name: sql_type for name, sql_type, *_ in described}
    assert list(types) == LOG_SCHEMA.names
    assert (types["value"], types["tag_value"]) == ("DOUBLE", "VARCHAR")
    assert (types["step"], types["step_name"]) == ("BIGINT", "VARCHAR")
    rows = duckdb.sql(
        f"select type, count(value), count(tag_value), count(step), count(step_name) "
        f"from '{tmp_path}/*.parquet' group by 1 order by 1"
    ).fetchall()
    assert rows == [("metric", 20, 0, 20, 0), ("step", 0, 0, 0, 20), ("tag", 0, 20, 0, 0)]


def test_server_assigns_received_at_and_default_ts(tmp_path: Path) -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    with EventLog(tmp_path) as log:
        log.append(make_events(0, 10))
        rows = read_rows(log)
    after = datetime.now(UTC)
    for row, wire in zip(rows, (wire_event(n) for n in range(10)), strict=True):
        assert before <= row["received_at"] <= after
        if "ts" not in wire:
            assert row["ts"] == row["received_at"]


def test_a_bad_append_fails_alone_and_the_log_keeps_working(tmp_path: Path, no_leaks: None) -> None:
    # Events built in Python skip validation; the writer must not die on them.
    not_a_number = MetricEvent(run_id="r", name="x", value="nan?", component="test")  # type: ignore[arg-type]
    no_component = MetricEvent(run_id="r", name="x", value=1.0)
    with EventLog(tmp_path) as log:
        good = log.submit(make_events(0, 2))
        bad = [log.submit([not_a_number]), log.submit([no_component])]
        later = log.submit(make_events(2, 2))
        assert good.result(timeout=10) == (1, 2)
        for future in bad:
            with pytest.raises(LogError):
                future.result(timeout=10)
        assert later.result(timeout=10) == (3, 4)
        assert log.append(make_events(4, 1)) == (5, 5)
    with EventLog(tmp_path) as log:  # and the tail rolled: no poisoned segment
        check_log(log, make_events(0, 5))


def test_submit_table_assigns_seq_received_at_and_default_ts(tmp_path: Path) -> None:
    table = events_to_table(make_events(0, 10), 999, 0)
    with EventLog(tmp_path) as log:
        log.append(make_events(100, 3))
        assert log.submit_table(table).result(timeout=10) == (4, 13)
        with pytest.raises(LogError):
            log.submit_table(pa.table({"seq": [1]}))
        rows = read_rows(log, 4)
    assert [r["seq"] for r in rows] == list(range(4, 14))
    assert [r["id"] for r in rows] == [e.id for e in make_events(0, 10)]
    assert all(r["received_at"].year >= 2024 for r in rows)
