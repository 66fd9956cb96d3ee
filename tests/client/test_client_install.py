"""A fresh venv's install of the client pulls neither duckdb, pyarrow nor aiohttp."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

CLIENT = Path(__file__).parents[2] / "clients" / "python"
HEAVY = {"duckdb", "pyarrow", "aiohttp"}


def test_fresh_venv_install_pulls_only_msgspec(tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=False)  # empty: whatever is resolved is new
    target = tmp_path / "venv" / "bin" / "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target), "install", "--dry-run",
         "--quiet", "--report", "-", str(CLIENT)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(proc.stdout)["install"]}
    assert names == {"runlake-client", "msgspec"}
    assert not names & HEAVY


def test_importing_the_client_and_plugin_loads_no_heavy_module() -> None:
    code = ("import sys, runlake_client, runlake_client.cli, runlake_client.pytest_plugin; "
            f"print(sorted({HEAVY!r} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"
