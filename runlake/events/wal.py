"""The write-ahead file: the newest events, durable before they are acknowledged.

A WAL file is a sequence of frames, one per group commit:

    magic "RLW1" | payload length u32 | crc32 u32 | first seq i64 | payload

where the payload is an Arrow IPC stream of LOG_SCHEMA rows. On recovery the
file is read frame by frame and cut at the first frame that is short or fails
its checksum: that can only be a write that was never acknowledged.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from runlake.errors import LogError
from runlake.events.columns import LOG_SCHEMA, conform_table

MAGIC = b"RLW1"
_HEADER = struct.Struct("<4sIIq")


def wal_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.arrows"


def encode_frame(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, LOG_SCHEMA) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    first = table.column("seq")[0].as_py()
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), first) + payload


def read_frames(path: Path) -> tuple[list[pa.Table], int]:
    """Whole frames of a WAL file, and the byte length they cover."""
    data = path.read_bytes()
    tables, good = [], 0
    for table, end in _frames(data):
        tables.append(conform_table(table))  # a frame an older runlake wrote
        good = end
    return tables, good


def _frames(data: bytes) -> Iterator[tuple[pa.Table, int]]:
    pos, size = 0, len(data)
    while pos + _HEADER.size <= size:
        magic, length, crc, _first = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if magic != MAGIC or end > size:
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        try:
            table = pa.ipc.open_stream(payload).read_all()
        except pa.ArrowInvalid:
            return
        yield table, end
        pos = end


class WalWriter:
    """Appends frames to one WAL file, with fsync, through a raw file descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise LogError(f"cannot open write-ahead file {path}: {e}") from e
        self.size = os.fstat(self._fd).st_size

    def write(self, frame: bytes) -> None:
        """Write one frame and fsync: returns only once it is durable."""
        view = memoryview(frame)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fdatasync(self._fd)
        self.size += len(frame)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def truncate(path: Path, length: int) -> None:
    """Cut a torn tail so that later frames append after the last whole one."""
    with open(path, "r+b") as f:
        f.truncate(length)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
