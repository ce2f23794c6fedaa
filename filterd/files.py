"""Crash-safe file writes shared by everything that persists state.

A crash or power cut must leave either the old or the new version of a file,
never a mix: the state directory's synced lists and the authority's data
directory both rely on it. Files are private to the owner unless the caller
says otherwise: an authority's list names sites that must not be advertised.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
