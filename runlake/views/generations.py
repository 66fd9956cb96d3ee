"""The music-generation service's counts by status (docs/compat.md "Music service"),
read from the `overview` view: one row per component, kept by the fold."""

from __future__ import annotations

from typing import Any

from runlake.views.queries import STATUSES, Cursor

GENERATION_COUNTS = f"""
SELECT runs, {", ".join(STATUSES)}, success_rate FROM overview WHERE component = ?"""


def generation_stats(cur: Cursor, component: str) -> dict[str, Any]:
    """`total_generations` and `<status>_generations` for every run status, as the
    service named them; zeros for a component without runs."""
    row = cur.execute(GENERATION_COUNTS, [component]).fetchone() or (0, *[0] * len(STATUSES),
                                                                      None)
    return {"component": component, "total_generations": row[0],
            **{f"{s}_generations": n for s, n in zip(STATUSES, row[1:-1], strict=True)},
            "success_rate": row[-1]}
