"""The flush at interpreter exit: a script that never calls flush or close still
delivers everything, or spools it when the server is away, and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from client_helpers import free_port, log_seq, metric_steps
from helpers.server import serve_in_thread

SCRIPT = '''
import sys
from runlake_client import Client

client = Client(sys.argv[1], component="atexit", spool_dir=sys.argv[2])
run = client.run("r")
for i in range(500):
    run.metric("m", float(i), step=i)
print("done")
'''


def run_script(tmp_path: Path, url: str, spool: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "RUNLAKE_EXIT_FLUSH_S": "3"}
    return subprocess.run([sys.executable, str(script), url, str(spool)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_exit_flush_delivers_or_spools(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    down = run_script(tmp_path, f"http://127.0.0.1:{free_port()}", spool)
    assert (down.returncode, down.stdout) == (0, "done\n"), down.stderr
    assert "left in the spool" in down.stderr  # told, not raised
    assert list(spool.glob("*.rlspool"))
    with serve_in_thread(tmp_path) as server:
        url = server.client.url
        up = run_script(tmp_path, url, tmp_path / "spool2")
        assert (up.returncode, up.stdout) == (0, "done\n"), up.stderr
        assert metric_steps(url, "atexit", "r", log_seq(url)) == dict.fromkeys(range(500), 1)
