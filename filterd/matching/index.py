"""The compiled suffix index: a memory-mapped hash table of canonical names.

Why this shape. A dict-of-dicts trie of Python objects costs several hundred
bytes per name and cannot be shared between processes; at a million names it
is the dominant cost of the daemon. Here every name is stored once, as bytes,
in one file:

- entries are sorted by the CRC-32 of their name; a bucket table indexed by
  the top ``bucket_bits`` of the hash gives the first entry of each bucket, so
  a lookup hashes the name once and scans about one entry;
- a hash hit is confirmed by comparing the stored name, so the index is exact
  (CRC-32 collisions only cost a second comparison);
- each entry points at a *rule set* (the distinct combinations of rules seen
  on one name, a small table) and at an optional reference string.

The file is written by ``filterd.matching.build.IndexBuilder`` (in a
compiler process, off the serving loop), renamed into place atomically, and
opened by ``CompiledIndex``
with ``mmap``: workers share its pages, opening it costs microseconds, and a
list swap is one reference replacement.

Layout (all integers little-endian u32, sections 8-byte aligned)::

    magic "FILTERD\\x02" | u32 header length | header JSON (counts, rule tables, layout)
    buckets[2**bucket_bits + 1] | hashes[n] | starts[n] | lengths[n] | rulesets[n] | refs[n]
    | blob (names in input order; entries point into it)
"""

from __future__ import annotations

import json
import mmap
import sys
import zlib
from pathlib import Path
from typing import Any, Final

from filterd.model.rules import Rule

MAGIC: Final = b"FILTERD\x02"
SECTIONS: Final = ("buckets", "hashes", "starts", "lengths", "rulesets", "refs")


class IndexFormatError(ValueError):
    """The file is not a compiled index of this version."""


class CompiledIndex:
    """Read-only view of a compiled index file, shared between processes via mmap."""

    def __init__(self, path: Path) -> None:
        if sys.byteorder != "little":  # pragma: no cover - the layout is little-endian
            raise IndexFormatError("compiled indexes are little-endian")
        try:
            with path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: cannot map: {exc}") from None
        try:
            header = self._read_header()
        except (ValueError, KeyError, TypeError) as bad:  # compiled, a name has one type
            self._map.close()
            raise IndexFormatError(f"{path}: not a compiled index ({bad})") from None
        self.path = path
        self.count: int = header["count"]
        self.meta: dict[str, Any] = header["meta"]
        self.rules: list[Rule] = [Rule.from_json(raw) for raw in header["rules"]]
        self.rulesets: list[tuple[Rule, ...]] = [
            tuple(sorted(self.rules[i] for i in ids)) for ids in header["rulesets"]
        ]
        self.refs: list[str] = header["refs"]
        self._shift = 32 - header["bucket_bits"]
        layout = header["layout"]
        view = memoryview(self._map)
        self._views = [view]

        def section(name: str) -> memoryview:
            offset, length = layout[name]
            part = view[offset : offset + length].cast("I")
            self._views.append(part)
            return part

        self._buckets = section("buckets")
        self._hashes = section("hashes")
        self._starts = section("starts")
        self._lengths = section("lengths")
        self._ruleset_of = section("rulesets")
        self._ref_of = section("refs")
        self._blob_offset: int = layout["blob"][0]

    def _read_header(self) -> dict[str, Any]:
        if self._map[: len(MAGIC)] != MAGIC:
            raise ValueError("bad magic")
        start = len(MAGIC) + 4
        header_len = int.from_bytes(self._map[len(MAGIC) : start], "little")
        header: dict[str, Any] = json.loads(self._map[start : start + header_len])
        return header

    def find(self, name: bytes) -> int:
        """Entry number holding exactly ``name`` (canonical form), or -1."""
        h = zlib.crc32(name)
        bucket = h >> self._shift
        i: int = self._buckets[bucket]
        end: int = self._buckets[bucket + 1]
        hashes = self._hashes
        while i < end:
            if hashes[i] == h:
                start = self._blob_offset + self._starts[i]
                if self._map[start : start + self._lengths[i]] == name:
                    return i
            i += 1
        return -1

    def rules_at(self, entry: int) -> tuple[Rule, ...]:
        return self.rulesets[self._ruleset_of[entry]]

    def ref_at(self, entry: int) -> str:
        return self.refs[self._ref_of[entry]]

    def name_at(self, entry: int) -> bytes:
        start = self._blob_offset + self._starts[entry]
        return self._map[start : start + self._lengths[entry]]

    def page_count(self) -> int:
        return (len(self._map) + mmap.PAGESIZE - 1) // mmap.PAGESIZE

    def touch_pages(self, first: int, end: int) -> None:
        """Read one byte of each page in [first, end): maps them in ahead of use."""
        data = self._map
        for page in range(first, end):
            data[page * mmap.PAGESIZE]

    def close(self) -> None:
        """Release the mapping; only call when no reader can still use it."""
        for part in reversed(self._views):
            part.release()
        self._map.close()
