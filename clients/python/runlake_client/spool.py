"""The durable spool: events the server could not take yet, in append-only files.

A spool file is a sequence of records `<u32 length><u32 crc32><payload>` (little
endian), one record per batch, the payload a JSON array of events. Each append is
fsynced before the sender reports the batch as settled, so after `kill -9` every
batch that was spooled is still there; a torn last record (a crash mid-write) fails
its length or CRC check and is skipped. What has been acknowledged is remembered
per file in `<file>.offset` (a byte offset), so an interrupted sync resumes where it
stopped; a stale offset only means a resend, which the server's fold drops by `id`.

Each writing process holds an exclusive `flock` on its own file, so a sync (another
process's start, or `runlake-client sync`) drains only files whose writer is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

HEADER = struct.Struct("<II")
SUFFIX = ".rlspool"
OFFSET_SUFFIX = ".offset"


def records(path: Path, offset: int) -> Iterator[tuple[int, bytes]]:
    """(end offset, payload) of each whole record from `offset`; stops at a torn one."""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                return
            length, crc = HEADER.unpack(head)
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            offset += HEADER.size + length
            yield offset, payload


def read_offset(path: Path) -> int:
    try:
        return int(Path(str(path) + OFFSET_SUFFIX).read_text() or 0)
    except (OSError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    # Not fsynced: losing it resends records the fold then drops as duplicates.
    target = Path(str(path) + OFFSET_SUFFIX)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(str(offset))
    os.replace(tmp, target)


def remove(path: Path) -> None:
    for p in (Path(str(path) + OFFSET_SUFFIX), path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Spool:
    """One process's spool file in `directory`, and the drain of every file there.

    Only the sender thread calls it. `max_bytes` bounds the directory's spool files
    together (as measured when this process first writes, plus what it wrote since).
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.path: Path | None = None
        self._fd = -1
        self._size = 0  # own file's length
        self._read = 0  # own file: acknowledged up to here
        self._others = 0  # other files' bytes when we opened ours

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._others = sum(p.stat().st_size for p in self._files())
        name = f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        self.path = self.directory / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a crash
        finally:
            os.close(dir_fd)

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except OSError:  # missing, not a folder, unreadable: nothing to drain from it
            return []

    def has_pending(self) -> bool:
        return self._read < self._size

    def append(self, payload: bytes) -> bool:
        """Write and fsync one record; False (nothing written) when the spool is full."""
        if self._fd < 0:
            self._open()
        record = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if self._others + self._size + len(record) > self.max_bytes:
            return False
        try:
            view = memoryview(record)
            while view:  # a short write (disk full) must not leave half a record
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, self._size)  # back to the last whole record
            os.lseek(self._fd, self._size, os.SEEK_SET)
            raise
        self._size += len(record)
        return True

    def others_pending(self) -> bool:
        """Another process's file with records in it (a live writer's, or a dead one's)."""
        for p in self._files():
            try:
                if p != self.path and p.stat().st_size > read_offset(p):
                    return True
            except FileNotFoundError:
                continue
        return False

    def drain(self, send: Callable[[bytes], bool]) -> bool:
        """Send every record, oldest file first, until `send` says False.

        True when nothing is left. Files of live writers (locked) are left alone.
        """
        for path in self._files():
            if path == self.path:
                if not self._drain_own(send):
                    return False
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if not _try_lock(fd):
                    continue
                if not self._drain_file(path, read_offset(path), send):
                    return False
                remove(path)
            finally:
                os.close(fd)
        return True

    def _drain_file(self, path: Path, offset: int, send: Callable[[bytes], bool]) -> bool:
        for end, payload in records(path, offset):
            if not send(payload):
                return False
            write_offset(path, end)
        return True

    def _drain_own(self, send: Callable[[bytes], bool]) -> bool:
        assert self.path is not None
        for end, payload in records(self.path, self._read):
            if not send(payload):
                return False
            self._read = end
            write_offset(self.path, end)
        if self._read >= self._size:  # all acknowledged: start the file afresh
            write_offset(self.path, 0)  # first: a stale offset past the new end loses records
            os.ftruncate(self._fd, 0)
            self._size = self._read = 0
        return True

    def close(self) -> None:
        """Release the lock; an empty own file is removed."""
        if self._fd < 0:
            return
        assert self.path is not None
        if self._size == 0 or self._read >= self._size:
            remove(self.path)
        os.close(self._fd)
        self._fd = -1
