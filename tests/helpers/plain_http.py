"""Blocking HTTP with urllib, for servers in another process or thread: a status, or a
status and a JSON body. An error status is returned, not raised."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# Each wait on the socket (for the answer to begin, for each read) is bounded by this:
# a guard against a server that hangs, not a measurement. 30 s was run past on a
# loaded machine by the baseline server, which ingests one statement per event.
TIMEOUT_S = 120.0


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a POST when there is a `body`."""
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_status(url: str, headers: dict[str, str] | None = None,
                timeout: float = TIMEOUT_S) -> int:
    return request(url, headers=headers, timeout=timeout)[0]


def call(base: str, path: str, body: bytes | None = None,
         content_type: str | None = "application/json", timeout: float = TIMEOUT_S
         ) -> tuple[int, Any]:
    """(status, decoded JSON body); `content_type=None` sends no Content-Type."""
    headers = {"Content-Type": content_type} if content_type else {}
    status, data = request(base + path, body, headers, timeout)
    return status, json.loads(data)


def get(base: str, path: str, **query: Any) -> Any:
    """The JSON body of a GET with `query`, which must answer 200."""
    status, data = call(base, path + ("?" + urllib.parse.urlencode(query) if query else ""))
    assert status == 200, data
    return data
