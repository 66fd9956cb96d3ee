"""The README works in the order written: every command of its ```sh blocks is run,
in order, with a server running, and must exit 0.

The convention (README.md says so too):
- every line of a ```sh block is one command; a line ending in `\\` goes on into the
  next; each runs in `bash -o pipefail -c`, in a temp folder holding `.venv` (a link
  to the venv running this test) and, once the server runs, its data folder `data/`;
- `make run` starts the server as `make run` does (`runlake serve --data ./data`), but
  on a free port, and waits until it answers; `localhost:8080` and `127.0.0.1:8080`
  in later commands are rewritten to that port;
- `make test` is skipped: it is this suite;
- a command that queries the log's segments (`data/log/*.parquet`) runs once the
  server has rolled one (the README says they hold the newest events only then): this
  server rolls after 1 s instead of `roll_seconds`' 60, which a reader who got that
  far has long passed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers.server import ServerProcess, start_server_process

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_PORTS = ("localhost:8080", "127.0.0.1:8080")
SEGMENTS = "data/log/*.parquet"
COMMAND_TIMEOUT_S = 300.0
ROLL_DEADLINE_S = 60.0


def sh_blocks(text: str) -> list[list[str]]:
    """The commands of each ```sh block, continuation lines joined."""
    blocks = []
    for body in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S):
        commands, pending = [], ""
        for line in body.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command:
                commands.append(command)
        assert not pending, f"a ```sh block ends in a continuation: {pending!r}"
        blocks.append(commands)
    return blocks


def bare(command: str) -> str:
    """The command without a trailing `# comment` (for make lines, which hold no '#')."""
    return command.split("#", 1)[0].strip()


def check_model_stats(stdout: str) -> None:
    stats = json.loads(stdout)
    assert stats["items"], stats  # the demo's runs, folded before the command returned
    assert all(item["runs"] > 0 and item["model"] for item in stats["items"]), stats


def check_accepted(stdout: str) -> None:
    assert json.loads(stdout)["accepted"] == 1, stdout


def check_log_stats(stdout: str) -> None:
    total = re.search(r"^events: ([\d,]+)", stdout, re.M)
    assert total and int(total[1].replace(",", "")) > 2000, stdout  # the demo's 2 000 runs


def check_segments(stdout: str) -> None:
    assert "metric" in stdout and "status" in stdout, stdout


# Commands whose output is checked too, by a text they hold: (text, check).
CHECKS: list[tuple[str, Callable[[str], None]]] = [
    ("/models/stats", check_model_stats),
    ("/api/events", check_accepted),
    ("log stats", check_log_stats),
    (SEGMENTS, check_segments),
]


def test_the_readme_starts_with_what_runlake_is_and_two_commands() -> None:
    text = README.read_text()
    assert text.startswith("# runlake\n\nrunlake is ")
    assert [bare(c) for c in sh_blocks(text)[0]] == ["make run", "make test"]


def test_every_readme_command_works_in_order_with_the_server_running(tmp_path: Path) -> None:
    blocks = sh_blocks(README.read_text())
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLAKE_")}
    server: ServerProcess | None = None
    checked: set[str] = set()
    ran = 0
    try:
        for command in (c for block in blocks for c in block):
            if bare(command) == "make test":
                continue
            if bare(command) == "make run":
                assert server is None, "make run twice"
                server = start_server_process(tmp_path / "data", roll_seconds=1)
                continue
            assert server is not None, f"{command!r} comes before `make run`"
            port = server.url.rsplit(":", 1)[1]
            for default in DEFAULT_PORTS:
                command = command.replace(default, f"127.0.0.1:{port}")
            if SEGMENTS in command:
                wait_for_a_segment(tmp_path / "data" / "log", server)
            done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path,
                                  env=env, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
            assert done.returncode == 0, (
                f"{command!r} exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
                f"stderr:\n{done.stderr[-3000:]}")
            ran += 1
            for text, check in CHECKS:
                if text in command:
                    check(done.stdout)
                    checked.add(text)
        assert server is not None, "the README never starts the server"
        assert server.stop() == 0, server.stderr()[-3000:]
        assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
    finally:
        if server is not None and server.proc.poll() is None:
            server.kill()
    assert checked == {text for text, _ in CHECKS}, "a checked command left the README"
    assert ran >= 10


def wait_for_a_segment(log_dir: Path, server: ServerProcess) -> None:
    deadline = time.monotonic() + ROLL_DEADLINE_S
    while not list(log_dir.glob("*.parquet")):
        assert server.proc.poll() is None, server.stderr()[-3000:]
        assert time.monotonic() < deadline, "the server rolled no segment"
        time.sleep(0.05)
