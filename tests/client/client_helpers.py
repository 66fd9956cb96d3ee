"""Helpers of the client's tests: read a real server's folded tables over plain HTTP."""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

import msgspec


def get_json(url: str, path: str, **query: Any) -> Any:
    q = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    with urllib.request.urlopen(f"{url}{path}?{q}", timeout=120) as resp:
        return msgspec.json.decode(resp.read())


def all_items(url: str, path: str, **query: Any) -> list[Any]:
    items: list[Any] = []
    while True:
        page = get_json(url, path, limit=1000, offset=len(items), **query)
        items += page["items"]
        if not page["items"] or len(items) >= page["total"]:
            return items


def metric_steps(url: str, component: str, run_id: str, min_seq: int = 0) -> Counter[int]:
    """How many times each metric `step` is in the run's folded metric points."""
    points = all_items(url, f"/api/{component}/db/run/{run_id}/metrics", min_seq=min_seq)
    return Counter(p["step"] for p in points)


def log_seq(url: str) -> int:
    """The log's last seq (so reads can wait for the fold to pass it)."""
    return int(get_json(url, "/readyz")["last_seq"])


def free_port() -> int:
    """A port nothing listens on (for connection refused; a server may take it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
