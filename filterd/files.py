"""Crash-safe file writes shared by everything that persists state.

A crash or power cut must leave either the old or the new version of a file,
never a mix: the state directory's synced lists and the authority's data
directory both rely on it. Files are private to the owner unless the caller
says otherwise: an authority's list names sites that must not be advertised.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync the directory."""
    write_atomically_with(path, lambda out: out.write(data), mode)


def write_atomically_with(
    path: Path, write: Callable[[BinaryIO], object], mode: int = 0o600
) -> None:
    """Like ``write_atomically``, for content written in parts by ``write(file)``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is missing, unreadable or
    not an object (state that is rebuilt when absent)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryInUse(OSError):
    """Another process holds the directory's lock; ``pid`` is the holder's, if known."""

    def __init__(self, directory: Path, pid: str) -> None:
        super().__init__(f"{directory} is in use by another process (pid {pid or 'unknown'})")
        self.pid = pid


def lock_directory(directory: Path) -> int:
    """Take ``directory/.lock`` (flock, exclusive, without waiting) for as long
    as this process lives, and write our pid in it; return the descriptor.
    Raise ``DirectoryInUse`` naming the holder. The lock goes with the
    process, so a crash never leaves it behind; child processes do not
    inherit it (the descriptor is not inheritable)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DirectoryInUse(directory, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
