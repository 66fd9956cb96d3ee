"""Every setting, declared once: name, default, help. Resolved as CLI flag, then
`RUNLAKE_<NAME>` environment variable, then default; then passed down explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

# When the dashboard's sign-in cookies carry `Secure` (docs/security.md "Dashboard").
CookieSecure = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str

    @property
    def env(self) -> str:
        return f"RUNLAKE_{self.name.upper()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("data", "./data", "data folder: log/, runlake.duckdb, inbox/, keys"),
    Setting("host", "127.0.0.1", "address to bind; non-loopback needs API keys"),
    Setting("port", 8080, "TCP port to listen on (0 picks a free one)"),
    Setting("max_body_bytes", 64 * 1024 * 1024, "largest request body accepted (413 above)"),
    Setting("max_events", 100_000, "most events in one request or inbox file line set"),
    Setting("roll_rows", 250_000, "roll the write-ahead tail into a segment at this many events"),
    Setting("roll_seconds", 60.0, "... or when its oldest event is this old"),
    Setting("fold_batch_rows", 200_000, "most events the fold applies in one transaction"),
    Setting("replay_memory", "2GB", "DuckDB memory cap of `runlake replay` (offline); a "
            "server's own replays stay within its 512MB"),
    Setting("read_wait_s", 5.0, "longest a read with min_seq waits for the fold"),
    Setting("read_budget_s", 5.0, "longest one read may run in DuckDB; past it the query is "
            "stopped and the client gets 422 query_timeout"),
    Setting("read_timeout_s", 30.0, "longest a client may take to send its headers, and "
            "then its body (408 above); idle keep-alive connections close after it too"),
    Setting("max_concurrent_requests", 256, "most requests in flight (503 above)"),
    Setting("max_requests_per_client", 0, "most requests in flight from one client, by "
            "its API key, else its address (429 above); 0: half of max_concurrent_requests"),
    Setting("inbox", True, "watch <data>/inbox for event files"),
    Setting("inbox_delete", False, "delete ingested inbox files instead of moving to .done/"),
    Setting("log_level", "info", "logging level: debug, info, warning, error"),
    Setting("jobs_component", "jobs", "the component whose runs the job runner's routes "
            "(/api/jobs, /api/stats) answer as jobs"),
    Setting("facet_budget_s", 0.5, "time a facet counts runs for; past it the answer "
            "covers the runs counted so far and says truncated"),
    Setting("flaky_window", 30, "a test's last N results whose pass/fail transitions give "
            "its flakiness score, 2-100 (docs/tests.md)"),
    Setting("max_streams", 1000, "most live streams (/api/stream, /api/stream/ws) open at "
            "once (503 above)"),
    Setting("stream_queue", 10_000, "most messages queued for one stream client; a client "
            "further behind gets too_slow and is closed"),
    Setting("stream_heartbeat_s", 15.0, "seconds between heartbeat messages on an idle stream"),
    Setting("stream_share", 0.1, "while ingest requests are in flight, the most of the "
            "server's time live streams' fan-out may take (0-1); the rest waits"),
    Setting("stream_retry_ms", 3000, "the SSE retry: a stream client waits about this long "
            "(jittered) before reconnecting"),
    Setting("cookie_secure", "auto", "the sign-in cookies' Secure flag: auto (when the "
            "request came over TLS to this server), always (behind a TLS-terminating "
            "proxy), never"),
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * 1024 * 1024
    max_events: int = 100_000
    roll_rows: int = 250_000
    roll_seconds: float = 60.0
    fold_batch_rows: int = 200_000
    replay_memory: str = "2GB"
    read_wait_s: float = 5.0
    read_budget_s: float = 5.0
    read_timeout_s: float = 30.0
    max_concurrent_requests: int = 256
    max_requests_per_client: int = 0
    inbox: bool = True
    inbox_delete: bool = False
    log_level: str = "info"
    jobs_component: str = "jobs"
    facet_budget_s: float = 0.5
    flaky_window: Annotated[int, msgspec.Meta(ge=2, le=100)] = 30
    max_streams: int = 1000
    stream_queue: int = 10_000
    stream_heartbeat_s: float = 15.0
    stream_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    stream_retry_ms: int = 3000
    cookie_secure: CookieSecure = "auto"

    @property
    def log_dir(self) -> Path:
        return self.data / "log"

    @property
    def db_path(self) -> Path:
        return self.data / "runlake.duckdb"

    @property
    def inbox_dir(self) -> Path:
        return self.data / "inbox"

    @property
    def keys_path(self) -> Path:
        return self.data / "keys.json"


LOG_LEVELS = ("debug", "info", "warning", "error")


class BadSetting(ValueError):
    """A setting's value that its type refuses, named with where it came from."""


def resolve(cli: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from CLI values (None = not given), then the environment, then defaults.
    A value of the wrong type or out of range raises BadSetting naming the setting."""
    cli = cli or {}
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    for s in SETTINGS:
        if cli.get(s.name) is not None:
            raw[s.name] = cli[s.name]
        elif s.env in env:
            raw[s.name] = env[s.env]
    if "data" in raw:
        raw["data"] = str(raw["data"])
    # strict=False lets "8080" and "true" from the environment become int and bool.
    try:
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_path)
    except msgspec.ValidationError as e:
        # Convert alone to find the setting at fault: msgspec's path is `$.name`.
        for s in SETTINGS:
            if s.name in raw:
                try:
                    msgspec.convert({s.name: raw[s.name]}, Settings, strict=False,
                                    dec_hook=_path)
                except msgspec.ValidationError as one:
                    raise BadSetting(_where(s, cli, env) + f": {one}".split(" - at ")[0]) from e
        raise BadSetting(str(e)) from e
    if settings.log_level.lower() not in LOG_LEVELS:
        log_level = next(s for s in SETTINGS if s.name == "log_level")
        raise BadSetting(f"{_where(log_level, cli, env)}: expected one of {', '.join(LOG_LEVELS)}, "
                         f"got {settings.log_level!r}")
    return settings


def _where(s: Setting, cli: dict[str, Any], env: dict[str, str]) -> str:
    """The flag or environment variable a value came from, as the user wrote it."""
    if cli.get(s.name) is not None:
        return f"--{s.name.replace('_', '-')} {cli[s.name]!r}"
    return f"{s.env}={env[s.env]!r}" if s.env in env else s.env


def _path(type_: type, value: Any) -> Any:
    if type_ is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


assert {s.name for s in SETTINGS} == set(Settings.__struct_fields__), "declare each setting once"
