"""Prometheus text exposition: HTTP request counters and latency histograms per route.

Only the event loop updates these, so plain dicts suffice (no locks).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

# Seconds; a read target is 10 ms p99 and an append waits for one fsync.
BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # label for requests no route matched (404/405)
# overloaded: the server is at max_concurrent_requests (503);
# client_share: the client is at max_requests_per_client (429)
REFUSALS = ("overloaded", "client_share")


class _Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1


class HttpMetrics:
    """Requests by (route template, method, status) and latency by (route, method).

    Labels use the route's canonical path (`/api/{component}/events`), never the
    raw URL, and fold unknown methods into `OTHER`, so label sets stay bounded.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.in_flight = 0  # requests the concurrency limit counts (api/limits.py)
        self.refused = dict.fromkeys(REFUSALS, 0)  # by the concurrency limit, by reason
        self.bad_requests: dict[int, int] = {}  # by status: aiohttp could not parse them

    def bad_request(self, status: int) -> None:
        self.bad_requests[status] = self.bad_requests.get(status, 0) + 1

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get((route, method))
        if hist is None:
            hist = self.latency[(route, method)] = _Histogram()
        hist.observe(seconds)

    def render(self) -> list[str]:
        lines = header("runlake_http_requests_total", "counter", "HTTP requests answered")
        for (route, method, status), n in sorted(self.requests.items()):
            lines.append(sample("runlake_http_requests_total", n,
                                route=route, method=method, status=str(status)))
        name = "runlake_http_request_duration_seconds"
        lines += header(name, "histogram", "HTTP request latency by route")
        for (route, method), hist in sorted(self.latency.items()):
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(sample(f"{name}_bucket", cumulative,
                                    route=route, method=method, le=le))
            lines.append(sample(f"{name}_sum", hist.sum, route=route, method=method))
            lines.append(sample(f"{name}_count", hist.count, route=route, method=method))
        lines += metric("runlake_http_requests_in_flight", "gauge",
                        "requests in flight under the concurrency limit", self.in_flight)
        name = "runlake_http_requests_refused_total"
        lines += header(name, "counter", "requests refused by the concurrency limit: "
                                         "server full (503), client over its share (429)")
        lines += [sample(name, n, reason=reason) for reason, n in self.refused.items()]
        name = "runlake_http_bad_requests_total"
        lines += header(name, "counter", "requests aiohttp could not parse, by the status "
                                         "answered (400, 414, 431)")
        lines += [sample(name, n, status=str(status))
                  for status, n in sorted(self.bad_requests.items())]
        return lines


def header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def sample(name: str, value: float, **labels: str) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {_number(value)}"


def metric(name: str, kind: str, help_text: str, value: float) -> list[str]:
    """One unlabelled counter or gauge, with its HELP and TYPE lines."""
    return [*header(name, kind, help_text), sample(name, value)]


def exposition(lines: Iterable[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
