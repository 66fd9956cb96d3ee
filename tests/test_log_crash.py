"""kill -9 at random moments (DESIGN §2): every acknowledged event survives, no partial
event appears, seqs stay contiguous from 1, and the log can always be read.

A real subprocess (tests/helpers/appender.py) appends from three threads with small
segments and prints each acknowledged seq range; this test kills it, checks the log with
a read-only reader (before any recovery), and starts the next appender on the same folder,
whose open recovers the torn tail.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest
from helpers.event_log import log_ids
from helpers.lines import LineProcess

from runlake.events import EventLog
from runlake.events.segments import list_segments

HELPER = Path(__file__).parent / "helpers" / "appender.py"
ROUNDS = 24


class Appender(LineProcess):
    """One run of the helper."""

    def __init__(self, log_dir: Path, tag: str) -> None:
        super().__init__([sys.executable, str(HELPER), str(log_dir), tag])

    def kill(self) -> str:
        """SIGKILL; returns stderr, failing the test if the helper had died by itself."""
        alive, stderr = self.end(kill=True, timeout=30)
        assert alive, f"the appender exited on its own ({self.proc.returncode}):\n{stderr}"
        assert self.proc.returncode == -9
        return stderr


def read_ids(log_dir: Path, writable: bool = False) -> list[str]:
    """Ids of the whole log by seq; asserts seqs are exactly 1..last_seq."""
    with EventLog(log_dir, readonly=not writable) as log:
        ids = log_ids(log, check_seqs=True)
        assert log.last_seq == len(ids)
    return ids


def check_acknowledged(ids: list[str], acked: dict[str, tuple[int, int]]) -> None:
    """Every acknowledged append is in the log, at its seqs, whole; no id appears twice."""
    for key, (first, last) in acked.items():
        assert last <= len(ids), f"acknowledged {key} at {first}..{last} but log ends at {len(ids)}"
        assert ids[first - 1 : last] == [f"{key}-{k}" for k in range(last - first + 1)], key
    assert len(set(ids)) == len(ids)


@pytest.mark.slow
def test_kill_9_never_loses_an_acknowledged_event(tmp_path: Path) -> None:
    seed = int(os.environ.get("RUNLAKE_CRASH_SEED", random.randrange(2**32)))
    print(f"RUNLAKE_CRASH_SEED={seed}")  # shown on failure, to replay the same kill moments
    rng = random.Random(seed)
    log_dir = tmp_path / "log"
    acked: dict[str, tuple[int, int]] = {}
    rounds_with_acks = 0
    for n in range(ROUNDS):
        appender = Appender(log_dir, f"r{n}")
        if n % 4 == 3:  # any moment: while importing, recovering or appending
            time.sleep(rng.uniform(0.0, 0.8))
        else:  # once some appends are acknowledged: mid-append, mid-roll, mid-fsync
            acks = rng.randint(1, 40)
            assert appender.wait_lines("ack", acks, timeout=60), \
                f"the appender stopped before {acks} acknowledgements: {appender.lines[-3:]}"
        appender.kill()

        new_acks = 0
        for line in appender.lines:
            word, *rest = line.split()
            if word == "ready":  # the log as recovered holds every earlier acknowledgement
                assert int(rest[0]) >= max((b for _, b in acked.values()), default=0)
            else:
                assert word == "ack"
                first, last, key = int(rest[0]), int(rest[1]), rest[2]
                assert key not in acked
                acked[key] = (first, last)
                new_acks += 1
        rounds_with_acks += new_acks > 0
        # Reading never fails, even before recovery has cut the torn tail.
        check_acknowledged(read_ids(log_dir), acked)

    ids = read_ids(log_dir, writable=True)  # recover, roll the tail, then read
    check_acknowledged(ids, acked)
    assert read_ids(log_dir) == ids
    ranges = sorted(acked.values())
    assert all(b[0] > a[1] for a, b in zip(ranges, ranges[1:], strict=False))
    # Three rounds in four waited for acknowledgements; their events are rolled into
    # segments by the appender's rolls or by the next open's recovery.
    assert rounds_with_acks >= ROUNDS * 3 // 4
    assert len(list_segments(log_dir)) >= 5, "the appenders should have rolled segments"
    assert not [p for p in log_dir.iterdir() if p.name.endswith(".tmp")]
