"""The history file: every child a run sampled, one JSON line each, beside its checkpoint.

A checkpoint that held the whole history cost O(children) to write at every update (tens of GB
over a 50,000-child pre-training); this file is appended to instead, so an update writes only its
own children. The checkpoint records a `HistoryMark`, how much of the file it vouches for, and
the file is fsync'd before the checkpoint is replaced: after a crash between the two the file
holds more than the mark, and the excess is ignored on reading and cut off before the next
append, so no record is lost or written twice.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agents.mnms.records import ChildRecord

HISTORY_SUFFIX = ".history.jsonl"


@dataclass(frozen=True)
class HistoryMark:
    """The part of a history file one checkpoint vouches for: its first `size` bytes, holding
    `records` lines with CRC-32 `crc32` (which catches a file that is not that checkpoint's)."""

    records: int = 0
    size: int = 0
    crc32: int = 0


def history_path(checkpoint: Path) -> Path:
    """Where the checkpoint at `checkpoint` keeps its history: `checkpoint.pt` beside
    `checkpoint.pt.history.jsonl`. The whole file name, so that checkpoints that differ only
    in their suffix (`mnms.pt`, `mnms.ckpt`) never share one history file."""
    return checkpoint.with_name(checkpoint.name + HISTORY_SUFFIX)


def write_records(path: Path, records: Sequence[ChildRecord]) -> HistoryMark:
    """Write `records` as the whole file at `path`, through a `.partial` file renamed into place,
    and return its mark."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        mark = _write(file, HistoryMark(), records)
    os.replace(partial, path)
    return mark


def append_records(path: Path, mark: HistoryMark, records: Sequence[ChildRecord]) -> HistoryMark:
    """Cut the file at `path` back to `mark` (dropping what a crash left beyond it), append
    `records`, and return the new mark; the bytes are on disk when this returns."""
    with open(path, "r+b") as file:
        file.truncate(mark.size)
        file.seek(mark.size)
        return _write(file, mark, records)


def read_records(path: Path, mark: HistoryMark) -> list[ChildRecord]:
    """The records `mark` vouches for in the file at `path`; bytes beyond it are ignored."""
    try:
        with open(path, "rb") as file:
            data = file.read(mark.size)
    except FileNotFoundError:
        raise ValueError(
            f"{path}: no such history file; its checkpoint holds {mark.records} children there "
            "(copy it beside the checkpoint)"
        ) from None
    lines = data.count(b"\n")
    if len(data) < mark.size or lines != mark.records or zlib.crc32(data) != mark.crc32:
        raise ValueError(
            f"{path} is not its checkpoint's history: the checkpoint vouches for {mark.records} "
            f"records in {mark.size} bytes with CRC-32 {mark.crc32}; the file holds {lines} "
            f"lines in {len(data)} bytes there with CRC-32 {zlib.crc32(data)}"
        )
    return [ChildRecord.from_dict(json.loads(line)) for line in data.splitlines()]


def _write(file: BinaryIO, mark: HistoryMark, records: Sequence[ChildRecord]) -> HistoryMark:
    """Write `records` at the file's position (`mark.size`), flush and fsync, and return the
    mark that covers them too."""
    data = b"".join(
        json.dumps(r.to_dict(), separators=(",", ":")).encode() + b"\n" for r in records
    )
    file.write(data)
    file.flush()
    os.fsync(file.fileno())
    return HistoryMark(
        mark.records + len(records), mark.size + len(data), zlib.crc32(data, mark.crc32)
    )
