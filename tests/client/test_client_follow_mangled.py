"""`client.follow` never raises into user code for a mangled stream (the contract of
docs/client.md): a stand-in SSE peer answers the first connection with messages the
server never writes (an `id:` of Unicode digits, a `closed` body that is not an
object, an event without `seq`), then a good stream; the follower resumes and yields
the good event and `caught_up`."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from runlake_client import Client
from runlake_client.models import CaughtUp, StreamEvent

MANGLED = [
    b"id: \xc2\xb2\ndata: {}\n\n",  # "²": str.isdigit() says yes, int() says no
    b"event: closed\ndata: [1]\n\n",  # a body that is not an object
    b'data: {"type": "metric"}\n\n',  # an event without its seq
]
GOOD = (b'id: 1\ndata: {"seq": 1, "type": "run", "component": "c", "run_id": "r", '
        b'"id": "@1", "ts": "2026-01-01T00:00:00Z", '
        b'"received_at": "2026-01-01T00:00:00Z"}\n\n'
        b'event: caught_up\nid: 1\ndata: {"seq": 1}\n\n')


class Peer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: list[bytes] = []

    def do_GET(self) -> None:
        body = type(self).bodies.pop(0) if type(self).bodies else GOOD
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mangled", MANGLED, ids=["unicode-id", "closed-list", "no-seq"])
def test_a_mangled_message_is_resumed_not_raised(peer: str, mangled: bytes,
                                                 tmp_path: Any) -> None:
    Peer.bodies = [mangled]
    with Client(peer, component="c", spool_dir=tmp_path) as client, \
            client.follow(after=0, until="caught_up") as stream:
        got = list(stream)
    assert [type(m) for m in got] == [StreamEvent, CaughtUp]
    assert got[0].seq == 1 and Peer.bodies == []  # the mangled answer was served
