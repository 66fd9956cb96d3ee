"""Append to an EventLog from a few threads until killed (the subject of test_log_crash.py).

    python appender.py LOG_DIR TAG [--threads N] [--batch N] [--roll-rows N]

Prints `ready <last_seq>` once the log is open (after recovery), then one line
`ack <first> <last> <key>` per append, only after its future resolved (durable). Event
k of an append has id `<key>-<k>`, so the test can check that the acknowledged seqs
hold exactly those events. Each line is one os.write to the pipe: atomic, never torn.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path

from runlake.events import EventLog, decode_events


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def batch(key: str, size: int) -> list:
    wires = []
    for k in range(size):
        kind = ("metric", "tag", "log", "step")[k % 4]
        ev = {"type": kind, "component": "crash", "run_id": key, "id": f"{key}-{k}"}
        ev |= {
            "metric": {"name": "loss", "value": k / 7, "step": k},
            "tag": {"key": "k", "value": "v" * (k % 50)},
            "log": {"level": "info", "message": f"line {k} of {key}"},
            "step": {"step": f"s{k % 5}", "status": "running", "progress": k / size},
        }[kind]
        wires.append(ev)
    return decode_events(json.dumps(wires).encode())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("log_dir", type=Path)
    p.add_argument("tag")
    p.add_argument("--threads", type=int, default=3)
    p.add_argument("--batch", type=int, default=40)
    p.add_argument("--roll-rows", type=int, default=400)
    args = p.parse_args()
    log = EventLog(args.log_dir, roll_rows=args.roll_rows, roll_seconds=0.2).open()
    say(f"ready {log.last_seq}")

    def append_forever(t: int) -> None:
        n = 0
        while True:
            key = f"{args.tag}.{t}.{n}"
            first, last = log.submit(batch(key, 1 + (n * 7 + t) % args.batch)).result()
            say(f"ack {first} {last} {key}")
            n += 1

    threads = [threading.Thread(target=append_forever, args=(t,)) for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
