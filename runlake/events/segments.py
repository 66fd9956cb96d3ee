"""Immutable Parquet segments of the log: naming, atomic writing and reading.

A segment is `seg-<first seq>-<last seq>.parquet` (zero-padded, so names sort
by seq) in LOG_SCHEMA with zstd compression and the schema version in the file
metadata. It is written to a dot-prefixed temp name, fsynced, renamed and the
directory fsynced, so a crash leaves either the whole segment or none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runlake.events.columns import LOG_SCHEMA, conform
from runlake.events.wal import fsync_dir

_NAME = re.compile(r"^seg-(\d{20})-(\d{20})\.parquet$")
ROW_GROUP_ROWS = 128 * 1024


@dataclass(frozen=True, order=True)
class Segment:
    first: int
    last: int
    path: Path

    @property
    def rows(self) -> int:
        return self.last - self.first + 1


def segment_name(first: int, last: int) -> str:
    return f"seg-{first:020d}-{last:020d}.parquet"


def list_segments(directory: Path) -> list[Segment]:
    found = []
    for entry in os.scandir(directory):
        m = _NAME.match(entry.name)
        if m:
            found.append(Segment(int(m[1]), int(m[2]), Path(entry.path)))
    return sorted(found)


def write_segment(directory: Path, table: pa.Table) -> Segment:
    """Write `table` (contiguous seqs) as one segment, atomically and durably."""
    seqs = table.column("seq")
    first, last = seqs[0].as_py(), seqs[-1].as_py()
    final = directory / segment_name(first, last)
    tmp = directory / f".{final.name}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(
            table.cast(LOG_SCHEMA),
            f,
            compression="zstd",
            row_group_size=ROW_GROUP_ROWS,
        )
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(directory)
    return Segment(first, last, final)


def read_segment(segment: Segment, from_seq: int, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of `segment` whose seq ≥ from_seq, skipping whole row groups."""
    pf = pq.ParquetFile(segment.path)
    skip = max(0, from_seq - segment.first)
    start_group, offset = 0, 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > skip:
            break
        offset += n
        start_group += 1
    groups = list(range(start_group, pf.num_row_groups))
    if not groups:
        return
    skip -= offset
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups):
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        if skip:
            batch = batch.slice(skip)
            skip = 0
        yield conform(batch)  # an older segment lacks the columns added since


def remove_temp_files(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.name.startswith(".seg-") and entry.name.endswith(".tmp"):
            os.unlink(entry.path)
