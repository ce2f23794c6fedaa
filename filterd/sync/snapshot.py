"""Canonical snapshots and deltas of the authority sync protocol, both sides.

A snapshot is the native list format, sorted, one canonical entry per name
(docs/sync-protocol.md, "Snapshots"); a delta is the set of entries added,
changed and removed between two serials. A delta is applied by binary search
over the sorted snapshot text, so its cost follows the size of the change,
not of the list. Shared by the operator's client and the reference authority
so that the canonical form cannot drift apart between the two ends.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from filterd.formats import NATIVE_HEADER, NATIVE_KINDS
from filterd.sync.model import CATEGORY, DELTA_HEADER, MAX_REFERENCE, SyncError
from filterd.wire.names import InvalidName, normalise


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    """One list entry in canonical form (see docs/sync-protocol.md)."""

    name: bytes
    kind: bytes = b"block"
    category: bytes = b"-"
    reference: bytes = b"-"

    def line(self) -> bytes:
        return b" ".join((self.name, self.kind, self.category, self.reference))


def make_entry(name: str, kind: str, category: str = "-", reference: str = "-") -> Entry:
    """An entry from what a person typed: the name is normalised, the rest checked."""
    try:
        canonical = normalise(name.strip().encode())
    except InvalidName as exc:
        raise ValueError(f"{name!r}: {exc}") from None
    raw_kind = kind.strip().lower().encode()
    if raw_kind not in NATIVE_KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(k.decode() for k in NATIVE_KINDS)}")
    raw_category = category.strip().lower().encode() or b"-"
    if not CATEGORY.fullmatch(raw_category):
        raise ValueError(f"category {category!r}: [a-z0-9][a-z0-9_-]* or '-'")
    ref = " ".join(reference.split()).encode() or b"-"
    if len(ref) > MAX_REFERENCE:
        raise ValueError("reference longer than 200 bytes (UTF-8)")
    return Entry(canonical, raw_kind, raw_category, ref)


def parse_entry(line: bytes) -> Entry:
    """Read one canonical entry line; ``SyncError('syntax')`` if it is not canonical."""
    fields = line.split(b" ", 3)
    if len(fields) != 4:
        raise SyncError("syntax", f"entry {line[:80]!r}: expected NAME KIND CATEGORY REFERENCE")
    name, kind, category, ref = fields
    _canonical_name(name)
    if (
        kind not in NATIVE_KINDS
        or not CATEGORY.fullmatch(category)
        or not ref
        or len(ref) > MAX_REFERENCE
        or b"  " in ref
        or ref != ref.strip()
    ):
        raise SyncError("syntax", f"entry {line[:80]!r} is not in canonical form")
    return Entry(name, kind, category, ref)


def _canonical_name(name: bytes) -> bytes:
    try:
        canonical = normalise(name)
    except InvalidName as exc:
        raise SyncError("syntax", f"name {name[:80]!r}: {exc}") from None
    if canonical != name:
        raise SyncError("syntax", f"name {name[:80]!r} is not in canonical form")
    return name


def serialize_snapshot(entries: Iterable[Entry]) -> bytes:
    """The canonical snapshot text: header, entries sorted by name, final LF."""
    ordered = sorted(entries)
    lines = [NATIVE_HEADER] + [entry.line() for entry in ordered]
    return b"\n".join(lines) + b"\n"


def snapshot_entries(text: bytes) -> int:
    return text.count(b"\n") - 1


_CANONICAL_LINE: Final = re.compile(
    rb"(?m)^((?=[^ \n]{1,253} )(?:[a-z0-9_-]{1,63}\.)+(?![0-9]+ )[a-z0-9_-]{1,63}) "
    rb"(?:block|block-exact|block-below|allow|allow-exact) (?:[a-z0-9][a-z0-9_-]{0,63}|-) "
    rb"[^\s](?:[^\n]{0,198}[^\s])?$"
)


def check_snapshot(text: bytes, max_entries: int) -> None:
    """Validate a whole snapshot: header, canonical entries, sorted unique names.

    Done once per downloaded snapshot, before anything is applied. The common
    case (every line canonical, ASCII names) is checked by one regular
    expression over the text and one comparison pass; a snapshot where that
    does not hold is checked line by line for a precise error."""
    if not text.startswith(NATIVE_HEADER + b"\n") or not text.endswith(b"\n"):
        raise SyncError("syntax", "snapshot does not start with the native header line")
    count = text.count(b"\n") - 1
    if count > max_entries:
        raise SyncError("size", f"snapshot has {count} entries, limit {max_entries}")
    body = text[len(NATIVE_HEADER) + 1 :]
    names: list[bytes] = _CANONICAL_LINE.findall(body)
    if len(names) != count or b"  " in body:
        names = [parse_entry(line).name for line in body.split(b"\n")[:-1]]
    if not all(map(operator.lt, names, names[1:])):
        previous = b""
        for name in names:
            if name <= previous:
                raise SyncError("syntax", f"entry {name!r} out of order or repeated")
            previous = name


@dataclass(frozen=True, slots=True)
class Delta:
    base: int
    target: int
    removes: tuple[bytes, ...]
    adds: tuple[Entry, ...]

    def serialize(self) -> bytes:
        head = DELTA_HEADER + f" from={self.base} to={self.target}".encode()
        lines = [head] + [b"- " + name for name in sorted(self.removes)]
        lines += [b"+ " + entry.line() for entry in sorted(self.adds)]
        return b"\n".join(lines) + b"\n"


def diff(base: dict[bytes, Entry], target: dict[bytes, Entry], serials: tuple[int, int]) -> Delta:
    """The delta from ``base`` to ``target`` (entries keyed by name)."""
    removes = tuple(sorted(name for name in base if name not in target))
    adds = tuple(sorted(e for name, e in target.items() if base.get(name) != e))
    return Delta(serials[0], serials[1], removes, adds)


def diff_at(base: bytes, target: bytes, names: Iterable[bytes], serials: tuple[int, int]) -> Delta:
    """The delta from snapshot ``base`` to snapshot ``target`` when only
    ``names`` can differ (e.g. the names two consecutive deltas touch): each
    is looked up by binary search, so the cost does not grow with the list."""
    removes: list[bytes] = []
    adds: list[Entry] = []
    for name in sorted(set(names)):
        before, after = entry_in(base, name), entry_in(target, name)
        if after is None and before is not None:
            removes.append(name)
        elif after is not None and after != before:
            adds.append(after)
    return Delta(serials[0], serials[1], tuple(removes), tuple(adds))


def entry_in(snapshot: bytes, name: bytes) -> Entry | None:
    """The entry for ``name`` in a canonical snapshot, or None."""
    start, end, found = _locate(snapshot, snapshot.index(b"\n") + 1, name)
    return parse_entry(snapshot[start : end - 1]) if found else None


def parse_delta(text: bytes, base: int, target: int) -> Delta:
    header, _, body = text.partition(b"\n")
    expected = DELTA_HEADER + f" from={base} to={target}".encode()
    if header != expected or (body and not body.endswith(b"\n")):
        raise SyncError("syntax", f"delta header {header[:60]!r}, expected {expected!r}")
    removes: list[bytes] = []
    adds: list[Entry] = []
    for line in body.split(b"\n")[:-1] if body else []:
        if line.startswith(b"- "):
            if adds:
                raise SyncError("syntax", "delta removals must come before additions")
            removes.append(_canonical_name(line[2:]))
        elif line.startswith(b"+ "):
            adds.append(parse_entry(line[2:]))
        else:
            raise SyncError("syntax", f"delta line {line[:60]!r}")
    if removes != sorted(set(removes)) or [a.name for a in adds] != sorted({a.name for a in adds}):
        raise SyncError("syntax", "delta lines not sorted or repeated")
    return Delta(base, target, tuple(removes), tuple(adds))


def apply_delta(snapshot: bytes, delta: Delta) -> bytes:
    """The canonical snapshot after ``delta``, without parsing the unchanged lines.

    Each change is located by binary search over the sorted snapshot text,
    so the cost is about (changes x log entries) comparisons and one copy:
    a 100-entry delta on a million-entry list takes milliseconds. A removal
    of a name that is not there means the delta is for another base: it is
    refused (the manifest hash check would refuse it anyway)."""
    header_end = snapshot.index(b"\n") + 1
    changes: dict[bytes, Entry | None] = {name: None for name in delta.removes}
    for entry in delta.adds:
        changes[entry.name] = entry
    pieces: list[bytes] = [snapshot[:header_end]]
    cursor = header_end
    for name in sorted(changes):
        start, end, found = _locate(snapshot, header_end, name)
        if start < cursor:
            raise SyncError("delta", "delta changes out of order")
        if changes[name] is None and not found:
            raise SyncError("delta", f"delta removes {name!r}, which the enforced list lacks")
        pieces.append(snapshot[cursor:start])
        replacement = changes[name]
        if replacement is not None:
            pieces.append(replacement.line() + b"\n")
        cursor = end if found else start
    pieces.append(snapshot[cursor:])
    return b"".join(pieces)


def _locate(text: bytes, low: int, name: bytes) -> tuple[int, int, bool]:
    """Where the line for ``name`` is, or would be, in sorted snapshot ``text``:
    (start, end, found); start == end when it is not there."""
    high = len(text)
    # Invariant: every line starting before ``low`` has a smaller name; every
    # line starting at or after ``high`` has a name >= ``name``.
    while low < high:
        middle = (low + high) // 2
        # ``low`` is a line start, so the line holding ``middle`` starts at or after it.
        line_start = text.rfind(b"\n", 0, middle) + 1
        line_end = text.index(b"\n", line_start) + 1
        line_name = text[line_start : text.index(b" ", line_start, line_end)]
        if line_name < name:
            low = line_end
        else:
            high = line_start
    if low < len(text):
        end = text.index(b"\n", low) + 1
        if text[low : text.index(b" ", low, end)] == name:
            return low, end, True
    return low, low, False
