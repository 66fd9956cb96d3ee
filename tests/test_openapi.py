"""`/api/openapi.json` is a valid OpenAPI 3.1 document that tells the truth: validated
with openapi-spec-validator, and a bounded schemathesis run against a real server
(every operation, every check: no 5xx, responses conform to their schemas, documented
requests accepted, undocumented ones refused)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
from helpers.server import ServerProcess
from openapi_spec_validator import validate

from runlake.api.keys import add_key

CONFIG = Path(__file__).parent / "schemathesis" / "schemathesis.toml"
HOOKS = Path(__file__).parent / "schemathesis" / "hooks.py"  # positive cases send no `next`
SEED = [
    {"type": "batch", "component": "test", "batch_id": "b1", "expected_count": 2},
    {"type": "run", "component": "test", "run_id": "r1", "model": "m1", "hardware": "h1",
     "batch_id": "b1", "params": {"lr": 0.1}},
    {"type": "status", "component": "test", "run_id": "r1", "status": "completed"},
    {"type": "metric", "component": "test", "run_id": "r1", "name": "loss", "value": 0.5,
     "unit": "1", "step": 1},
    {"type": "log", "component": "test", "run_id": "r1", "level": "info", "message": "hi"},
    {"type": "result", "component": "test", "run_id": "r1", "test": "t::a",
     "outcome": "passed", "duration_s": 0.1},
    {"type": "tag", "component": "test", "run_id": "r1", "key": "k", "value": "v"},
    {"type": "artifact", "component": "test", "run_id": "r1", "name": "out.txt"},
]


def request(server: ServerProcess, key: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else msgspec.json.encode(body)
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return msgspec.json.decode(resp.read())


def serve_with_key(tmp_path: Path, start_server_process: Any) -> tuple[ServerProcess, str]:
    data = tmp_path / "data"
    data.mkdir()
    _, key = add_key(data / "keys.json", role="admin", name="schemathesis")
    server = start_server_process(data)
    request(server, key, "POST", "/api/events", SEED)
    return server, key


def test_document_is_valid_openapi(tmp_path: Path, start_server_process: Any) -> None:
    server, key = serve_with_key(tmp_path, start_server_process)
    doc = request(server, key, "GET", "/api/openapi.json")
    validate(doc)  # raises on an invalid document
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            names = [(p["name"], p["in"]) for p in op.get("parameters", [])]
            assert len(names) == len(set(names)), f"duplicate parameter in {method} {path}"
            if method == "get" and path.startswith("/api/") and "export" not in path \
                    and not path.startswith("/api/stream"):  # text/event-stream, WebSocket
                schema = op["responses"]["200"]["content"]["application/json"]["schema"]
                assert schema.get("$ref") or schema.get("type") == "object" and \
                    schema.get("additionalProperties") is not True, f"untyped {path}"
    assert set(doc["components"]["securitySchemes"]) == {"apiKey", "bearer"}
    search = doc["paths"]["/api/db/search"]["post"]
    assert search["requestBody"]["required"] is False
    assert {p["name"] for p in search["parameters"]} >= {"query", "limit"}


# One worker: CPython 3.11.7's ast.parse is not thread-safe (gh-106905, "AST constructor
# recursion depth mismatch"), and hypothesis parses lambdas' source from schemathesis's
# worker threads: two workers made this test fail at random.
@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(tmp_path: Path, start_server_process: Any) -> None:
    server, key = serve_with_key(tmp_path, start_server_process)
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [str(st), "--config-file", str(CONFIG), "run", server.url + "/api/openapi.json",
         "-H", f"X-API-Key: {key}", "--checks", "all", "--workers", "1", "--no-color",
         "--phases", "examples,coverage,fuzzing", "--max-failures", "20",
         "--output-truncate", "true"],
        capture_output=True, text=True, timeout=500, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "Traceback" not in server.stderr()
