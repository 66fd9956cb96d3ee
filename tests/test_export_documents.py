"""The old clients' export (issue 17): `POST /api/{c}/db/export` with only a `filename`,
whose extension chooses the format of the component's run documents.

Expected documents come from a plain-Python model of the events the test posted
(`model_documents`), never from the server's other routes.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pyarrow.parquet as pq
import pytest
from helpers.plain_http import call
from helpers.server import Reply, ThreadedServer, serve_in_thread

ENC = msgspec.json.Encoder()
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
OUTCOMES = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")
TERMINAL = ("completed", "failed", "cancelled")


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def generator_events() -> list[dict[str, Any]]:
    """Runs with every kind of child, overwritten values, and a run with none."""
    g = {"component": "generator"}
    return [
        {**g, "type": "run", "run_id": "g1", "model": "m1", "hardware": "a100", "batch_id": "b1",
         "name": "first", "params": {"prompt": "a cat", "n": [1, 2.5, None]}, "ts": ts(0)},
        {**g, "type": "status", "run_id": "g1", "status": "running", "ts": ts(1)},
        {**g, "type": "step", "run_id": "g1", "step": "load", "status": "running",
         "progress": 0.5, "ts": ts(2)},
        {**g, "type": "step", "run_id": "g1", "step": "load", "status": "completed",
         "progress": 1.0, "message": "ok", "ts": ts(3)},
        {**g, "type": "step", "run_id": "g1", "step": "gen", "status": "failed", "ts": ts(4)},
        {**g, "type": "metric", "run_id": "g1", "name": "loss", "value": 2.5, "unit": "nats",
         "step": 0, "ts": ts(5)},
        {**g, "type": "metric", "run_id": "g1", "name": "loss", "value": 0.5, "unit": "nats",
         "step": 2, "ts": ts(7)},
        {**g, "type": "metric", "run_id": "g1", "name": "loss", "value": 1.5, "unit": "nats",
         "step": 1, "ts": ts(6)},  # late: not the last by time
        {**g, "type": "metric", "run_id": "g1", "name": "acc", "value": 0.75, "ts": ts(6)},
        {**g, "type": "tag", "run_id": "g1", "key": "env", "value": "dev", "ts": ts(2)},
        {**g, "type": "tag", "run_id": "g1", "key": "env", "value": "prod", "ts": ts(3)},
        {**g, "type": "tag", "run_id": "g1", "key": "owner", "value": "é\"q\"", "ts": ts(3)},
        {**g, "type": "result", "run_id": "g1", "test": "t1", "outcome": "failed", "ts": ts(4)},
        {**g, "type": "result", "run_id": "g1", "test": "t1", "outcome": "passed", "ts": ts(5)},
        {**g, "type": "result", "run_id": "g1", "test": "t2", "outcome": "xfailed",
         "duration_s": 0.25, "ts": ts(5)},
        {**g, "type": "result", "run_id": "g1", "test": "t3", "outcome": "passed", "ts": ts(5)},
        {**g, "type": "artifact", "run_id": "g1", "name": "out.wav", "uri": "s3://b/out.wav",
         "size_bytes": 1234, "media_type": "audio/wav", "ts": ts(8)},
        {**g, "type": "artifact", "run_id": "g1", "name": "log.txt", "ts": ts(8)},
        {**g, "type": "artifact", "run_id": "g1", "name": "late.txt",
         "ts": ts(8).replace("Z", ".250000Z")},
        {**g, "type": "step", "run_id": "g1", "step": "post", "status": "running",
         "ts": ts(8).replace("Z", ".000001Z")},
        {**g, "type": "log", "run_id": "g1", "level": "info", "message": "not exported",
         "ts": ts(8)},
        {**g, "type": "status", "run_id": "g1", "status": "completed", "ts": ts(9)},
        {**g, "type": "run", "run_id": "g2", "model": "m2", "ts": ts(3)},
        {**g, "type": "status", "run_id": "g3", "status": "running", "ts": ts(10)},
        {**g, "type": "status", "run_id": "g3", "status": "failed", "error": "OOM", "ts": ts(12)},
        {**g, "type": "metric", "run_id": "g3", "name": "tokens", "value": 7.0, "ts": ts(11)},
        {**g, "type": "run", "run_id": "g3", "model": "m1", "ts": ts(10)},
        {**g, "type": "run", "run_id": "g0", "model": "m1", "ts": ts(3)},  # same created_at as g2
    ]


EVENTS = [*generator_events(),
          {"component": "test", "type": "run", "run_id": "t-only", "model": "x", "ts": ts(1)},
          {"component": "test", "type": "tag", "run_id": "t-only", "key": "k", "value": "v",
           "ts": ts(2)}]


# -- the model: documents computed from the events, in plain Python ---------------------


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(t: datetime | None) -> str | None:
    """RFC 3339 in UTC, microseconds only when not zero."""
    if t is None:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if t.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def latest(rows: list[tuple[datetime, int, dict[str, Any]]]) -> dict[str, Any]:
    return max(rows, key=lambda r: (r[0], r[1]))[2]


def model_documents(events: list[dict[str, Any]], component: str | None) -> list[dict[str, Any]]:
    """Each run's document as docs/compat.md ("Export") defines it; seq = post order."""
    by_run: dict[tuple[str, str], list[tuple[datetime, int, dict[str, Any]]]] = defaultdict(list)
    for seq, e in enumerate(events, 1):
        if component in (None, e["component"]):
            by_run[e["component"], e["run_id"]].append((when(e["ts"]), seq, e))
    docs = []
    for (c, run_id), evs in by_run.items():
        def of(kind: str, evs: Any = evs) -> list[tuple[datetime, int, dict[str, Any]]]:
            return [x for x in evs if x[2]["type"] == kind]

        attrs = {}
        for field in ("model", "hardware", "batch_id", "name", "params"):
            given = [x for x in of("run") if field in x[2]]
            attrs[field] = latest(given)[field] if given else None
        statuses = of("status")
        last = latest(statuses) if statuses else {"status": "pending"}
        created = min(x[0] for x in evs)
        running = [x[0] for x in statuses if x[2]["status"] == "running"]
        started = min(running) if running else None
        finished = when(last["ts"]) if last["status"] in TERMINAL else None
        steps: dict[str, tuple[datetime, int, dict[str, Any]]] = {}
        for x in of("step"):
            if x[2]["step"] not in steps or x[:2] > steps[x[2]["step"]][:2]:
                steps[x[2]["step"]] = x
        tags: dict[str, tuple[datetime, int, dict[str, Any]]] = {}
        for x in of("tag"):
            if x[2]["key"] not in tags or x[:2] > tags[x[2]["key"]][:2]:
                tags[x[2]["key"]] = x
        points: dict[str, list[tuple[datetime, int, dict[str, Any]]]] = defaultdict(list)
        for x in of("metric"):
            points[x[2]["name"]].append(x)
        results: dict[str, tuple[datetime, int, dict[str, Any]]] = {}
        for x in of("result"):
            if x[2]["test"] not in results or x[:2] > results[x[2]["test"]][:2]:
                results[x[2]["test"]] = x
        outcomes = [x[2]["outcome"] for x in results.values()]
        docs.append({
            "component": c, "run_id": run_id, **attrs,
            "status": last["status"], "error": last.get("error"),
            "created_at": iso(created), "started_at": iso(started), "finished_at": iso(finished),
            "duration_s": None if finished is None
            else (finished - (started or created)).total_seconds(),
            "updated_at": iso(max(x[0] for x in evs)),
            "steps": [{"step": e["step"], "status": e["status"], "progress": e.get("progress"),
                       "message": e.get("message"), "ts": iso(when(e["ts"]))}
                      for _, _, e in sorted(steps.values(), key=lambda x: x[:2])],
            "tags": {k: tags[k][2]["value"] for k in sorted(tags)},
            "metrics": [{
                "name": name,
                "unit": min((x[2]["unit"] for x in pts if "unit" in x[2]), default=None),
                "count": len(pts),
                "mean": sum(x[2]["value"] for x in pts) / len(pts),
                "min": min(x[2]["value"] for x in pts), "max": max(x[2]["value"] for x in pts),
                "last": latest(pts)["value"],
            } for name, pts in sorted(points.items())],
            "results": {"total": len(outcomes), **{o: outcomes.count(o) for o in OUTCOMES}},
            "artifacts": [{"name": e["name"], "uri": e.get("uri"),
                           "size_bytes": e.get("size_bytes"), "media_type": e.get("media_type"),
                           "ts": iso(when(e["ts"]))}
                          for _, _, e in sorted(of("artifact"), key=lambda x: x[1])],
        })
    return sorted(docs, key=lambda d: (d["component"], d["created_at"], d["run_id"]))


# -- the server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with serve_in_thread(tmp_path_factory.mktemp("documents")) as server:
        reply = server.run(server.client.request("POST", "/api/events",
                                                 data=io.BytesIO(ENC.encode_lines(EVENTS)),
                                                 content_type="application/x-ndjson"))
        assert reply.status == 202, reply.body
        last = reply.json()["last_seq"]
        assert server.run(server.client.get(f"/api/db/overview?min_seq={last}")).status == 200
        yield server


def post(server: ThreadedServer, path: str, body: Any = None) -> Reply:
    kwargs = {} if body is None else {"json": body}
    return server.run(server.client.request("POST", path, **kwargs))


def disposition(reply: Reply) -> str:
    name = re.fullmatch(r'attachment; filename="([^"]*)"', reply.headers["Content-Disposition"])
    assert name is not None, reply.headers["Content-Disposition"]
    return name[1]


def from_parquet(body: bytes) -> list[dict[str, Any]]:
    """Parquet rows in the JSON documents' terms: times as RFC 3339, params parsed,
    tags (a Parquet map: key/value pairs) as an object."""
    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            assert v.tzinfo is not None, v
            return iso(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    for row in rows:
        row["params"] = None if row["params"] is None else json.loads(row["params"])
        row["tags"] = dict(row["tags"])
    return [plain(r) for r in rows]


# -- the old clients' call --------------------------------------------------------------


def test_json_name_gives_one_json_document_of_the_runs(lake: ThreadedServer) -> None:
    """Exactly what the old Generator API client sent, and what it did with the file."""
    reply = post(lake, "/api/generator/db/export", {"filename": "generator_export.json"})
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert disposition(reply) == "generator_export.json"
    document = json.loads(reply.body)
    assert document == model_documents(EVENTS, "generator")
    assert [d["run_id"] for d in document] == ["g1", "g0", "g2", "g3"]


@pytest.mark.parametrize(("filename", "media", "saved_as"), [
    ("runs.ndjson", "application/x-ndjson", "runs.ndjson"),
    ("runs.JSONL", "application/x-ndjson", "runs.jsonl"),
    ("../../tmp/runs.parquet", "application/vnd.apache.parquet", "runs.parquet"),
])
def test_extension_chooses_the_format(lake: ThreadedServer, filename: str, media: str,
                                      saved_as: str) -> None:
    reply = post(lake, "/api/generator/db/export", {"filename": filename})
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == media
    assert disposition(reply) == saved_as
    if media == "application/x-ndjson":
        assert reply.body.endswith(b"\n")
        docs = [json.loads(line) for line in reply.body.decode().splitlines()]
    else:
        docs = from_parquet(reply.body)
    assert docs == model_documents(EVENTS, "generator")


def test_gateway_alias_and_every_component_export(lake: ThreadedServer) -> None:
    gateway = post(lake, "/api/db/generator/export", {"filename": "generator_export.json"})
    assert gateway.status == 200, gateway.body
    assert json.loads(gateway.body) == model_documents(EVENTS, "generator")
    everything = lake.run(lake.client.get("/api/db/export?filename=all.json"))
    assert everything.status == 200, everything.body
    assert json.loads(everything.body) == model_documents(EVENTS, None)


def test_explicit_fields_still_work_and_a_contradiction_is_400(lake: ThreadedServer) -> None:
    path = "/api/generator/db/export"
    # No filename: today's events NDJSON, each line a wire event.
    plain = post(lake, path)
    assert plain.status == 200 and plain.headers["Content-Type"] == "application/x-ndjson"
    assert len(plain.body.splitlines()) == len(generator_events())
    # `what` is kept; the extension still picks the format.
    events = post(lake, path, {"what": "events", "filename": "e.json"})
    assert events.status == 200, events.body
    assert len(json.loads(events.body)) == len(generator_events())
    # A format agreeing with the extension; documents asked for without any name.
    agreed = post(lake, path, {"format": "json", "filename": "x.json"})
    assert json.loads(agreed.body) == model_documents(EVENTS, "generator")
    asked = post(lake, path, {"what": "documents", "format": "ndjson"})
    assert re.fullmatch(r"generator-documents-\d{8}T\d{6}Z\.ndjson", disposition(asked))
    assert [json.loads(x) for x in asked.body.splitlines()] == model_documents(EVENTS,
                                                                              "generator")
    # An extension the export does not know names nothing: today's behaviour.
    other = post(lake, path, {"filename": "dump.csv"})
    assert disposition(other) == "dump.ndjson"
    assert len(other.body.splitlines()) == len(generator_events())
    for bad, where in ((post(lake, path, {"format": "ndjson", "filename": "x.json"}), "field"),
                       (lake.run(lake.client.get("/api/db/export?format=parquet&filename=x.jsonl")),
                        "parameter")):
        assert bad.status == 400, bad.body
        error = bad.json()["error"]
        assert error["details"][0][where] == "format", error
        assert "filename" in error["message"], error


@pytest.mark.parametrize("body", [None, {"filename": "generator_export.json"},
                                  {"what": "runs"}])
def test_unknown_component_is_404_naming_the_known_ones(lake: ThreadedServer,
                                                        body: Any) -> None:
    reply = post(lake, "/api/genrator/db/export", body)
    assert reply.status == 404, reply.body
    error = reply.json()["error"]
    assert error["details"][0]["allowed"] == ["generator", "test"]
    assert "generator" in error["message"] and "genrator" in error["message"]


# -- constant memory ------------------------------------------------------------------

RUNS = 50_000
LONG = "x" * 100
NOTES = {f"note{k}": "n" * 1000 for k in range(3)}  # fat documents: see the bound below


def big_events(runs: int) -> Iterator[dict[str, Any]]:
    for i in range(runs):
        base = {"component": "generator", "run_id": f"r{i:06d}", "ts": ts(i / 100)}
        yield {**base, "type": "run", "model": f"m{i % 7}", "params": {"prompt": LONG}}
        yield {**base, "type": "metric", "name": "loss", "value": float(i % 13), "unit": "n"}
        for key, value in NOTES.items():
            yield {**base, "type": "tag", "key": key, "value": value}
        yield {**base, "type": "artifact", "name": "out.wav", "uri": "s3://bucket/" + LONG}


def export_json(url: str) -> bytes:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=120)
    try:
        conn.request("POST", "/api/generator/db/export", body=b'{"filename": "all.json"}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:500]
        return resp.read()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_large_documents_export_keeps_server_memory_flat(start_server_process: Any,
                                                         tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    events = list(big_events(RUNS))
    for n, start in enumerate(range(0, len(events), 100_000)):  # one inbox file per 100 k
        part = data / "inbox" / f"part-{n}.ndjson"
        part.write_bytes(ENC.encode_lines(events[start:start + 100_000]))
    server = start_server_process(data)
    deadline = time.monotonic() + 400  # a guard against hanging, not a measurement
    while (ready := call(server.url, "/readyz", content_type=None)[1])["folded_seq"] \
            < len(events):
        assert time.monotonic() < deadline, ready
        assert not list((data / "inbox" / ".rejected").glob("*.json")), "an inbox file failed"
        time.sleep(0.2)
    # A first export warms DuckDB's block cache (bounded by its memory limit, whatever
    # the export): the second one shows what an export itself holds.
    assert len(export_json(server.url)) > 150 * 2**20
    proc = psutil.Process(server.proc.pid)
    baseline = max(proc.memory_info().rss for _ in range(5))
    peak, done = baseline, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, name="rss-sampler")
    sampler.start()
    try:
        body = export_json(server.url)
    finally:
        done.set()
        sampler.join()
    document = json.loads(body)
    assert len(document) == RUNS
    assert [d["run_id"] for d in document] == [f"r{i:06d}" for i in range(RUNS)]
    assert all(d["tags"] == NOTES and d["metrics"][0]["count"] == 1 for d in document)
    # Streamed, one page of runs at a time: a small fraction of the whole document
    # (which a server building it in memory would hold at least once).
    growth = peak - baseline
    assert growth < len(body) / 3, (f"server RSS grew {growth / 2**20:.0f} MiB exporting "
                                    f"{len(body) / 2**20:.0f} MiB")
    assert server.stop() == 0, server.stderr()[-3000:]
