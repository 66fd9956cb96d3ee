"""kill -9 of a client process at seeded random moments while it logs: after
`runlake-client sync`, every event handed over before its last fsync is in the
server's tables exactly once, and none is there twice."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from client_helpers import free_port, log_seq, metric_steps
from helpers.server import serve_in_thread

ROUNDS = 12
CHILD = '''
import os, sys
from runlake_client import Client

url, spool, run_id, marker, every = sys.argv[1:6]
client = Client(url, component="crash", spool_dir=spool, max_tries=2, backoff_s=0.01,
                max_backoff_s=0.02, probe_s=0.05, linger_s=0.005, exit_flush_s=0)
run = client.run(run_id)
fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
i = 0
while True:
    run.metric("m", float(i), step=i)
    i += 1
    if i % int(every) == 0 and client.flush(60):
        os.write(fd, b"%d\\n" % i)  # events 0 .. i-1 are acknowledged or fsynced
        os.fsync(fd)
'''


def durable_count(marker: Path) -> int:
    lines = marker.read_text().split() if marker.exists() else []
    return int(lines[-1]) if lines else 0


def test_kill_9_while_logging_loses_nothing_durable(tmp_path: Path) -> None:
    rng = random.Random(19)
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    spool = tmp_path / "spool"
    with serve_in_thread(tmp_path) as server:
        url = server.client.url
        durable: dict[str, int] = {}
        for n in range(ROUNDS):
            # odd rounds: nothing listens, so the events go to the spool
            target_url = url if n % 2 == 0 else f"http://127.0.0.1:{free_port()}"
            run_id, marker = f"round-{n}", tmp_path / f"marker-{n}"
            every, target = rng.choice((7, 50, 300)), rng.randint(1, 3000)
            proc = subprocess.Popen([sys.executable, str(child), target_url, str(spool),
                                     run_id, str(marker), str(every)])
            deadline = time.monotonic() + 120  # a guard, not a measurement
            while durable_count(marker) < target and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.002)
            assert proc.poll() is None, f"child exited by itself ({proc.returncode})"
            proc.kill()
            proc.wait(30)
            durable[run_id] = durable_count(marker)
            assert durable[run_id] >= target
        assert any(spool.glob("*.rlspool"))
        sync = subprocess.run([sys.executable, "-m", "runlake_client.cli", "sync", str(spool),
                               "--url", url], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "RUNLAKE_URL": ""})
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert not list(spool.glob("*.rlspool"))
        seq = log_seq(url)
        for run_id, count in durable.items():
            steps = metric_steps(url, "crash", run_id, seq)
            missing = [i for i in range(count) if steps[i] != 1]
            assert missing == [], f"{run_id}: steps not there exactly once: {missing[:10]}"
            assert max(steps.values()) == 1, f"{run_id}: a step twice"
