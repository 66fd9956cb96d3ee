"""A helper subprocess that reports progress one line at a time on stdout (the crash
tests' appender and folder): its lines collected by a thread, `ready` set once it
prints a line starting with `ready`, and `wait_lines` to wait for a number of reports."""

from __future__ import annotations

import subprocess
import threading


class LineProcess:
    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._changed = threading.Condition()  # notified on each line, and at end of output
        self._ended = False
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                if raw.endswith(b"\n"):  # a line cut by the kill is not a report
                    with self._changed:
                        self.lines.append(raw.decode().strip())
                        self._changed.notify_all()
                    if raw.startswith(b"ready"):
                        self.ready.set()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def seqs(self, word: str) -> list[int]:
        """The numbers of the lines `<word> <n>`."""
        return [int(line.split()[1]) for line in self.lines if line.split()[0] == word]

    def wait_lines(self, word: str, count: int, timeout: float) -> bool:
        """Block until `count` lines start with `word`; False if the output ended first
        (or after `timeout`, a guard against hanging)."""
        def enough() -> bool:
            return sum(line.split()[0] == word for line in self.lines) >= count

        with self._changed:
            self._changed.wait_for(lambda: enough() or self._ended, timeout)
            return enough()

    def end(self, *, kill: bool, timeout: float) -> tuple[bool, str]:
        """SIGKILL (or wait for the exit); (whether it was still running, its stderr)."""
        alive = self.proc.poll() is None
        if kill:
            self.proc.kill()
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        stderr = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return alive, stderr
