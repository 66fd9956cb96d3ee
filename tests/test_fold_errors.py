"""A fold statement that fails, in a real server: its own error (not the "transaction
is aborted" of the cleanup after it) reaches the log once, /readyz and /metrics, and
the fold recovers once the cause is gone. The failure is real: a base table of the
server's DuckDB file renamed away under the fold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest

from runlake.api.keys import add_key
from runlake.api.state import AUTH, DATABASE, FOLD, SETTINGS
from tests.helpers.server import Client

MakeServer = Callable[..., Any]


def metric(value: float) -> dict[str, Any]:
    return {"type": "metric", "component": "test", "run_id": "r1", "name": "loss",
            "value": value}


def prometheus(text: str) -> dict[str, float]:
    """The unlabelled samples of a /metrics body."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples


async def rename(client: Client, old: str, new: str) -> None:
    assert client.app is not None
    with closing(client.app[DATABASE].connection.cursor()) as cur:
        cur.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_a_failing_fold_statement_is_reported(
        make_server: MakeServer, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with make_server() as client:
            assert client.app is not None
            fold = client.app[FOLD]
            first = (await client.post_events([metric(1.0)])).json()["last_seq"]
            ready = await client.get(f"/api/test/db/run/r1?min_seq={first}")
            assert ready.status == 200
            await asyncio.to_thread(fold.stop)  # no batch in flight while the table goes
            await rename(client, "metrics", "metrics_away")
            last = (await client.post_events([metric(2.0)])).json()["last_seq"]

            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="runlake.fold"):
                for _ in range(3):  # the loop's retries, one after the other
                    assert not await asyncio.to_thread(fold.attempt)
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not per retry
            assert errors[0].exc_info is not None
            assert "metrics" in str(errors[0].exc_info[1])

            reply = await client.get("/readyz")
            body = reply.json()
            assert (reply.status, body["status"]) == (503, "failing"), body
            assert "metrics" in body["fold_error"] and "does not exist" in body["fold_error"]
            assert "aborted" not in body["fold_error"]
            assert body["folded_seq"] == first and body["lag_events"] == last - first
            # Once keys exist /readyz, open to all, names the error's type only: a
            # DuckDB message may quote events' data.
            _, key = add_key(client.app[SETTINGS].keys_path, role="read", name="ops")
            await asyncio.to_thread(client.app[AUTH].keyring.load)
            keyed = (await client.get("/readyz")).json()
            assert keyed["status"] == "failing"
            assert keyed["fold_error"] == body["fold_error"].partition(":")[0] + \
                " (see the server log)"
            samples = prometheus((await client.request(
                "GET", "/metrics", headers={"X-API-Key": key}, content_type=None)).body.decode())
            assert samples["runlake_fold_errors_total"] == 3
            assert samples["runlake_fold_failing"] == 1

            await rename(client, "metrics_away", "metrics")
            await asyncio.to_thread(fold.start)
            run = await client.request("GET", f"/api/test/db/run/r1/metrics?min_seq={last}",
                                       headers={"X-API-Key": key}, content_type=None)
            assert [p["value"] for p in run.json()["items"]] == [1.0, 2.0]
            body = (await client.get("/readyz")).json()
            assert body["status"] == "ready" and "fold_error" not in body  # only when failing
            samples = prometheus((await client.request(
                "GET", "/metrics", headers={"X-API-Key": key}, content_type=None)).body.decode())
            assert (samples["runlake_fold_errors_total"], samples["runlake_fold_failing"]) == (3, 0)

    asyncio.run(main())
