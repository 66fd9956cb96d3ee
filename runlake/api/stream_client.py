"""`runlake tail`: follow a server's live stream (GET /api/stream, docs/stream.md)
from the command line, one event per line.

Without `follow` the stream is asked to end once caught up (`until=caught_up`).
With it, a dropped connection, `too_slow` or a server's `closed` is followed by a
reconnect from the last position the server gave (an event's id, a heartbeat's or
caught_up's seq, too_slow's or closed's resume), after the server's jittered
`retry:`: nothing printed twice, nothing skipped.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import msgspec

DEFAULT_URL = "http://127.0.0.1:8080"
FIRST_RETRY_S = 3.0  # until the server says otherwise with `retry:`


@dataclass
class TailOptions:
    url: str = DEFAULT_URL
    key: str | None = None
    components: list[str] = field(default_factory=list)
    run_id: str | None = None
    types: list[str] = field(default_factory=list)
    batch_id: str | None = None
    after: str | None = None  # a seq or "end"; None: 0, or "end" with follow
    follow: bool = False
    ndjson: bool = False


class TailError(Exception):
    """The server refused the stream (its error message), or could not be reached."""


def query_of(options: TailOptions, after: str) -> list[tuple[str, str]]:
    query = [("component", c) for c in options.components] + [("type", t) for t in options.types]
    if options.run_id is not None:
        query.append(("run_id", options.run_id))
    if options.batch_id is not None:
        query.append(("batch_id", options.batch_id))
    query.append(("after", after))
    if not options.follow:
        query.append(("until", "caught_up"))
    return query


def one_line(event: dict[str, Any]) -> str:
    """`seq ts component/run_id type field=value ...`: the event in one readable line."""
    skip = {"seq", "ts", "component", "run_id", "type", "received_at", "id"}
    fields = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in skip)
    where = event["component"] + (f"/{event['run_id']}" if "run_id" in event else "")
    return f"{event['seq']} {event['ts']} {where} {event['type']} {fields}".rstrip()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= 200 else text[:199] + "…"


async def sse_blocks(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """An SSE response's messages as a browser parses them: the fields up to each blank
    line, `data` lines joined (comments skipped)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data or fields:
                yield {**fields, "data": "\n".join(data)}
            fields, data = {}, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


async def tail(options: TailOptions, out: TextIO = sys.stdout) -> int:
    """Print the stream's events; 0 once caught up (or, following, on Ctrl-C)."""
    after = options.after or ("end" if options.follow else "0")
    retry_s = FIRST_RETRY_S
    headers = {"X-API-Key": options.key} if options.key else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connected = False
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        while True:
            try:
                async with session.get(options.url.rstrip("/") + "/api/stream",
                                       params=query_of(options, after)) as resp:
                    if resp.status != 200:
                        raise TailError(_error_text(resp.status, await resp.read()))
                    connected = True
                    async for message in sse_blocks(resp):
                        if "retry" in message and message["retry"].isdigit():
                            retry_s = int(message["retry"]) / 1000
                        if not message["data"]:
                            continue
                        body = msgspec.json.decode(message["data"])
                        kind = message.get("event", "event")
                        if kind == "event":
                            line = message["data"] if options.ndjson else one_line(body)
                            out.write(line + "\n")
                            out.flush()
                        if "id" in message:
                            after = message["id"]
                        if kind in ("too_slow", "closed"):
                            after = str(body["resume"])
                            print(f"runlake tail: the server sent {kind}"
                                  + (f" ({body['reason']})" if "reason" in body else "")
                                  + f"; resuming after seq {after}", file=sys.stderr)
                        if kind == "caught_up" and not options.follow:
                            return 0
            except (aiohttp.ClientError, ConnectionError) as e:
                if not (options.follow and connected):
                    raise TailError(f"cannot reach {options.url}: {e}") from e
            # The stream ended early (too_slow, closed, a dropped connection): go on
            # from the last position, after the server's jittered retry.
            await asyncio.sleep(retry_s * random.uniform(0.5, 1.5))  # reconnect pause


def _error_text(status: int, body: bytes) -> str:
    try:
        return f"{status}: {msgspec.json.decode(body)['error']['message']}"
    except (msgspec.DecodeError, KeyError, TypeError):
        return f"{status}: {body[:200].decode(errors='replace')}"
