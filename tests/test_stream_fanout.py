"""Fan-out by filter class (docs/stream.md, "How it works"): the pump filters each
stretch once per distinct filter and followers of the same filter share the result.
Live followers of several filter classes, side by side on one server, each get exactly
their own matching events; a chunk's selections are shared, and a cut at a join
position neither uses nor spoils the shared one."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from helpers.server import make_server
from test_stream import (
    KINDS,
    _events,
    event_seqs,
    post,
    read_until,
    run,
    stream,
)

from runlake.api.broadcast import StreamFilter, encode_range

# (query, the same filter in plain Python); the first two pairs repeat a filter class.
CLASSES = [
    ("", lambda e: True),
    ("", lambda e: True),
    ("&component=alpha", lambda e: e["component"] == "alpha"),
    ("&component=alpha", lambda e: e["component"] == "alpha"),
    ("&component=beta&type=status", lambda e: e["component"] == "beta"
     and e["type"] == "status"),
    ("&type=batch&type=run", lambda e: e["type"] in ("batch", "run")),
    ("&batch_id=b1", lambda e: e.get("batch_id") == "b1"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_live_followers_of_several_filters_get_only_their_events(tmp_path: Path,
                                                                  kind: str) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client, contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(stream(client, kind, f"?after=end{q}"))
                       for q, _ in CLASSES]
            for messages in streams:
                await read_until(messages, lambda m: m.kind == "caught_up")
            events = _events()
            seqs: list[int] = []
            for part in (events[:25], events[25:]):  # one stretch or two, as the pump reads
                seqs += await post(client, part)
            for (query, keep), messages in zip(CLASSES, streams, strict=True):
                want = [s for s, e in zip(seqs, events, strict=True) if keep(e)]
                got = await read_until(messages, lambda m, last=want[-1]: m.kind == "event"
                                       and m.seq == last)
                assert event_seqs(got) == want, query
    run(main())


def test_a_chunk_filters_once_per_filter_class(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_server(tmp_path) as client:
            events = _events()
            seqs = await post(client, events)
            log = client.event_log
            chunk = await asyncio.to_thread(encode_range, log, seqs[0], seqs[-1])
            alpha = StreamFilter(components=frozenset({"alpha"}))
            mid = seqs[len(seqs) // 2]
            # A cut at a join position is its own chunk and leaves the shared one alone.
            cut = chunk.select(StreamFilter(components=frozenset({"alpha"})), mid)
            assert cut.table.column("seq").to_pylist() == [
                s for s, e in zip(seqs, events, strict=True)
                if e["component"] == "alpha" and s > mid]
            shown = chunk.select(alpha)
            assert chunk.select(StreamFilter(components=frozenset({"alpha"}))) is shown
            assert shown.table.column("seq").to_pylist() == [
                s for s, e in zip(seqs, events, strict=True) if e["component"] == "alpha"]
            assert shown.sse() is chunk.select(alpha).sse()  # built once, then shared
            assert chunk.select(StreamFilter()) is chunk  # unfiltered: the chunk itself
            assert chunk.ws() is chunk.ws()
            beta = chunk.select(StreamFilter(components=frozenset({"beta"})))
            assert beta is not shown and beta.table.column("seq").to_pylist() == [
                s for s, e in zip(seqs, events, strict=True) if e["component"] == "beta"]
    run(main())


def test_a_catch_up_encodes_only_what_its_stream_shows(tmp_path: Path) -> None:
    """encode_range with a stream's filter filters the log's rows before encoding, so a
    client replaying the log for one run does not encode (holding the GIL) all of it;
    the messages are those of the unfiltered chunk, byte for byte."""
    async def main() -> None:
        async with make_server(tmp_path) as client:
            events = _events()
            seqs = await post(client, events)
            log = client.event_log
            beta = StreamFilter(components=frozenset({"beta"}), types=frozenset({"status"}))
            whole = await asyncio.to_thread(encode_range, log, seqs[0], seqs[-1])
            only = await asyncio.to_thread(encode_range, log, seqs[0], seqs[-1], beta)
            want = [s for s, e in zip(seqs, events, strict=True)
                    if e["component"] == "beta" and e["type"] == "status"]
            assert 0 < len(want) < len(seqs)
            assert only.table.num_rows == len(want)  # encoded: those rows, no others
            assert only.table.column("seq").to_pylist() == want
            assert only.sse() == whole.select(beta).sse()
    run(main())
