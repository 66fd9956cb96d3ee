"""API keys (DESIGN §6): the key store, `runlake keys add|list|revoke`, and a running
server picking up changes without a restart."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.plain_http import http_status
from helpers.server import ServerProcess, ThreadedServer, run_server, serve_in_thread

from runlake.api.keys import (
    KEY_PREFIX,
    KeyRing,
    KeyStoreError,
    add_key,
    hash_key,
    load_keys,
    revoke_key,
)

WAIT_S = 15.0  # the server checks the file every second; this bounds a wait, it times nothing


def runlake(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNLAKE_")}
    return subprocess.run([sys.executable, "-m", "runlake", *args], capture_output=True,
                          text=True, timeout=60, env=clean)


def keys_cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return runlake("keys", *args, "--data", str(data))


# -- the store ------------------------------------------------------------------------


def test_only_hashes_are_stored_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys.json"
    key, secret = add_key(path, "ingest", ["beta", "alpha", "beta"], name="ci")
    assert secret.startswith(KEY_PREFIX) and len(secret) >= len(KEY_PREFIX) + 43
    assert (key.name, key.role, key.components) == ("ci", "ingest", ("alpha", "beta"))
    text = path.read_text()
    assert secret not in text and secret[len(KEY_PREFIX):] not in text
    assert json.loads(text)["keys"][0]["sha256"] == hash_key(secret)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keys(path) == [key]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []

    _, second = add_key(path, "read")
    assert second != secret
    names = [k.name for k in load_keys(path)]
    assert names[0] == "ci" and names[1].startswith("read-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_store_refuses_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    add_key(path, "admin", name="ops")
    before = path.read_bytes()
    for kwargs, words in (
        ({"role": "root"}, "role"),
        ({"role": "read", "components": ["Not A Slug"]}, "slug"),
        ({"role": "read", "name": "ops"}, "exists"),
        ({"role": "read", "name": "has space"}, "name"),
    ):
        with pytest.raises(KeyStoreError, match=words):
            add_key(path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError, match="no key named 'nope'"):
        revoke_key(path, "nope")
    assert path.read_bytes() == before


def test_revoked_key_is_gone_and_an_invalid_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, keep = add_key(path, "read", name="keep")
    _, drop = add_key(path, "read", name="drop")
    assert revoke_key(path, "drop").name == "drop"
    ring = KeyRing(path)
    ring.load()
    assert ring.find(keep) is not None and ring.find(keep).name == "keep"  # type: ignore[union-attr]
    assert ring.find(drop) is None
    assert ring.find(keep + "x") is None and ring.find("") is None

    path.write_text('{"version": 1, "keys": [{"name": "x"}]}')
    with pytest.raises(KeyStoreError, match="not valid"):
        load_keys(path)


# -- the CLI --------------------------------------------------------------------------


def test_cli_add_list_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = keys_cli(data, "add", "--role", "ingest", "--component", "test",
                    "--component", "gen", "--name", "ci")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert done.stdout == secret + "\n" and secret.startswith(KEY_PREFIX)  # the key alone
    assert "cannot be shown again" in done.stderr and secret not in done.stderr
    admin = keys_cli(data, "add", "--role", "admin")
    assert admin.returncode == 0, admin.stderr

    listed = keys_cli(data, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "COMPONENTS", "CREATED"]
    assert lines[1].split()[:3] == ["ci", "ingest", "gen,test"]
    assert lines[2].split()[1:3] == ["admin", "*"]
    stored = json.loads((data / "keys.json").read_text())["keys"]
    for text in (listed.stdout, listed.stderr):
        assert secret not in text and admin.stdout.strip() not in text
        assert all(k["sha256"] not in text for k in stored)

    revoked = keys_cli(data, "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert [line.split()[0] for line in keys_cli(data, "list").stdout.splitlines()[1:]] == [
        lines[2].split()[0]]
    again = keys_cli(data, "revoke", "ci")
    assert again.returncode == 2 and "no key named 'ci'" in again.stderr
    assert "Traceback" not in again.stderr


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (("add", "--role", "root"), ("add",),
                 ("add", "--role", "read", "--component", "Bad Slug")):
        done = keys_cli(data, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (data / "keys.json").exists()
    empty = keys_cli(data, "list")
    assert empty.returncode == 0 and empty.stdout == "" and "no API keys" in empty.stderr


# -- a running server -----------------------------------------------------------------


def status_of(server: ThreadedServer, key: str | None, path: str = "/api/db/overview") -> int:
    headers = {"X-API-Key": key} if key else None
    reply = server.run(server.client.request("GET", path, headers=headers, content_type=None))
    return reply.status


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.1)


def test_running_server_picks_up_added_and_revoked_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_in_thread(tmp_path) as server:
        assert status_of(server, None) == 200  # no keys, loopback: auth is off

        added = keys_cli(data, "add", "--role", "read", "--name", "reader")
        assert added.returncode == 0, added.stderr
        reader = added.stdout.strip()
        wait_until(lambda: status_of(server, None) == 401, "the new key turns auth on")
        assert status_of(server, reader) == 200
        assert status_of(server, "rl_not-a-key") == 401

        admin = keys_cli(data, "add", "--role", "admin", "--name", "ops").stdout.strip()
        wait_until(lambda: status_of(server, admin) == 200, "the second key is accepted")
        assert keys_cli(data, "revoke", "reader").returncode == 0
        wait_until(lambda: status_of(server, reader) == 401, "the revoked key is refused")
        assert status_of(server, admin) == 200
        assert status_of(server, None) == 401

        assert keys_cli(data, "revoke", "ops").returncode == 0
        # No keys left on a loopback bind: auth is off again, as at start-up.
        wait_until(lambda: status_of(server, None) == 200, "auth off with no keys")


def test_invalid_keys_file_keeps_the_last_good_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data" / "keys.json"
    _, secret = add_key(path, "read")
    with caplog.at_level("ERROR", logger="runlake.auth"), serve_in_thread(tmp_path) as server:
        assert status_of(server, secret) == 200
        path.write_text("{ not json")
        # The server looks at the file when requests come, at most once a second.
        wait_until(lambda: status_of(server, secret) == 200 and "keeping the 1 keys" in caplog.text,
                   "the bad file is noticed")
        assert status_of(server, None) == 401


def test_invalid_keys_file_stops_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keys.json").write_text("[]")
    done = run_server(data, inbox=False)
    assert done.returncode == 2, done.stderr
    assert "keys.json" in done.stderr and "not valid" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (data / "log").exists()


@pytest.mark.slow
def test_non_loopback_server_stays_closed_when_every_key_is_revoked(
    tmp_path: Path, start_server_process: Callable[..., ServerProcess]
) -> None:
    data = tmp_path / "data"
    secret = keys_cli(data, "add", "--role", "read", "--name", "only").stdout.strip()
    server = start_server_process(data, host="0.0.0.0", inbox=False)
    url = f"http://127.0.0.1:{server.url.rsplit(':', 1)[1]}/api/db/overview"
    assert http_status(url, {"X-API-Key": secret}) == 200
    assert keys_cli(data, "revoke", "only").returncode == 0
    deadline = time.monotonic() + WAIT_S
    while http_status(url, {"X-API-Key": secret}) != 401:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.1)
    assert http_status(url) == 401  # not open: this bind always needs a key
    assert server.stop() == 0
