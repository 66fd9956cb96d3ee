"""The watched folder (DESIGN §5) with a real watcher on a real folder: every format
ends up queryable, writers that rename are read once and whole, the same file twice
adds nothing, a thousand files at once all arrive, files waiting at start-up are
ingested, and delete mode. A real EventLog, Database and Fold; nothing mocked."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.event_log import log_ids
from helpers.inbox_proc import (
    drop,
    encode,
    json_bytes,
    ndjson_bytes,
    parquet_bytes,
    run_events,
    running_inbox,
)

from runlake import demo
from runlake.ingest import inbox as inbox_module
from runlake.views import queries

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

FORMATS = ["a.ndjson", "b.jsonl", "c.json", "d.json", "e.parquet",
           "f.ndjson.gz", "g.jsonl.gz", "h.json.gz", "i.json.gz", "j.parquet.gz"]
SINGLE_OBJECT = {"c.json", "h.json.gz"}  # a JSON file holding one event, not an array


def test_every_format_ends_up_queryable(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            expected: dict[str, int] = {}
            for name in FORMATS:
                run_id = name.split(".")[0]
                events = run_events(run_id, metrics=4)
                if name in SINGLE_OBJECT:
                    events = events[:1]
                    data = json_bytes(events[0])
                    data = gzip.compress(data) if name.endswith(".gz") else data
                else:
                    data = encode(name, events)
                drop(h.dir, name, data)
                expected[run_id] = len(events)
            await h.settled(len(FORMATS))
            assert h.inbox.files_rejected == 0
            assert h.files(".done") == sorted(FORMATS)
            assert h.files() == []
            assert h.inbox.events_ingested == sum(expected.values())

            runs = await h.read(lambda cur: {
                r: queries.get_run(cur, "test", r) for r in expected
            })
            for run_id, run in runs.items():
                assert run is not None, run_id
                assert run["model"] == "gpt2" and run["name"] == f"run {run_id}"
                assert run["params"] == {"batch_size": 8, "tags": ["a", "b"]}
                if expected[run_id] == 1:  # the single-object files hold the `run` event
                    assert run["status"] == "pending"
                    continue
                assert run["status"] == "completed", run_id
                assert run["hardware"] == "nvidia-t4"
                assert run["tags"] == {"branch": "main"}
                assert [m["count"] for m in run["metrics"]] == [4]
                assert run["metrics"][0]["unit"] == "nats"
                assert run["results"]["passed"] == 1
                assert run["steps"][0]["status"] == "completed"
                assert run["logs"][0]["message"] == f"hello from {run_id}"
                assert run["artifacts"][0]["size_bytes"] == 1234
                assert run["duration_s"] == 59.0  # running at :01, completed at 12:01:00
            metrics = await h.sql(
                "SELECT run_id, count(*), min(step), max(step), sum(value) FROM metrics "
                "GROUP BY run_id ORDER BY run_id")
            total = 1 + 1 / 2 + 1 / 3 + 1 / 4
            assert [m[:4] for m in metrics] == [
                (r, 4, 0, 3) for r in sorted(r for r, n in expected.items() if n > 1)
            ]
            assert all(abs(m[4] - total) < 1e-9 for m in metrics)
            # Every event got an idempotency id from its file's content.
            assert await h.sql("SELECT count(*), count(DISTINCT id) FROM event_ids") == [
                (sum(expected.values()), sum(expected.values()))
            ]

    asyncio.run(main())


def test_ndjson_and_parquet_inboxes_give_the_same_views(tmp_path: Path) -> None:
    """Contract: the Parquet (vectorized) and JSON (per event) paths agree, table by table."""
    chunks = list(demo.ndjson_batches(80, seed=3, batch_size=700))

    async def ingest(data: Path, as_parquet: bool) -> dict[str, list[Any]]:
        # Folded once at the end, so both folds see the same batches: this compares
        # the inbox's two paths, not the fold's independence of batch splits.
        async with running_inbox(data, fold=False) as h:
            for n, chunk in enumerate(chunks):
                if as_parquet:
                    events = [msgspec.json.decode(line) for line in chunk.splitlines()]
                    drop(h.dir, f"{n:03d}.parquet", parquet_bytes(events))
                else:
                    drop(h.dir, f"{n:03d}.ndjson", chunk)
            await h.settled(len(chunks))
            assert h.inbox.files_rejected == 0
            await asyncio.to_thread(h.fold.fold_available)
            tables = await h.sql(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND NOT internal "
                "AND table_name NOT IN ('event_ids', 'fold_state')")
            # The log holds the same events in the same order, so even `seq` agrees.
            out = {}
            for (table,) in tables:
                rows = await h.sql(f"SELECT * FROM {table} ORDER BY ALL")
                out[table] = [tuple(_approx(v) for v in row) for row in rows]
            return out

    async def main() -> None:
        from_ndjson = await ingest(tmp_path / "ndjson", False)
        from_parquet = await ingest(tmp_path / "parquet", True)
        assert from_ndjson.keys() == from_parquet.keys()
        assert len(from_ndjson) >= 15
        for table in from_ndjson:
            assert from_ndjson[table] == from_parquet[table], table
        assert len(from_ndjson["metrics"]) > 500

    asyncio.run(main())


def _approx(value: Any) -> Any:
    """Floats to 10 digits: DuckDB's parallel sums may differ in the last bit."""
    return float(f"{value:.10g}") if isinstance(value, float) else value


class InboxClock:
    """The inbox's clock (its `time.monotonic`): real time, except while held, when it
    stands still but for what `advance` adds."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._held_at: float | None = None

    def monotonic(self) -> float:
        if self._held_at is not None:
            return self._held_at
        return time.monotonic() + self._offset

    def hold(self) -> None:
        self._held_at = self.monotonic()

    def advance(self, seconds: float) -> None:
        assert self._held_at is not None
        self._held_at += seconds

    def release(self) -> None:
        if self._held_at is not None:
            self._offset = self._held_at - time.monotonic()
            self._held_at = None


def test_a_slow_writer_is_read_once_and_whole(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a .part name for as long as it likes, then renamed: read once, whole. And
    one writing in place with short pauses is waited for until it stops."""
    events = run_events("slow", metrics=400)
    data = ndjson_bytes(events)
    in_place = ndjson_bytes(run_events("in-place", metrics=400))
    clock = InboxClock()
    monkeypatch.setattr(inbox_module, "time", clock)

    def write_slowly(path: Path, content: bytes, pieces: int, pause: float,
                     held: bool = False) -> None:
        size = len(content) // pieces + 1  # pieces end mid-line: a half read would fail
        with open(path, "wb") as f:
            for i in range(0, len(content), size):
                f.write(content[i:i + size])
                f.flush()
                time.sleep(pause)  # real time, for the inbox to look in between
                if held:
                    clock.advance(pause)  # the time the inbox sees pass

    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            part = h.dir / "slow.ndjson.part"
            await asyncio.to_thread(write_slowly, part, data, 10, 0.15)  # 1.5 s, pauses > stable
            await asyncio.sleep(0.3)
            assert h.inbox.files_ingested == 0 and h.files() == ["slow.ndjson.part"]
            os.rename(part, h.dir / "slow.ndjson")
            await h.settled(1)
            # In place, pausing less than the stability window between pieces: by the
            # inbox's clock, which stands still but for the writer's pauses, so a loaded
            # machine cannot stretch a pause past the window (and read half a file).
            clock.hold()
            try:
                await asyncio.to_thread(write_slowly, h.dir / "in-place.ndjson", in_place,
                                        60, 0.02, True)
            finally:
                clock.release()
            await h.settled(2)
            assert (h.inbox.files_ingested, h.inbox.files_rejected) == (2, 0)
            assert h.inbox.events_ingested == 2 * len(events)
            assert h.files(".done") == ["in-place.ndjson", "slow.ndjson"]
            assert h.event_log.last_seq == 2 * len(events)  # each appended exactly once
            counts = await h.sql("SELECT run_id, count(*) FROM metrics GROUP BY 1 ORDER BY 1")
            assert counts == [("in-place", 400), ("slow", 400)]

    asyncio.run(main())


def test_the_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    events = run_events("twice", metrics=5)
    events[2]["id"] = "my-own-id"  # an event with an id keeps it
    data = ndjson_bytes(events)
    key = hashlib.sha256(data).hexdigest()[:24]

    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            drop(h.dir, "twice.ndjson", data)
            await h.settled(1)
            assert log_ids(h.event_log) == [
                "my-own-id" if n == 3 else f"{key}:{n}" for n in range(1, len(events) + 1)
            ]
            before = await h.read(lambda cur: (queries.get_run(cur, "test", "twice"),
                                               queries.overview(cur)))
            # Again under the same name, under another name, and gzipped (same content).
            drop(h.dir, "twice.ndjson", data)
            await h.settled(2)
            drop(h.dir, "again.ndjson", data)
            drop(h.dir, "twice.ndjson.gz", gzip.compress(data))
            await h.settled(4)
            assert h.inbox.files_rejected == 0
            assert h.event_log.last_seq == 4 * len(events)  # appended, then dropped by the fold
            after = await h.read(lambda cur: (queries.get_run(cur, "test", "twice"),
                                              queries.overview(cur)))
            assert after == before
            assert before[1]["total"]["events"] == len(events)
            assert await h.sql("SELECT count(*) FROM metrics") == [(5,)]
            assert await h.sql("SELECT count(*) FROM event_ids") == [(len(events),)]
            assert h.files(".done") == ["again.ndjson", "twice.1.ndjson", "twice.ndjson",
                                        "twice.ndjson.gz"]

    asyncio.run(main())


def test_a_thousand_small_files_at_once_all_arrive(tmp_path: Path) -> None:
    n_files = 1000

    def write_all(directory: Path) -> None:
        for i in range(n_files):  # straight into the inbox, as fast as possible
            (directory / f"f{i:04d}.ndjson").write_bytes(
                ndjson_bytes(run_events(f"r{i:04d}", metrics=1)[-3:]))

    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            started = time.monotonic()
            await asyncio.to_thread(write_all, h.dir)
            await h.settled(n_files, timeout=90)
            elapsed = time.monotonic() - started
            assert (h.inbox.files_ingested, h.inbox.files_rejected) == (n_files, 0)
            assert h.inbox.events_ingested == 3 * n_files
            assert len(h.files(".done")) == n_files and h.files() == []
            rows = await h.sql("SELECT count(*), count(DISTINCT run_id) FROM metrics")
            assert rows == [(n_files, n_files)]
            runs = await h.sql("SELECT status, count(*) FROM runs GROUP BY 1")
            assert runs == [("completed", n_files)]
            print(f"{n_files} files in {elapsed:.1f} s")

    asyncio.run(main())


def test_files_waiting_at_start_up_are_ingested_oldest_first(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "data" / "inbox"
    inbox_dir.mkdir(parents=True)
    now = time.time()
    for name, age in (("b.ndjson", 30), ("a.ndjson", 20), ("c.parquet", 20), ("d.json", 10)):
        path = inbox_dir / name
        path.write_bytes(encode(name, run_events(name[0], metrics=2, ids=True)))
        os.utime(path, (now - age, now - age))

    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            await h.settled(4)
            assert h.files() == []
            order = [i.split("-")[0] for i in log_ids(h.event_log)]
            firsts = [r for n, r in enumerate(order) if n == 0 or order[n - 1] != r]
            assert firsts == ["b", "a", "c", "d"]  # by mtime, then by name
            assert await h.sql("SELECT count(*) FROM runs") == [(4,)]

    asyncio.run(main())


def test_delete_mode_and_names_left_alone(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_inbox(tmp_path / "data", inbox_delete=True) as h:
            ignored = [".hidden.ndjson", "x.ndjson.tmp", "y.ndjson.part", "z.JSON.PART"]
            for name in ignored:
                (h.dir / name).write_bytes(ndjson_bytes(run_events("ignored")))
            (h.dir / "folder.ndjson").mkdir()  # a directory: skipped, left alone
            drop(h.dir, "gone.ndjson", ndjson_bytes(run_events("gone")))
            await h.settled(1)
            await asyncio.sleep(0.5)  # give the ignored names every chance to be read
            assert h.files() == sorted(ignored)
            assert (h.dir / "folder.ndjson").is_dir()
            assert h.files(".done") == []  # deleted, once durable
            assert await h.sql("SELECT run_id FROM runs") == [("gone",)]
            os.rename(h.dir / "x.ndjson.tmp", h.dir / "x.ndjson")  # finished: now it counts
            await h.settled(2)
            assert "x.ndjson" not in h.files()
            assert h.inbox.files_ingested == 2 and h.inbox.files_rejected == 0

    asyncio.run(main())


def test_ingest_file_directly(tmp_path: Path) -> None:
    """`ingest_file` without the watcher: the result names the outcome and seq range."""
    async def main() -> None:
        async with running_inbox(tmp_path / "data", start=False) as h:
            h.dir.mkdir(parents=True)
            good = h.dir / "good.parquet"
            good.write_bytes(parquet_bytes(run_events("direct")))
            result = await h.inbox.ingest_file(good)
            assert (result.outcome, result.events, result.seqs) == ("ingested", 11, (1, 11))
            assert result.moved_to == h.dir / ".done" / "good.parquet"
            bad = h.dir / "bad.ndjson"
            bad.write_bytes(b'{"type": "metric"}\n')
            result = await h.inbox.ingest_file(bad)
            assert result.outcome == "rejected" and "run_id" in (result.reason or "")
            assert result.moved_to == h.dir / ".rejected" / "bad.ndjson"
            missing = await h.inbox.ingest_file(h.dir / "missing.ndjson")
            assert missing.outcome == "skipped"
            assert (h.inbox.files_ingested, h.inbox.files_rejected) == (1, 1)

    asyncio.run(main())


def test_stop_finishes_the_file_in_hand(tmp_path: Path) -> None:
    """Stopping while files stream in leaves each file either ingested (and moved) or
    untouched in the inbox: none half-done."""
    stop_writing = threading.Event()

    def stream(directory: Path) -> None:
        n = 0
        while not stop_writing.is_set():
            drop(directory, f"s{n:04d}.ndjson", ndjson_bytes(run_events(f"s{n}", metrics=50)))
            n += 1
            time.sleep(0.005)

    async def main() -> None:
        async with running_inbox(tmp_path / "data") as h:
            writer = threading.Thread(target=stream, args=(h.dir,))
            writer.start()
            try:
                await h.until(lambda: h.inbox.files_ingested >= 5)
            finally:
                stop_writing.set()
                await asyncio.to_thread(writer.join)
            await h.inbox.stop()
            done, waiting = h.files(".done"), h.files()
            assert len(done) == h.inbox.files_ingested
            per_file = len(run_events("x", metrics=50))
            assert h.event_log.last_seq == h.inbox.events_ingested == per_file * len(done)
            assert not set(done) & set(waiting)

    asyncio.run(main())
