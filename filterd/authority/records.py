"""How the authority keeps its files: who may read them, and append-only JSON lines.

Shared by the store, the operator registry and the node registry, so that
every file the serving account reads has one mode and every journal
(``history.jsonl``, ``receipts.jsonl``) survives a torn last line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from filterd.errors import FilterdError
from filterd.files import fsync_directory

T = TypeVar("T")


class AuthorityError(FilterdError):
    """A request the data directory cannot honour as asked (a person's input: exit 2)."""


SERVED_MODE: Final = 0o640
"""What ``serve`` reads (operators.json, manifests, snapshots, deltas, history):
readable by the group of the serving account, which need not be the
publishing one; the private key and the staging lists stay 0600."""


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync. A line torn by an earlier crash is
    closed first, so it costs one unreadable line, never the new record."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The readable records of a JSON-lines file (a line torn by a crash is skipped)."""
    if not path.exists():
        return
    with path.open("rb") as lines:
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


class ParsedFile(Generic[T]):
    """A file the serving process reads on every request, parsed again only
    when it was replaced (inode, modification time and size differ): an
    ``operator add`` or ``node add`` on a running authority takes effect at
    the next request without a reload. A missing file is ``missing()``."""

    def __init__(self, path: Path, parse: Callable[[bytes], T], missing: Callable[[], T]) -> None:
        self.path = path
        self._parse = parse
        self._missing = missing
        self._cache: tuple[tuple[int, int, int], T] | None = None

    def get(self) -> T:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._missing()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        value = self._parse(self.path.read_bytes())
        self._cache = (stamp, value)
        return value
