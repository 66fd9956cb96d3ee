"""The background sender: batches queued events, retries, and spools what it cannot send.

Callers only put events on a `SimpleQueue` (no I/O, no lock on their thread). This
thread takes up to `batch_size` events or whatever arrived within `linger_s`, POSTs
them as one JSON array, and settles the batch: acknowledged (202), rejected (a 4xx
for bad events: counted and logged once, the good events of the batch still sent),
or, after `max_tries` retries of connection errors, 408, 429 and 5xx, written to the
spool. While anything is spooled, new batches go to the spool too (order is kept)
and the spool is retried every `probe_s`. No exception leaves this thread.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .config import Settings
from .spool import Spool
from .transport import Transport

log = logging.getLogger("runlake_client")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[dict[str, Any]]).decode

class Ack(msgspec.Struct):
    last_seq: int | None = None


_decode_ack = msgspec.json.Decoder(Ack).decode
ACKED, REJECTED, FAILED = "acked", "rejected", "failed"
RETRY_STATUSES = frozenset({408, 429})
JSON = {"Content-Type": "application/json"}


@dataclass
class Counts:
    """What became of the events handed over (read them after `flush`/`close`)."""

    sent: int = 0  # acknowledged by the server
    rejected: int = 0  # refused as bad events (logged), never retried
    spooled: int = 0  # written to the spool (sent later, by this or another process)
    dropped: int = 0  # the spool was full
    retries: int = 0
    errors: list[str] = field(default_factory=list)  # first message of each kind


class Stop:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline


class Sender(threading.Thread):
    def __init__(self, settings: Settings) -> None:
        super().__init__(name="runlake-client-sender", daemon=True)
        self.settings = settings
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.counts = Counts()
        self.spool = Spool(settings.spool_path(), settings.spool_max_bytes)
        self._transport = Transport(settings.url, settings.api_key, settings.timeout_s)
        self._deadline: float | None = None  # while stopping: give up waiting then
        self._next_probe = 0.0  # monotonic time of the next spool drain
        self._probe_backoff = settings.probe_s
        self._rng = random.Random()
        self._logged: set[str] = set()
        self.last_seq = 0  # the highest `seq` acknowledged: reads wait for the fold to pass it
        self._wake = threading.Event()  # ends a backoff sleep when close() is called

    def stop(self, timeout: float) -> None:
        """Send what is queued for at most `timeout` seconds, spool the rest, end."""
        deadline = time.monotonic() + timeout
        self._deadline = deadline
        self.queue.put(Stop(deadline))
        self._wake.set()

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        try:
            self._drain_spool()  # what earlier processes left behind, first
        except Exception as e:  # never let the thread die
            self._note("drain", f"spool drain failed: {e!r}")
        stop: Stop | None = None
        while stop is None:
            batch: list[dict[str, Any]] = []
            markers: list[threading.Event] = []
            try:
                batch, markers, stop = self._collect()
                if stop is not None:
                    self._deadline = stop.deadline
                if batch:
                    self._deliver(batch)
                elif self._spool_waiting() and time.monotonic() >= self._next_probe:
                    self._drain_spool()
                if stop is not None and self._spool_waiting():
                    self._drain_spool(force=True)
            except Exception as e:  # a bug here must not lose the batch
                self._note("bug", f"sender error: {e!r}")
                try:
                    self._to_spool(batch)
                except Exception as e2:
                    self.counts.dropped += len(batch)
                    self._note("bug-spool", f"sender error while spooling: {e2!r}")
            finally:
                for m in markers:
                    m.set()
        self._transport.close()
        self.spool.close()

    def _spool_waiting(self) -> bool:
        return self.spool.has_pending() or self.spool.others_pending()

    def _collect(self) -> tuple[list[dict[str, Any]], list[threading.Event], Stop | None]:
        """Up to batch_size events; a flush marker or stop ends the linger at once."""
        batch: list[dict[str, Any]] = []
        markers: list[threading.Event] = []
        timeout = None
        if self._spool_waiting():
            timeout = max(0.0, self._next_probe - time.monotonic())
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return batch, markers, None
        linger_end = time.monotonic() + self.settings.linger_s
        while True:
            if isinstance(item, dict):
                batch.append(item)
                if len(batch) >= self.settings.batch_size:
                    return batch, markers, None
            elif isinstance(item, Stop):
                return batch + self._drain_queue(markers), markers, item
            else:
                markers.append(item)
                return batch + self._drain_queue(markers, self.settings.batch_size
                                                 - len(batch)), markers, None
            left = linger_end - time.monotonic()
            try:
                item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                return batch, markers, None

    def _drain_queue(self, markers: list[threading.Event],
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Whatever is queued right now (a stop takes it all; sent in batch_size pieces)."""
        got: list[dict[str, Any]] = []
        while limit is None or len(got) < limit:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, dict):
                got.append(item)
            elif isinstance(item, threading.Event):
                markers.append(item)
        return got

    # -- delivery ---------------------------------------------------------------

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        size = self.settings.batch_size
        for i in range(0, len(batch), size):
            part = batch[i:i + size]
            if self.spool.has_pending():
                self._to_spool(part)  # keep order behind what is already spooled
                if time.monotonic() >= self._next_probe or self._deadline is not None:
                    self._drain_spool()
                continue
            if self._send(part, tries=self.settings.max_tries) == FAILED:
                self._to_spool(part)
                self._schedule_probe()

    def _encodable(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events JSON can hold; one that cannot (a Path, a numpy scalar in params)
        is counted as rejected and logged once, and never stops the others."""
        try:
            _encode(events)  # the usual case: all of them, one call
            return events
        except (TypeError, ValueError, OverflowError):
            pass
        good = []
        for event in events:
            try:
                _encode(event)
                good.append(event)
            except (TypeError, ValueError, OverflowError) as e:
                self.counts.rejected += 1
                self._note("encode", f"event not sent: a value JSON cannot hold ({e}); "
                           "pass str, int, float, bool, None, lists and dicts of them")
        return good

    def _to_spool(self, events: list[dict[str, Any]]) -> None:
        events = self._encodable(events)
        if not events:
            return
        try:
            ok = self.spool.append(_encode(events))
        except OSError as e:
            self._note("spool-io", f"cannot write the spool: {e!r}")
            ok = False
        if ok:
            self.counts.spooled += len(events)
        else:
            self.counts.dropped += len(events)
            self._note("full", f"spool full ({self.settings.spool_max_bytes} bytes) or "
                       "unwritable: events dropped; the job goes on")

    def _schedule_probe(self) -> None:
        self._next_probe = time.monotonic() + self._probe_backoff
        self._probe_backoff = min(self._probe_backoff * 2, 60.0)

    def _drain_spool(self, force: bool = False) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline and not force:
            return
        if self.spool.drain(self._send_spooled):
            # a live writer's file it had to skip may still be there: look again later
            self._probe_backoff = self.settings.probe_s
            self._next_probe = time.monotonic() + self._probe_backoff
        else:
            self._schedule_probe()

    def _send_spooled(self, payload: bytes) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        result = self._send(_decode(payload), tries=1, body=payload)
        if result == FAILED:
            return False
        return True

    def _send(self, events: list[dict[str, Any]], tries: int, body: bytes | None = None) -> str:
        """POST one batch with retries; on a 4xx for bad events, split to send the rest."""
        if body is None:
            events = self._encodable(events)
            if not events:
                return REJECTED
            body = _encode(events)
        for attempt in range(tries):
            try:
                resp = self._transport.request("POST", "/api/events", body, JSON)
            except Exception as e:  # any network failure retries
                status, wait, why = None, None, f"{type(e).__name__}: {e}"
            else:
                status, wait, why = resp.status, resp.retry_after(), resp.body[:500].decode(
                    "utf-8", "replace")
            if status is not None and 200 <= status < 300:
                self.counts.sent += len(events)
                self._acked(resp.body)
                return ACKED
            if status in (400, 413, 422):
                return self._split(events, status, why, tries)
            if status in (401, 403):
                self._note(f"auth{status}", f"server refused the key ({status}): events "
                           f"are spooled until `runlake-client sync` with a valid key: {why}")
                return FAILED
            if status is not None and status < 500 and status not in RETRY_STATUSES:
                # A redirect, 404, 405, 409...: the URL or a proxy is wrong, not the
                # events. Keep them (spooled) until a server takes them.
                self._note(f"status{status}", f"server answered {status}: events are "
                           f"spooled until it takes them (check RUNLAKE_URL): {why}")
                return FAILED
            if attempt + 1 < tries and not self._sleep(self._backoff(attempt, wait)):
                break
            if attempt + 1 < tries:
                self.counts.retries += 1
            self._note("net", f"server unreachable or busy, retrying: {why}", level=logging.INFO)
        return FAILED

    def _acked(self, body: bytes) -> None:
        try:
            seq = _decode_ack(body).last_seq
        except msgspec.DecodeError:
            return
        if seq is not None and seq > self.last_seq:
            self.last_seq = seq

    def _split(self, events: list[dict[str, Any]], status: int, why: str, tries: int) -> str:
        if len(events) == 1:
            self.counts.rejected += 1
            self._note(f"bad{status}", f"event rejected ({status}), not retried: {why}")
            return REJECTED
        half = len(events) // 2
        results = [self._send(part, tries) for part in (events[:half], events[half:])]
        if FAILED in results:
            # the acknowledged half goes again with the rest: the fold drops it by id
            return FAILED
        return ACKED

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.max_retry_after_s)
        cap = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** attempt)
        return self._rng.uniform(cap / 2, cap)  # jitter: clients do not come back together

    def _sleep(self, seconds: float) -> bool:
        """Sleep, or return False if that would pass the stop deadline."""
        end = time.monotonic() + seconds
        while True:
            if self._deadline is not None and end > self._deadline:
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self._wake.wait(left):
                self._wake.clear()

    def _note(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        """Log each kind of problem once, and keep it for the exit report."""
        if kind in self._logged:
            return
        self._logged.add(kind)
        self.counts.errors.append(message)
        log.log(level, "runlake-client: %s", message)

    def drain_once(self, timeout: float) -> None:
        """For `runlake-client sync`: drain the folder on the caller's thread, no loop."""
        self._deadline = time.monotonic() + timeout
        try:
            self.spool.drain(self._send_spooled_retrying)
        finally:
            self._transport.close()

    def _send_spooled_retrying(self, payload: bytes) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        return self._send(_decode(payload), tries=self.settings.max_tries,
                          body=payload) != FAILED
