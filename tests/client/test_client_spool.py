"""The spool's file format on a real folder: framing, a torn last record, resuming."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from runlake_client.spool import HEADER, Spool, read_offset, records


def test_torn_last_record_is_skipped_and_drain_resumes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    payloads = [b'[{"n": %d}]' % i for i in range(5)]
    for p in payloads:
        assert spool.append(p)
    assert spool.path is not None
    path = spool.path
    spool._fd, fd = -1, spool._fd  # the writer "dies" holding a half-written record
    os.write(fd, HEADER.pack(100, zlib.crc32(b"x")) + b"partial")
    os.close(fd)
    assert [p for _, p in records(path, 0)] == payloads

    sent: list[bytes] = []

    def fail_on_third(payload: bytes) -> bool:
        if len(sent) == 2:
            return False
        sent.append(payload)
        return True

    reader = Spool(tmp_path, max_bytes=1 << 20)
    assert not reader.drain(fail_on_third)  # stops at the third: resumable
    assert sent == payloads[:2] and read_offset(path) > 0
    assert reader.drain(lambda p: sent.append(p) is None)
    assert sent == payloads  # nothing twice, the torn record never
    assert not path.exists()


def test_a_full_spool_refuses_and_a_live_writers_file_is_left_alone(tmp_path: Path) -> None:
    writer = Spool(tmp_path, max_bytes=64)
    assert writer.append(b"x" * 40)
    assert not writer.append(b"y" * 40)  # over max_bytes: refused, counted by the sender
    other = Spool(tmp_path, max_bytes=1 << 20)
    seen: list[bytes] = []
    assert other.drain(lambda p: seen.append(p) is None)
    assert seen == []  # its writer holds the lock
    writer.close()  # has unsent records: the file stays for a later sync
    assert other.drain(lambda p: seen.append(p) is None)
    assert seen == [b"x" * 40]
