"""Follow `GET /api/stream` (Server-Sent Events, docs/stream.md), resuming after any
disconnect from the last position seen, so nothing is missed and nothing repeated."""

from __future__ import annotations

import http.client
import logging
import random
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

import msgspec

from .client import RunlakeError
from .config import Settings
from .models import CaughtUp, Folded, Heartbeat, StreamEvent, StreamMessage

log = logging.getLogger("runlake_client")

IDLE_TIMEOUT_S = 60.0  # four of the server's 15 s heartbeats: longer is a dead connection
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_event = msgspec.json.Decoder(dict[str, Any])
_controls: dict[str, msgspec.json.Decoder[Any]] = {
    "caught_up": msgspec.json.Decoder(CaughtUp),
    "folded": msgspec.json.Decoder(Folded),
    "heartbeat": msgspec.json.Decoder(Heartbeat),
}


class _Ended(Exception):
    """The server ended the stream and said where to resume (`closed`, `too_slow`)."""


class Follow(Iterator[StreamMessage]):
    """An iterator over the stream's messages: `StreamEvent`s, and `CaughtUp`, `Folded`
    and `Heartbeat`. It reconnects by itself after network errors, 5xx, 429/503 and the
    server's `closed`/`too_slow`; it raises only `RunlakeError` for any other error
    answer (bad filters, a wrong key). `close()` (any thread) ends it."""

    def __init__(self, settings: Settings, after: int | str | None, query: dict[str, Any],
                 until: str | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"runlake URL must be http(s)://host[:port], not {settings.url!r}")
        if after is not None and after != "end" and not (isinstance(after, int)
                                                         and after >= 0):
            raise ValueError(f"after must be a seq (int >= 0), 'end' or None, not {after!r}")
        if until not in (None, "caught_up"):
            raise ValueError(f"until must be None or 'caught_up', not {until!r}")
        self.settings = settings
        self._parts = parts
        self._after = after
        self._query = query
        self._until = until
        self._idle_timeout_s = idle_timeout_s
        self.position: int | None = None  # the last position seen: where a resume starts
        self.reconnects = 0
        self._retry_s: float | None = None  # the server's `retry:`
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._messages = self._run()

    def __iter__(self) -> Follow:
        return self

    def __next__(self) -> StreamMessage:
        return next(self._messages)

    def __enter__(self) -> Follow:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End the iteration: from another thread, a blocked `next()` returns
        (StopIteration) at once; safe to call twice."""
        self._stop.set()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:  # wakes a reader blocked in recv: it sees the end of the stream
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self._messages.close()
        except ValueError:  # running in another thread; it stops on its own
            pass

    # -- the loop ---------------------------------------------------------------

    def _run(self) -> Iterator[StreamMessage]:
        failures = 0
        while not self._stop.is_set():
            connected = False
            try:
                for message in self._connect_once():
                    connected = True
                    yield message
                    if self._until is not None and isinstance(message, CaughtUp):
                        return
                # a stream that ended without a message counts as a failure: back off
                if not self._stop.is_set():
                    log.info("runlake-client: the stream ended at %s; resuming", self.position)
            except _Ended as e:
                connected = True
                log.info("runlake-client: %s; resuming after %s", e, self.position)
            except (OSError, http.client.HTTPException, _RetryLater, msgspec.DecodeError,
                    UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError
                    ) as e:  # a torn or mangled message (an `id:` of "²", a body of the
                # wrong shape): the server's or the network's fault, so resume too
                if self._stop.is_set():
                    return
                log.info("runlake-client: stream interrupted (%s); resuming after %s", e,
                         self.position)
                if isinstance(e, _RetryLater) and e.wait is not None:
                    failures += 1
                    self._pause(e.wait)
                    continue
            finally:
                self._disconnect()
            if self._stop.is_set():
                return
            failures = 0 if connected else failures + 1
            self._pause(self._backoff(failures))
            self.reconnects += 1

    def _backoff(self, failures: int) -> float:
        """The server's `retry:` after a stream that ran; growing, jittered waits
        while it cannot be reached."""
        s = self.settings
        base = self._retry_s if self._retry_s is not None else s.backoff_s
        if failures == 0:
            return base
        cap = min(max(base, s.backoff_s) * 2 ** failures, max(s.max_backoff_s, base))
        return random.uniform(cap / 2, cap)

    def _disconnect(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _connect_once(self) -> Iterator[StreamMessage]:
        query = dict(self._query)
        headers = {"Accept": "text/event-stream", "User-Agent": "runlake-client"}
        if self.settings.api_key:
            headers["X-API-Key"] = self.settings.api_key
        if self.position is not None:
            headers["Last-Event-ID"] = str(self.position)  # wins over `after`
        elif self._after is not None:
            query["after"] = self._after
        parts = self._parts
        cls = (http.client.HTTPSConnection if parts.scheme == "https"
               else http.client.HTTPConnection)
        conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=self._idle_timeout_s)
        with self._lock:
            self._conn = conn
        if self._stop.is_set():
            return
        path = parts.path.rstrip("/") + "/api/stream"
        conn.request("GET", path + "?" + urllib.parse.urlencode(query, doseq=True),
                     headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read()
            if resp.status in RETRY_STATUSES:
                raise _RetryLater(resp.status, _retry_after(resp, self.settings))
            raise RunlakeError(resp.status, body)
        yield from self._read(resp)

    def _read(self, resp: http.client.HTTPResponse) -> Iterator[StreamMessage]:
        kind: str | None = None
        data: list[str] = []
        ident: str | None = None
        for raw in resp:  # SSE framing (WHATWG): fields until a blank line
            line = raw.decode("utf-8").rstrip("\r\n")
            if line:
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    ident = value
                elif name == "retry" and value.isdigit():
                    self._retry_s = int(value) / 1000
                continue
            if data:
                message = self._message(kind, "\n".join(data).encode())
                if ident is not None and ident.isdigit():
                    self.position = int(ident)
                if message is not None:
                    yield message
            kind, data, ident = None, [], None

    def _message(self, kind: str | None, data: bytes) -> StreamMessage | None:
        if kind is None:
            event = _event.decode(data)
            return StreamEvent(seq=event["seq"], type=event["type"],
                               component=event["component"], id=event["id"], event=event,
                               run_id=event.get("run_id"), batch_id=event.get("batch_id"))
        decoder = _controls.get(kind)
        if decoder is not None:
            return decoder.decode(data)  # type: ignore[no-any-return]
        if kind in ("closed", "too_slow"):
            body = msgspec.json.decode(data)
            resume = body.get("resume")
            if isinstance(resume, int):
                self.position = max(self.position or 0, resume)
            raise _Ended(f"the server ended the stream ({kind} {body.get('reason', '')})")
        return None  # a kind this client does not know: a newer server's


class _RetryLater(Exception):
    def __init__(self, status: int, wait: float | None) -> None:
        super().__init__(f"stream answered {status}")
        self.wait = wait


def _retry_after(resp: http.client.HTTPResponse, settings: Settings) -> float | None:
    value = resp.getheader("Retry-After")
    try:
        return min(max(0.0, float(value)), settings.max_retry_after_s) if value else None
    except ValueError:
        return None


def follow(settings: Settings, after: int | str | None = None, *,
           component: str | Sequence[str] | None = None, run_id: str | None = None,
           type: str | Sequence[str] | None = None, batch_id: str | None = None,
           until: str | None = None, idle_timeout_s: float = IDLE_TIMEOUT_S) -> Follow:
    query: dict[str, Any] = {}
    for name, value in (("component", component), ("type", type)):
        if value is not None:
            query[name] = [value] if isinstance(value, str) else list(value)
    for name, single in (("run_id", run_id), ("batch_id", batch_id)):
        if single is not None:
            query[name] = single
    if until is not None:
        query["until"] = until
    return Follow(settings, after, query, until, idle_timeout_s)
