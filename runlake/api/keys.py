"""API keys on disk (DESIGN §6): `<data>/keys.json` keeps each key's SHA-256, never the key.

A key is `rl_` + 32 random bytes (`secrets.token_urlsafe`). A slow KDF (bcrypt,
scrypt) protects low-entropy passwords from guessing; nobody guesses 256 random
bits, so a plain SHA-256 is as safe here and costs a microsecond per request.

The file is rewritten whole (temp file, fsync, rename), mode 0600, under a lock
so two `runlake keys` commands cannot lose each other's change. Revoking a key
removes its entry: a revoked key is then unknown (401) like any other.
`KeyRing` is the server's copy; it notices a changed file within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import msgspec

from runlake.api.params import SLUG
from runlake.errors import RunlakeError

log = logging.getLogger("runlake.auth")

KeyRole = Literal["ingest", "read", "admin"]
ROLES: tuple[str, ...] = get_args(KeyRole)
KEY_PREFIX = "rl_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FILE_VERSION = 1
CHECK_EVERY_S = 1.0  # how often a running server stats the file for changes


class KeyStoreError(RunlakeError):
    """The keys file is unreadable or invalid, or a `keys` command cannot be done."""

    status = 500
    code = "key_store_error"


class ApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One key as stored: who it is (`name`), what it may do, and its hash."""

    name: str
    role: KeyRole
    components: tuple[str, ...]  # empty: every component
    created_at: datetime
    sha256: str  # hex digest of the key

    def may(self, role: str) -> bool:
        """May this key use a route that needs `role`? admin may do everything."""
        return self.role == "admin" or self.role == role

    def may_access(self, component: str | None) -> bool:
        return not self.components or component in self.components


class KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    keys: list[ApiKey]


def hash_key(secret: str) -> str:
    # surrogatepass: a header that is not valid UTF-8 is an unknown key, not a crash
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# -- the file -------------------------------------------------------------------


def load_keys(path: Path) -> list[ApiKey]:
    """The stored keys; none when the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise KeyStoreError(f"cannot read the keys file {path}: {e}") from e
    try:
        keys = msgspec.json.decode(raw, type=KeyFile).keys
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise KeyStoreError(
            f"the keys file {path} is not valid ({e}); restore it, or delete it and "
            "create new keys with `runlake keys add`"
        ) from e
    return keys


def _write(path: Path, keys: list[ApiKey]) -> None:
    """Replace the file atomically: readers see the old or the new file, never a mix."""
    body = msgspec.json.format(msgspec.json.encode(KeyFile(FILE_VERSION, keys)))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover tmp file
        os.write(fd, body + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[list[ApiKey]]:
    """The keys, read under an exclusive lock held while the caller rewrites them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield load_keys(path)
    finally:
        os.close(fd)  # releases the lock


def add_key(
    path: Path, role: str, components: Iterable[str] = (), name: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns its stored entry and the key itself (shown once)."""
    if role not in ROLES:
        raise KeyStoreError(f"role {role!r} is not one of {', '.join(ROLES)}")
    comps = tuple(sorted(set(components)))
    for c in comps:
        if not SLUG.fullmatch(c):
            raise KeyStoreError(f"component {c!r} is not a component slug "
                                f"(^{SLUG.pattern}$)")
    if name is not None and not NAME.fullmatch(name):
        raise KeyStoreError(f"key name {name!r} must match ^{NAME.pattern}$")
    secret = new_secret()
    with _locked(path) as keys:
        taken = {k.name for k in keys}
        if name is None:
            name = _fresh_name(role, taken)
        elif name in taken:
            raise KeyStoreError(f"a key named {name!r} exists already; revoke it first "
                                "or pick another --name")
        key = ApiKey(name, role, comps, datetime.now(UTC), hash_key(secret))  # type: ignore[arg-type]
        _write(path, [*keys, key])
    return key, secret


def _fresh_name(role: str, taken: set[str]) -> str:
    while True:
        name = f"{role}-{secrets.token_hex(3)}"
        if name not in taken:
            return name


def revoke_key(path: Path, name: str) -> ApiKey:
    """Remove the key named `name`; returns what was removed."""
    with _locked(path) as keys:
        gone = [k for k in keys if k.name == name]
        if not gone:
            known = ", ".join(k.name for k in keys) or "none"
            raise KeyStoreError(f"no key named {name!r} (keys: {known})")
        _write(path, [k for k in keys if k.name != name])
    return gone[0]


# -- the server's copy ----------------------------------------------------------

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): a rename always changes the inode


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class KeyRing:
    """The keys a running server accepts, reloaded when the file changes.

    `refresh()` stats the file at most every `check_every` seconds (cheap, on the
    loop) and reads it on a worker thread only when it changed. A file that turns
    invalid keeps the last good keys in force and logs an error: our own writes
    are atomic, so that takes a hand edit, and locking everyone out (or letting
    everyone in) over a typo would be worse.
    """

    def __init__(self, path: Path, check_every: float = CHECK_EVERY_S) -> None:
        self.path = path
        self.check_every = check_every
        self._by_hash: dict[str, ApiKey] = {}
        self._stamp: Stamp | None = None
        self._checked = float("-inf")

    def __len__(self) -> int:
        return len(self._by_hash)

    def load(self) -> None:
        """Read the file now (start-up); raises `KeyStoreError` when it is invalid."""
        stamp = _stamp(self.path)  # before reading: a change in between reloads again
        self._install(stamp, load_keys(self.path))
        self._checked = time.monotonic()

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_every:
            return
        self._checked = now
        try:
            stamp = _stamp(self.path)
        except OSError as e:
            log.error("cannot stat the keys file %s: %s; keeping %d keys", self.path, e, len(self))
            return
        if stamp == self._stamp:
            return
        loop = asyncio.get_running_loop()
        try:
            keys = await loop.run_in_executor(None, load_keys, self.path)
        except KeyStoreError as e:
            log.error("%s; keeping the %d keys loaded before", e.message, len(self))
            self._stamp = stamp  # not again until the file changes
            return
        self._install(stamp, keys)
        log.info("keys reloaded from %s: %d keys", self.path, len(keys))

    def _install(self, stamp: Stamp | None, keys: list[ApiKey]) -> None:
        self._by_hash = {k.sha256: k for k in keys}
        self._stamp = stamp

    def find(self, secret: str) -> ApiKey | None:
        """The key `secret` is, or None.

        The dict lookup is by hash, so its timing tells an attacker nothing about
        any stored key; compare_digest confirms the match in constant time.
        """
        digest = hash_key(secret)
        key = self._by_hash.get(digest)
        if key is None or not hmac.compare_digest(key.sha256, digest):
            return None
        return key
