"""The client's settings: argument, then `RUNLAKE_*` environment variable, then default."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Settings:
    url: str = DEFAULT_URL
    api_key: str | None = None
    spool_dir: Path | None = None  # None: default_spool_dir(url)
    spool_max_bytes: int = 256 * 1024 * 1024
    batch_size: int = 1000  # events per request (the server takes up to 100 000)
    linger_s: float = 0.2  # how long a partial batch waits for more events
    timeout_s: float = 10.0  # one HTTP request
    max_tries: int = 7  # tries of one batch before it goes to the spool
    backoff_s: float = 0.1  # first backoff; doubles each try, full jitter
    max_backoff_s: float = 10.0
    max_retry_after_s: float = 60.0  # a longer Retry-After is cut to this
    probe_s: float = 5.0  # while offline, how often the spool is retried
    exit_flush_s: float = 10.0  # the flush at interpreter exit waits at most this

    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else default_spool_dir(self.url)


def default_spool_dir(url: str) -> Path:
    """One folder per server under the user's cache, so a sync sends to the right one."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    return base / "runlake" / "spool" / digest


def from_env(url: str | None = None, api_key: str | None = None,
             spool_dir: str | os.PathLike[str] | None = None, **overrides: object) -> Settings:
    env = os.environ
    spool = spool_dir if spool_dir is not None else env.get("RUNLAKE_SPOOL_DIR")
    values: dict[str, object] = {
        "url": (url or env.get("RUNLAKE_URL") or DEFAULT_URL).rstrip("/"),
        "api_key": api_key if api_key is not None else env.get("RUNLAKE_API_KEY") or None,
        "spool_dir": Path(spool) if spool else None,
    }
    for name, var, cast in (("spool_max_bytes", "RUNLAKE_SPOOL_MAX_BYTES", int),
                            ("exit_flush_s", "RUNLAKE_EXIT_FLUSH_S", float)):
        if env.get(var):
            values[name] = cast(env[var])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
