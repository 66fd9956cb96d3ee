"""Reading an EventLog back in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runlake.events import EventLog


def log_ids(log: EventLog | Path, *, check_seqs: bool = False) -> list[Any]:
    """The id of every event in `log` (an open EventLog, or a log folder, opened read-only
    for the call), in seq order. With `check_seqs`, asserts the seqs are 1, 2, … n."""
    if isinstance(log, Path):
        with EventLog(log, readonly=True) as opened:
            return log_ids(opened, check_seqs=check_seqs)
    ids: list[Any] = []
    seqs: list[int] = []
    for batch in log.read(1):
        ids += batch.column("id").to_pylist()
        if check_seqs:
            seqs += batch.column("seq").to_pylist()
    if check_seqs:
        assert seqs == list(range(1, len(seqs) + 1)), "seqs are not contiguous from 1"
    return ids
