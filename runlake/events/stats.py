"""`runlake log stats`: what the log holds, read from the log itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.compute as pc

from runlake.events.log import EventLog


def log_stats(directory: Path) -> str:
    """Event counts per type and per component, the seq range and segment count."""
    log = EventLog(directory, readonly=True).open()
    by_type: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    total = 0
    first = None
    for batch in log.read(1):
        total += batch.num_rows
        if first is None:
            first = batch.column(0)[0].as_py()
        for name, counter in (("type", by_type), ("component", by_component)):
            vc = pc.value_counts(batch.column(name))
            for item in vc.to_pylist():
                counter[item["values"]] += item["counts"]
    lines = [
        f"log: {directory}",
        f"events: {total:,}  seq: {first or 0}..{log.last_seq}  segments: {len(log.segments())}",
        "by type:",
        *(f"  {k:<10} {v:>12,}" for k, v in sorted(by_type.items())),
        "by component:",
        *(f"  {k:<20} {v:>12,}" for k, v in sorted(by_component.items())),
    ]
    return "\n".join(lines)
