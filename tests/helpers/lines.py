"""A helper subprocess that reports progress one line at a time on stdout (the crash
tests' appender and folder): its lines collected by a thread, `ready` set once it
prints a line starting with `ready`."""

from __future__ import annotations

import subprocess
import threading


class LineProcess:
    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.endswith(b"\n"):  # a line cut by the kill is not a report
                self.lines.append(raw.decode().strip())
                if raw.startswith(b"ready"):
                    self.ready.set()

    def seqs(self, word: str) -> list[int]:
        """The numbers of the lines `<word> <n>`."""
        return [int(line.split()[1]) for line in self.lines if line.split()[0] == word]

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
