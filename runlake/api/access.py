"""The server's keys and its count of refused requests (the middleware is auth.py)."""

from __future__ import annotations

import logging

from aiohttp import web

from runlake.api.keys import ApiKey, KeyRing
from runlake.api.metrics import UNMATCHED, header, sample

log = logging.getLogger("runlake.auth")

API_KEY = web.RequestKey("api_key", ApiKey)  # the request's key, once authenticated
REASONS = ("missing", "unknown", "forbidden")
KEY_HEADER = "X-API-Key"
# The dashboard's sign-in (docs/security.md "Dashboard"): the key in an HttpOnly cookie,
# and a CSRF token that a cookie-authenticated non-GET request repeats in a header.
KEY_COOKIE = "runlake_key"
CSRF_COOKIE = "runlake_csrf"
CSRF_HEADER = "X-CSRF-Token"


class Auth:
    """The keys, whether auth is on, and the count of refused requests (the role each
    route needs is in the route table)."""

    def __init__(self, keyring: KeyRing, loopback: bool) -> None:
        self.keyring = keyring
        self.loopback = loopback
        self.failures = dict.fromkeys(REASONS, 0)

    @property
    def enabled(self) -> bool:
        return bool(self.keyring) or not self.loopback

    def failed(self, request: web.Request, reason: str, message: str) -> None:
        """Count a refused request and log it: route, remote, reason; never the key."""
        self.failures[reason] += 1
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        key = request.get(API_KEY)
        log.warning("auth refused reason=%s method=%s route=%s remote=%s key_name=%s: %s",
                    reason, request.method, route, request.remote,
                    key.name if key is not None else "-", message)

    def render(self) -> list[str]:
        name = "runlake_auth_failures_total"
        lines = header(name, "counter",
                       "requests refused: missing or unknown key (401), forbidden (403)")
        lines += [sample(name, n, reason=reason) for reason, n in self.failures.items()]
        lines += header("runlake_auth_enabled", "gauge", "1 while requests need an API key")
        lines.append(sample("runlake_auth_enabled", int(self.enabled)))
        return lines
