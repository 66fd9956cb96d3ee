"""A small progress bar on stderr for long commands (ingest, demo, replay)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Shows done/total, rate and ETA; redraws at most every `interval` seconds."""

    def __init__(self, label: str, total: int | None, unit: str = "events",
                 stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = 0
        self.start = self._last = time.monotonic()
        self._tty = self.stream.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(final=False)

    def finish(self) -> float:
        """Draw the last line; returns the elapsed seconds."""
        self._draw(final=True)
        return time.monotonic() - self.start

    def _draw(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            text = (f"{self.label} [{bar:<30}] {self.done:,}/{self.total:,} {self.unit} "
                    f"{rate:,.0f}/s ETA {eta:.0f}s")
        else:
            text = f"{self.label} {self.done:,} {self.unit} {rate:,.0f}/s {elapsed:.1f}s"
        if self._tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        elif final or not self._tty:
            self.stream.write(text + "\n")
        self.stream.flush()
