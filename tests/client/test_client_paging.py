"""`client.runs` follows the lists' `next` token whenever a server gives one: checked
here against a stand-in peer that pages with tokens only and gives no `total`; the
real server's `next` pages are followed in test_client_delivery."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import msgspec
from runlake_client import Client

RUNS = [{"component": "c", "run_id": f"r{i}", "status": "completed",
         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
        for i in range(7)]


class KeysetPeer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    queries: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        type(self).queries.append(query)
        start = int(query.get("next", query.get("offset", ["0"]))[0])
        limit = int(query["limit"][0])
        items = RUNS[start:start + limit]
        after = start + len(items)
        # No `total`, as a keyset page may leave it out.
        body = msgspec.json.encode({"items": items, "limit": limit, "offset": 0,
                                    "next": str(after) if after < len(RUNS) else None})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_runs_follows_next_tokens(tmp_path: Path) -> None:
    peer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeysetPeer)
    thread = threading.Thread(target=peer.serve_forever, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{peer.server_port}", component="c",
                    spool_dir=tmp_path / "spool") as client:
            got = [r.run_id for r in client.runs(page_size=3, status="completed")]
    finally:
        peer.shutdown()
        peer.server_close()
    assert got == [r["run_id"] for r in RUNS]
    assert [q.get("next") for q in KeysetPeer.queries] == [None, ["3"], ["6"]]
    assert all(q["status"] == ["completed"] for q in KeysetPeer.queries)
    assert "offset" not in KeysetPeer.queries[1]
