"""kill -9 the fold at random moments (DESIGN §3): it resumes from its high-water mark,
and what it ends with equals a full replay of the log into a fresh file.

A real subprocess (tests/helpers/folder.py) folds an existing log in small batches and
prints each committed seq; this test kills it again and again on the same DuckDB file,
then lets one run finish. Every committed batch must survive its kill (the next run
starts at or past it), and the final database must equal, table by table and view by
view, one replay of the whole log (floats within a relative 1e-9).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from helpers.databases import assert_same_database, dump_file, fold_into
from helpers.folder import fill_log
from helpers.lines import LineProcess

from runlake.events import EventLog
from runlake.views.db import SCHEMA_VERSION, Database, folded_seq

HELPER = Path(__file__).parent / "helpers" / "folder.py"
RUNS = 1000  # ~31 k events: ~60 batches of 500
BATCH_ROWS = 500
KILLS = 10


class Folder(LineProcess):
    """One run of the helper."""

    def __init__(self, log_dir: Path, db_file: Path, *, use_fold: bool,
                 hold_after: int = 0) -> None:
        cmd = [sys.executable, str(HELPER), str(log_dir), str(db_file),
               "--batch-rows", str(BATCH_ROWS), "--hold-after", str(hold_after)]
        super().__init__(cmd + (["--use-fold"] if use_fold else []))

    def finish(self, *, kill: bool) -> bool:
        """SIGKILL (or wait for the end); True if the helper was still folding."""
        alive, stderr = self.end(kill=kill, timeout=120)
        expected = -9 if kill and alive else 0
        assert self.proc.returncode == expected, f"folder exited {self.proc.returncode}:\n{stderr}"
        return alive


def replay(log_dir: Path, db_file: Path) -> dict[str, list[tuple[object, ...]]]:
    """The reference: the whole log folded in one batch into a fresh file, views rebuilt."""
    with EventLog(log_dir, readonly=True) as log:
        table = pa.Table.from_batches(list(log.read(1)))
    return fold_into(db_file, table, incremental=False)


@pytest.mark.slow
def test_kill_9_during_fold_ends_equal_to_full_replay(tmp_path: Path) -> None:
    seed = int(os.environ.get("RUNLAKE_CRASH_SEED", random.randrange(2**32)))
    print(f"RUNLAKE_CRASH_SEED={seed}")  # shown on failure, to replay the same kill moments
    rng = random.Random(seed)
    log_dir, db_file = tmp_path / "log", tmp_path / "runlake.duckdb"
    last_seq = fill_log(log_dir, RUNS)

    committed = 0  # the highest seq a killed run reported as folded
    for n in range(KILLS):
        # Each run holds (waits to be killed) after k + 1 batches, so the 10 runs fold
        # at most 40 of the log's ~60 batches: the kills always come before the end.
        k = rng.randint(1, 3)
        folder = Folder(log_dir, db_file, use_fold=n % 3 == 2, hold_after=k + 1)
        try:
            if n % 5 == 4:  # any moment: while starting, opening the database or folding
                time.sleep(rng.uniform(0.0, 1.5))
                reported = True
            else:  # as soon as batch k is reported: while reading, folding or committing k + 1
                reported = folder.wait_lines("folded", k, timeout=120)
        finally:
            alive = folder.finish(kill=True)
        assert reported and alive, f"the folder stopped before {k} batches: {folder.lines}"
        folded = folder.seqs("folded")
        for start in folder.seqs("ready"):  # none if killed before it opened the database
            assert committed <= start <= last_seq, "a committed batch was lost"
            assert folded == sorted(folded) and all(s > start for s in folded)
            committed = max([committed, start, *folded])
        print(f"kill {n}: {folder.lines[:1]}, reported {len(folded)} batches folded")
    assert committed <= KILLS * 4 * BATCH_ROWS < last_seq

    folder = Folder(log_dir, db_file, use_fold=False)
    folder.finish(kill=False)
    (start,) = folder.seqs("ready")
    assert committed <= start
    assert folder.seqs("done") == [last_seq]

    def folded_to_the_end(db: Database) -> None:
        assert folded_seq(db.connection) == last_seq

    crashed = dump_file(db_file, folded_to_the_end)
    expected = replay(log_dir, tmp_path / "replay.duckdb")
    assert expected["fold_state"] == [(last_seq, SCHEMA_VERSION)]
    assert expected["runs"] and expected["metric_hist"], "the log should hold runs and metrics"
    assert_same_database(crashed, expected, "killed and resumed vs full replay")
