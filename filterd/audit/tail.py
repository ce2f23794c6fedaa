"""Reading the end of a trail file: its last and first lines, a torn last line.

Used by the writer when it opens a trail (trail.py): a trail can be large,
so the last line is found by reading backwards in chunks, never the whole
file. Pure file reading, no policy: what to do about what is found is the
writer's business.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Final

from filterd.audit.chain import FormatError, decode_record, parse_time

TAIL_CHUNK: Final = 64 * 1024


def seq_of(line: bytes) -> int:
    try:
        return int(decode_record(line)["seq"])
    except FormatError:
        return 0


def event_of(line: bytes) -> str:
    try:
        return str(decode_record(line)["event"])
    except FormatError:
        return ""


def time_of(line: bytes) -> datetime | None:
    try:
        return parse_time(decode_record(line)["time"])
    except FormatError:
        return None


def prev_of(line: bytes) -> str:
    try:
        return str(decode_record(line)["prev"])
    except FormatError:
        return ""


def drop_partial_line(path: Path) -> int:
    """Cut a last line that has no LF; the number of bytes cut."""
    try:
        with path.open("r+b") as file:
            end = file.seek(0, os.SEEK_END)
            if end == 0:
                return 0
            file.seek(end - 1)
            if file.read(1) == b"\n":
                return 0
            keep = last_newline_before(file, end) + 1
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
            return end - keep
    except FileNotFoundError:
        return 0


def last_newline_before(file: BinaryIO, end: int) -> int:
    """Offset of the last LF before ``end``, or -1."""
    position = end
    while position > 0:
        start = max(0, position - TAIL_CHUNK)
        file.seek(start)
        chunk = file.read(position - start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found
        position = start
    return -1


def last_line(path: Path) -> bytes | None:
    """The last complete line of ``path`` (without its LF), None if there is none."""
    try:
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            if end == 0:
                return None
            begin = last_newline_before(file, end - 1) + 1
            file.seek(begin)
            return file.read(end - 1 - begin)
    except FileNotFoundError:
        return None


def first_line(path: Path) -> bytes | None:
    try:
        with path.open("rb") as file:
            line = file.readline()
    except FileNotFoundError:
        return None
    return line.rstrip(b"\n") if line.endswith(b"\n") else None
