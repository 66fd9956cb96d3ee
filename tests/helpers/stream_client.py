"""Stream clients for tests: SSE over aiohttp's client, parsed as a browser would
(fields until a blank line), and WebSocket messages as the same dicts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from runlake.api.stream_client import sse_blocks


@dataclass
class Message:
    """One message: `kind` is `event` for events (SSE's unnamed messages)."""

    kind: str
    data: dict[str, Any]
    id: int | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return int(self.data["seq"])


async def sse_messages(resp: aiohttp.ClientResponse) -> AsyncIterator[Message]:
    """The messages of an SSE response until it ends (`retry:`-only blocks skipped),
    parsed by the one SSE parser runlake has (`runlake tail`'s)."""
    async for block in sse_blocks(resp):
        if not block["data"]:
            continue
        fields = {k: v for k, v in block.items() if k != "data"}
        yield Message(fields.get("event", "event"), msgspec.json.decode(block["data"]),
                      int(fields["id"]) if "id" in fields else None, fields)


async def ws_messages(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[Message]:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        body = msgspec.json.decode(msg.data)
        kind = body["type"]
        if kind == "event":
            yield Message("event", body["event"], body["event"]["seq"])
        else:
            yield Message(kind, body)
