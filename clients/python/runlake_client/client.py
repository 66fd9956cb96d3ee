"""`Client`: write events through the background sender, read the server's answers."""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from math import isfinite
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from . import models
from .config import Settings, from_env
from .sender import Counts, Sender
from .transport import Transport

if TYPE_CHECKING:
    from .stream import Follow

log = logging.getLogger("runlake_client")
T = TypeVar("T")
MAX_ERROR_CHARS = 16_000  # the status event's `error` holds at most 16 384 characters
# Strong references: a client dropped without close() still flushes (then spools) at
# exit; close() lets it go.
_clients: set[Client] = set()
_now = time.time


class RunlakeError(Exception):
    """A read the server answered with an error (reads raise; writes never do)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        try:
            self.error = msgspec.json.decode(body).get("error", {})
        except (msgspec.DecodeError, AttributeError):
            self.error = {"message": body[:500].decode("utf-8", "replace")}
        super().__init__(f"{status} {self.error.get('code', '')}: {self.error.get('message')}")


def error_text(error: BaseException | str) -> str:
    """`Type: message` and the traceback, bounded to what a status event holds."""
    if isinstance(error, str):
        return error[:MAX_ERROR_CHARS]
    head = f"{type(error).__name__}: {error}"
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return (head + "\n\n" + tb)[:MAX_ERROR_CHARS]


class Client:
    """Reports runs of one component; every write only enqueues.

    `Client(url, api_key=None, component=…)`; the URL and key default to `RUNLAKE_URL`
    and `RUNLAKE_API_KEY`. Settings (`spool_dir`, `exit_flush_s`, …) are keywords.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 component: str = "generator", *, spool_dir: str | os.PathLike[str] | None = None,
                 **settings: Any) -> None:
        self.settings: Settings = from_env(url, api_key, spool_dir, **settings)
        self.component = component
        self._prefix = uuid.uuid4().hex[:16] + "-"
        self._ids = itertools.count()
        self._sender = Sender(self.settings)
        self._put = self._sender.queue.put
        self._closed = False
        self._reader = threading.local()
        self._readers: list[Transport] = []  # every reading thread's, closed by close()
        self._sender.start()
        _clients.add(self)

    # -- writing ----------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Enqueue one event (any type); `component`, `id` and `ts` are filled in."""
        event.setdefault("component", self.component)
        event.setdefault("id", self._prefix + str(next(self._ids)))
        event.setdefault("ts", time.time())
        if self._closed:
            log.warning("runlake-client: event after close() dropped: %s", event.get("type"))
            self._sender.counts.dropped += 1
            return
        self._put(event)

    def run(self, run_id: str | None = None, *, model: str | None = None,
            hardware: str | None = None, batch_id: str | None = None, name: str | None = None,
            params: Mapping[str, Any] | None = None, component: str | None = None) -> Run:
        """`with client.run(...) as run:`: `running` on enter; on exit `completed`,
        `failed` (type, message, traceback) or `cancelled` (KeyboardInterrupt)."""
        run = Run(self, component or self.component, run_id or uuid.uuid4().hex)
        if any(v is not None for v in (model, hardware, batch_id, name, params)):
            run.set(model=model, hardware=hardware, batch_id=batch_id, name=name,
                    params=params)
        return run

    def create_run(self, run_id: str | None = None, **attributes: Any) -> Run:
        """A `pending` run, for code that cannot use `with`: then `start`, `complete`/`fail`."""
        run = self.run(run_id, **attributes)
        run.status("pending")
        return run

    def batch(self, batch_id: str, expected_count: int | None = None,
              description: str | None = None, component: str | None = None) -> Batch:
        event: dict[str, Any] = {"type": "batch", "batch_id": batch_id}
        if expected_count is not None:
            event["expected_count"] = expected_count
        if description is not None:
            event["description"] = description
        if component is not None:
            event["component"] = component
        self.emit(event)
        return Batch(self, batch_id, component or self.component)

    # -- delivery ---------------------------------------------------------------

    @property
    def counts(self) -> Counts:
        return self._sender.counts

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event handed over so far is acknowledged, rejected or in
        the spool (fsynced). False if `timeout` passed first."""
        if self._closed or not self._sender.is_alive():
            return not self._sender.is_alive()
        marker = threading.Event()
        self._put(marker)
        return marker.wait(timeout)

    def close(self, timeout: float | None = None) -> Counts:
        """Send what is queued for at most `timeout` (default `exit_flush_s`) seconds,
        spool the rest, stop the sender. Safe to call twice."""
        if not self._closed:
            self._closed = True
            wait = self.settings.exit_flush_s if timeout is None else timeout
            self._sender.stop(wait)
            self._sender.join(wait + self.settings.timeout_s + 5.0)
            counts = self._sender.counts
            if counts.dropped:
                log.warning("runlake-client: %d events dropped (spool full or after close)",
                            counts.dropped)
            if self._sender.spool.has_pending():
                log.warning("runlake-client: events left in the spool %s; they go with the "
                            "next client start or `runlake-client sync`",
                            self.settings.spool_path())
            for t in self._readers:
                t.close()
            _clients.discard(self)
        return self._sender.counts

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------

    def _get(self, path: str, query: Mapping[str, Any] | None = None, tries: int = 3) -> bytes:
        transport: Transport | None = getattr(self._reader, "transport", None)
        if transport is None:
            transport = Transport(self.settings.url, self.settings.api_key,
                                  self.settings.timeout_s)
            self._reader.transport = transport
            self._readers.append(transport)
        q = {k: v for k, v in (query or {}).items() if v is not None}
        if "min_seq" not in q and self._sender.last_seq:
            q["min_seq"] = self._sender.last_seq  # read this client's own writes
        url = path + ("?" + urllib.parse.urlencode(q, doseq=True) if q else "")
        for attempt in range(tries):
            try:
                resp = transport.request("GET", url)
            except OSError:
                if attempt + 1 == tries:
                    raise
                time.sleep(0.2 * 2 ** attempt)
                continue
            if resp.status == 200:
                return resp.body
            if resp.status not in (429, 503) or attempt + 1 == tries:
                raise RunlakeError(resp.status, resp.body)
            time.sleep(min(resp.retry_after() or 0.5, 10.0))
        raise AssertionError("unreachable")

    def _pages(self, path: str, item: type[T], query: Mapping[str, Any],
               page_size: int) -> Iterator[T]:
        """Every item of a list route: by its `next` token when the server gives one,
        else by offset."""
        query = {**query, "limit": page_size}
        offset, token = 0, None
        while True:
            q = {**query, "next": token} if token else {**query, "offset": offset}
            page = msgspec.json.decode(self._get(path, q), type=models.Page)
            for raw in page.items:
                yield msgspec.json.decode(raw, type=item)
            if page.next:
                token = page.next
                continue
            offset += len(page.items)
            if token is not None or not page.items or (page.total is not None
                                                       and offset >= page.total):
                return

    def runs(self, component: str | None = None, *, page_size: int = 500,
             **filters: Any) -> Iterator[models.Run]:
        """Every run matching the filters (`status`, `model`, `tag=["k:v"]`, `sort`, …)."""
        c = _quote(component or self.component)
        return self._pages(f"/api/{c}/db/runs", models.Run, filters, page_size)

    def get_run(self, run_id: str, component: str | None = None,
                min_seq: int | None = None) -> models.RunDetail:
        c = _quote(component or self.component)
        body = self._get(f"/api/{c}/db/run/{_quote(run_id)}",
                         {"min_seq": min_seq} if min_seq is not None else {})
        return msgspec.json.decode(body, type=models.RunDetail)

    def stats(self, component: str | None = None,
              by: Literal["model", "hardware"] = "model") -> list[models.Stats]:
        if by not in ("model", "hardware"):
            raise ValueError(f"by must be 'model' or 'hardware', not {by!r}")
        c = _quote(component or self.component)
        path = f"/api/{c}/db/{'models' if by == 'model' else 'hardware'}/stats"
        return list(self._pages(path, models.Stats, {}, 1000))

    def performance(self, component: str | None = None, days: int = 30,
                    **filters: Any) -> list[models.PerformanceItem]:
        c = _quote(component or self.component)
        return list(self._pages(f"/api/{c}/db/performance", models.PerformanceItem,
                                {"days": days, **filters}, 1000))

    def overview(self) -> models.Overview:
        """Totals per component and overall."""
        return msgspec.json.decode(self._get("/api/db/overview"), type=models.Overview)

    def search(self, query: str, component: str | None = None,
               limit: int = 100) -> models.SearchResults:
        path = f"/api/{_quote(component)}/db/search" if component else "/api/db/search"
        body = self._get(path, {"query": query, "limit": limit})
        return msgspec.json.decode(body, type=models.SearchResults)

    def facets(self, field: str, component: str | None = None, limit: int = 10,
               **filters: Any) -> models.Facets:
        """Top values of a field (`GET /api/{c}/db/facets`, docs/facets.md)."""
        c = _quote(component or self.component)
        body = self._get(f"/api/{c}/db/facets", {"field": field, "limit": limit, **filters})
        return msgspec.json.decode(body, type=models.Facets)

    def follow(self, after: int | str | None = None, *,
               component: str | Sequence[str] | None = None, run_id: str | None = None,
               type: str | Sequence[str] | None = None, batch_id: str | None = None,
               until: Literal["caught_up"] | None = None,
               idle_timeout_s: float = 60.0) -> Follow:
        """The live stream (`GET /api/stream`, docs/stream.md): events with seq > `after`
        (`"end"` or None: only new ones), in seq order, as `models.StreamEvent`, plus
        `CaughtUp`, `Folded` and `Heartbeat`. Filters: `component` (default: every
        component, not the client's), `run_id`, `type`, `batch_id`. Resumes after any
        disconnect with `Last-Event-ID`: nothing missed, nothing twice. `until="caught_up"`
        stops after the `CaughtUp`. Raises `RunlakeError` only for an answer a retry
        cannot fix (400, 401, 403, ...). `close()` it, or use `with`, to stop."""
        from .stream import follow

        return follow(self.settings, after, component=component, run_id=run_id, type=type,
                      batch_id=batch_id, until=until, idle_timeout_s=idle_timeout_s)


class _Lifecycle:
    """Shared by runs and steps: `with` sends running, then the end status."""

    def __enter__(self: T) -> T:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if error is None:
            self.complete()  # type: ignore[attr-defined]
        elif isinstance(error, KeyboardInterrupt):
            self.cancel()  # type: ignore[attr-defined]
        else:
            self.fail(error)  # type: ignore[attr-defined]


class Run(_Lifecycle):
    """One run; every method only enqueues an event."""

    def __init__(self, client: Client, component: str, run_id: str) -> None:
        self.client, self.component, self.run_id = client, component, run_id
        self._emit = client.emit

    def _event(self, type_: str, **fields: Any) -> None:
        self._emit({"type": type_, "component": self.component, "run_id": self.run_id,
                    **{k: v for k, v in fields.items() if v is not None}})

    def set(self, **attributes: Any) -> None:
        """A `run` event: model, hardware, batch_id, name, params (None: unchanged)."""
        fields = {k: v for k, v in attributes.items() if v is not None}
        if "params" in fields:
            fields["params"] = dict(fields["params"])
        self._event("run", **fields)

    def status(self, status: str, error: str | None = None) -> None:
        self._event("status", status=status, error=error)

    def start(self) -> None:
        self.status("running")

    def complete(self, **attributes: Any) -> None:
        if attributes:
            self.set(**attributes)
        self.status("completed")

    def fail(self, error: BaseException | str) -> None:
        self.status("failed", error_text(error))

    def cancel(self, reason: str | None = None) -> None:
        self.status("cancelled", reason)

    def step(self, name: str) -> Step:
        """`with run.step("train"):` running, then completed or failed."""
        return Step(self, name)

    def metric(self, name: str, value: float, unit: str | None = None,
               step: int | None = None) -> None:
        # The hot path: one dict, no setdefault, straight onto the queue.
        client = self.client
        if not isfinite(value) or client._closed:
            client.counts.rejected += 1
            log.warning("runlake-client: metric %r=%r not sent (not finite, or after close)",
                        name, value)
            return
        event = {"type": "metric", "component": self.component, "run_id": self.run_id,
                 "id": client._prefix + str(next(client._ids)), "ts": _now(),
                 "name": name, "value": value}
        if unit is not None:
            event["unit"] = unit
        if step is not None:
            event["step"] = step
        client._put(event)

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        for name, value in values.items():
            self.metric(name, value, step=step)

    def tag(self, key: str, value: str) -> None:
        self._event("tag", key=key, value=str(value))

    def log(self, message: str, level: str = "info") -> None:
        self._event("log", level=level, message=message)

    def output(self, text: str, stream: Literal["stdout", "stderr"] = "stdout") -> None:
        """A job's output, one `[stdout] `/`[stderr] ` log line per line (docs/compat.md)."""
        level = "info" if stream == "stdout" else "warning"
        for line in text.splitlines():
            self.log(f"[{stream}] {line}", level)

    def artifact(self, name: str, uri: str | None = None, size_bytes: int | None = None,
                 media_type: str | None = None, path: str | os.PathLike[str] | None = None
                 ) -> None:
        """An output; with `path`, its size and `file://` URI are read from the file."""
        if path is not None:
            p = Path(path).resolve()
            uri = uri or p.as_uri()
            if size_bytes is None:
                try:
                    size_bytes = p.stat().st_size
                except OSError:
                    pass
        self._event("artifact", name=name, uri=uri, size_bytes=size_bytes,
                    media_type=media_type)

    def result(self, test: str, outcome: str, duration_s: float | None = None,
               message: str | None = None, **extra: Any) -> None:
        self._event("result", test=test, outcome=outcome, duration_s=duration_s,
                    message=message, **extra)


class Step(_Lifecycle):
    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name

    def _state(self, status: str, **fields: Any) -> None:
        self.run._event("step", step=self.name, status=status, **fields)

    def start(self) -> None:
        self._state("running")

    def progress(self, fraction: float, message: str | None = None) -> None:
        self._state("running", progress=min(max(fraction, 0.0), 1.0), message=message)

    def complete(self) -> None:
        self._state("completed")

    def fail(self, error: BaseException | str) -> None:
        self._state("failed", message=error_text(error))

    def cancel(self) -> None:
        self._state("skipped")


class Batch:
    def __init__(self, client: Client, batch_id: str, component: str) -> None:
        self.client, self.batch_id, self.component = client, batch_id, component

    def run(self, run_id: str | None = None, **attributes: Any) -> Run:
        return self.client.run(run_id, batch_id=self.batch_id, component=self.component,
                               **attributes)


def _quote(part: str | None) -> str:
    return urllib.parse.quote(part or "", safe="")


@atexit.register
def _flush_at_exit() -> None:
    """Bounded by each client's `exit_flush_s`; what is left stays in the spool."""
    for client in list(_clients):
        try:
            client.close()
        except Exception:  # never fail the interpreter's exit
            log.exception("runlake-client: close at exit failed")
