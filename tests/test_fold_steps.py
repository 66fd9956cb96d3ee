"""Regression: each (run, step) keeps one row, whatever the batch split."""

from __future__ import annotations

from pathlib import Path

import msgspec

from runlake.events import decode_events, events_to_table
from runlake.ingest.fold import fold_table
from runlake.views.db import Database


def test_every_step_of_a_run_gets_its_own_row(tmp_path: Path) -> None:
    events = [
        {"type": "step", "component": "test", "run_id": "r1", "step": name, "status": status,
         "ts": f"2026-01-01T00:00:0{i}Z"}
        for i, (name, status) in enumerate(
            [("load", "running"), ("load", "completed"), ("train", "running"), ("eval", "failed")])
    ]
    table = events_to_table(decode_events(msgspec.json.encode(events)), 1, 0)
    db = Database(tmp_path / "db.duckdb").open()
    try:
        fold_table(db.connection, table)
        rows = db.connection.execute(
            "SELECT step, status FROM steps ORDER BY step").fetchall()
    finally:
        db.close()
    assert rows == [("eval", "failed"), ("load", "completed"), ("train", "running")]
