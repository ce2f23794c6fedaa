"""Writing a compiled index (see ``filterd.matching.index`` for the format).

Only the compiler process imports this module: it needs NumPy, which a
serving worker never loads.
"""

from __future__ import annotations

import array
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from filterd.files import write_atomically_with
from filterd.formats.names import Names
from filterd.matching.index import MAGIC, SECTIONS
from filterd.model.rules import Rule


class IndexBuilder:
    """Collects (name, rule) pairs and writes the compiled index file.

    Names arrive packed (``filterd.formats.names.Names``) and are appended to
    one blob in input order, with their CRC-32 and length, rule and
    reference numbers in ``array('I')``: no per-name object outlives
    ``add``, so a million names cost their text plus 16 bytes each, not the
    65 MB of a list of ``bytes``. ``write`` sorts by hash with NumPy: at a
    million names every per-entry Python step costs a fraction of a second
    on this class of machine (random memory access dominates), so the only
    per-name Python work left is hashing. The name blob stays in input
    order; entries point into it.
    """

    def __init__(self) -> None:
        self._blob = bytearray()
        self._hashes = array.array("I")
        self._lengths = array.array("I")
        self._rule_of = array.array("I")
        self._ref_of = array.array("I")
        self._rules: dict[Rule, int] = {}
        self._refs: dict[str, int] = {"": 0}

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, names: Sequence[bytes], rule: Rule, ref: str = "") -> None:
        """Add canonical ``names`` that all carry ``rule`` (and ``ref``).

        The first ``Names`` added gives up its text to the builder (it is
        left empty): a compile hands over each parsed list and drops it."""
        if not names:
            return
        packed = names if isinstance(names, Names) else Names(names)
        count = len(packed)
        rule_id = self._rules.setdefault(rule, len(self._rules))
        ref_id = self._refs.setdefault(ref, len(self._refs))
        self._hashes.extend(map(zlib.crc32, packed))
        self._lengths.extend(packed.lengths())
        if self._blob:
            self._blob += packed.blob
        else:
            self._blob = packed.take_blob()  # adopted, not copied
        self._rule_of.extend(array.array("I", [rule_id]) * count)
        self._ref_of.extend(array.array("I", [ref_id]) * count)

    def write(self, path: Path, meta: dict[str, Any]) -> int:
        """Write the index atomically to ``path``; return the number of distinct names."""
        n = len(self._hashes)
        hashes = np.frombuffer(self._hashes, dtype=np.uint32)
        lengths = np.frombuffer(self._lengths, dtype=np.uint32)
        starts = np.zeros(n, dtype=np.uint32)
        np.cumsum(lengths[:-1], out=starts[1:])
        blob = memoryview(self._blob)
        input_starts, input_lengths = starts, lengths
        order = np.argsort(hashes, kind="stable").astype(np.uint32)
        # Sorted copies; each input array is released as soon as it is copied
        # (the memory peak of a compile is here, on top of the name blob).
        hashes = hashes[order]
        self._hashes = array.array("I")
        starts = starts[order]
        lengths = lengths[order]
        rulesets = np.frombuffer(self._rule_of, dtype=np.uint32)[order]
        self._rule_of = array.array("I")
        refs = np.frombuffer(self._ref_of, dtype=np.uint32)[order]
        self._ref_of = array.array("I")
        # A lone rule's rule set has the rule's own number, so a name seen
        # once (the common case) needs no lookup; merged sets are appended.
        ruleset_ids: dict[tuple[int, ...], int] = {
            (rule_id,): rule_id for rule_id in range(len(self._rules))
        }
        keep = np.ones(n, dtype=bool)
        same = np.flatnonzero(hashes[1:] == hashes[:-1]) + 1
        # Runs of exactly two equal hashes (a name listed twice, e.g. RPZ's
        # "x CNAME ." with "*.x CNAME .") are merged with array operations;
        # longer runs, rare, take the general path.
        in_run = np.zeros(n + 1, dtype=bool)
        in_run[same] = True
        longer = in_run[same - 1] | in_run[same + 1]
        self._merge_pairs(blob, same[~longer], starts, lengths, rulesets, refs, keep, ruleset_ids)
        position = 0
        for candidate in same[longer].tolist():
            if candidate <= position:
                continue
            start = candidate - 1
            position = candidate
            while position + 1 < n and hashes[position + 1] == hashes[start]:
                position += 1
            self._merge_run(
                blob,
                input_starts,
                input_lengths,
                start,
                position + 1,
                order,
                rulesets,
                refs,
                keep,
                ruleset_ids,
            )
        hashes = hashes[keep]
        starts = starts[keep]
        lengths = lengths[keep]
        rulesets = rulesets[keep]
        refs = refs[keep]
        count = len(hashes)
        bits = max(8, (count - 1).bit_length())
        # Start of bucket b = number of entries in buckets below b (hashes are sorted).
        counts = np.bincount(hashes >> np.uint32(32 - bits), minlength=1 << bits)
        buckets = np.zeros((1 << bits) + 1, dtype=np.uint32)
        np.cumsum(counts, out=buckets[1:], dtype=np.uint32)
        del counts
        header = {
            "count": count,
            "bucket_bits": bits,
            "rules": [rule.to_json() for rule in sorted(self._rules, key=self._rules.__getitem__)],
            "rulesets": [list(ids) for ids in sorted(ruleset_ids, key=ruleset_ids.__getitem__)],
            "refs": sorted(self._refs, key=self._refs.__getitem__),
            "meta": meta,
        }
        sections = [buckets, hashes, starts, lengths, rulesets, refs]
        _write_atomically(path, header, [s.data.cast("B") for s in sections], blob)
        return count

    def _merge_pairs(
        self,
        blob: memoryview,
        second: npt.NDArray[np.intp],
        starts: npt.NDArray[np.uint32],
        lengths: npt.NDArray[np.uint32],
        rulesets: npt.NDArray[np.uint32],
        refs: npt.NDArray[np.uint32],
        keep: npt.NDArray[np.bool_],
        ruleset_ids: dict[tuple[int, ...], int],
    ) -> None:
        """Merge the pairs (``second - 1``, ``second``) of sorted positions
        whose names are equal, as ``_merge_run`` would: the first keeps the
        union of both rule sets and the larger reference number."""
        first = second - 1
        equal_length = lengths[first] == lengths[second]
        first, second = first[equal_length], second[equal_length]
        text = np.frombuffer(blob, dtype=np.uint8)
        at_first = starts[first].astype(np.int64)
        at_second = starts[second].astype(np.int64)
        size = lengths[first]
        equal = np.ones(len(first), dtype=bool)
        for k in range(int(size.max()) if len(size) else 0):  # names are at most 253 bytes
            live = np.flatnonzero(equal & (size > k))
            equal[live] = text[at_first[live] + k] == text[at_second[live] + k]
        first, second = first[equal], second[equal]
        keep[second] = False
        refs[first] = np.maximum(refs[first], refs[second])
        low = np.minimum(rulesets[first], rulesets[second]).astype(np.int64)
        high = np.maximum(rulesets[first], rulesets[second]).astype(np.int64)
        combined = low << 32 | high
        for pair in np.unique(combined).tolist():
            a, b = pair >> 32, pair & 0xFFFFFFFF
            key = (a,) if a == b else (a, b)
            rulesets[first[combined == pair]] = ruleset_ids.setdefault(key, len(ruleset_ids))

    def _merge_run(
        self,
        blob: memoryview,
        input_starts: npt.NDArray[np.uint32],
        input_lengths: npt.NDArray[np.uint32],
        start: int,
        end: int,
        order: npt.NDArray[np.uint32],
        rulesets: npt.NDArray[np.uint32],
        refs: npt.NDArray[np.uint32],
        keep: npt.NDArray[np.bool_],
        ruleset_ids: dict[tuple[int, ...], int],
    ) -> None:
        """Merge equal names inside one run of equal hashes (sorted positions)."""
        first_of: dict[bytes, int] = {}
        members: dict[int, set[int]] = {}
        for position in range(start, end):
            entry = int(order[position])
            offset = int(input_starts[entry])
            name = blob[offset : offset + int(input_lengths[entry])].tobytes()
            first = first_of.setdefault(name, position)
            members.setdefault(first, set()).add(int(rulesets[position]))
            if first != position:
                keep[position] = False
                refs[first] = max(refs[first], refs[position])
        for first, rule_ids in members.items():
            key = tuple(sorted(rule_ids))
            rulesets[first] = ruleset_ids.setdefault(key, len(ruleset_ids))


def _write_atomically(
    path: Path, header: dict[str, Any], sections: list[memoryview], blob: memoryview
) -> None:
    """Write to a temporary file in the same directory, fsync, rename (crash-safe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layout: dict[str, list[int]] = {}
    header_bytes = b""
    # The header records section offsets, which depend on the header's own
    # length: iterate until the length is stable (twice at most in practice).
    for _ in range(4):
        offset = _align(len(MAGIC) + 4 + len(header_bytes))
        for name, size in zip((*SECTIONS, "blob"), [*map(len, sections), len(blob)], strict=True):
            layout[name] = [offset, size]
            offset = _align(offset + size)
        candidate = json.dumps({**header, "layout": layout}, separators=(",", ":")).encode()
        stable = len(candidate) == len(header_bytes)
        header_bytes = candidate
        if stable:
            break
    else:
        raise RuntimeError("index header length did not settle")
    prefix = MAGIC + len(header_bytes).to_bytes(4, "little") + header_bytes

    def write(out: BinaryIO) -> None:
        out.write(prefix)
        parts: list[memoryview | bytes] = [*sections, blob]
        for name, part in zip((*SECTIONS, "blob"), parts, strict=True):
            out.write(b"\0" * (layout[name][0] - out.tell()))
            out.write(part)

    write_atomically_with(path, write)


def _align(offset: int) -> int:
    return (offset + 7) & ~7
