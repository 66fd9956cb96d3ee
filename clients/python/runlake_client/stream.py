"""Follow `GET /api/stream` (Server-Sent Events), resuming after a disconnect.

Written against the live-updates issue's documented shape; untested until that
route lands in the server.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import msgspec

from .config import Settings

log = logging.getLogger("runlake_client")


def follow(settings: Settings, after: int | str | None,
           filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    last_id: str | None = None
    delay = 0.5
    while True:
        query = {k: v for k, v in filters.items() if v is not None}
        if last_id is None and after is not None:
            query["after"] = after
        parts = urllib.parse.urlsplit(settings.url)
        cls = (http.client.HTTPSConnection if parts.scheme == "https"
               else http.client.HTTPConnection)
        conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        headers = {"Accept": "text/event-stream"}
        if settings.api_key:
            headers["X-API-Key"] = settings.api_key
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            path = parts.path.rstrip("/") + "/api/stream"
            conn.request("GET", path + "?" + urllib.parse.urlencode(query, doseq=True),
                         headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                wait = resp.getheader("Retry-After")
                raise ConnectionError(f"stream answered {resp.status}", wait)
            delay = 0.5
            kind, data, ident = None, [], None
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        if ident is not None:
                            last_id = ident
                        text = "\n".join(data)
                        try:
                            value: Any = msgspec.json.decode(text)
                        except msgspec.DecodeError:
                            value = text
                        yield {"event": kind, "id": ident, "data": value}
                    kind, data, ident = None, [], None
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value_text = line.partition(":")
                    value_text = value_text[1:] if value_text.startswith(" ") else value_text
                    if name == "event":
                        kind = value_text
                    elif name == "data":
                        data.append(value_text)
                    elif name == "id":
                        ident = value_text
        except (OSError, http.client.HTTPException) as e:
            log.info("runlake-client: stream interrupted (%s), resuming", e)
        finally:
            conn.close()
        time.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, 30.0)
