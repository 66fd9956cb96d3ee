"""The seed-style baseline (bench/baseline/server.py) as a real subprocess, for the
tests that check it and those that compare runlake with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "bench" / "baseline" / "server.py"


def start(db: Path) -> tuple[subprocess.Popen[str], str]:
    errors = db.with_suffix(".stderr")  # a file, not a pipe nobody drains
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--db", str(db), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server prints exactly this one line once bound
    if not line.startswith("listening on http://127.0.0.1:"):
        stop(proc)
        pytest.fail(f"server did not start: {line!r} {errors.read_text()}")
    return proc, line.split("listening on ", 1)[1].strip()


def stop(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
