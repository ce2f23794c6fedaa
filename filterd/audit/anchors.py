"""Anchors: heads of a node's trail that were seen off the node.

An anchor says "record ``seq`` hashed to ``hash``" and was taken by someone
the operator does not control: the authority stores the head every receipt
carries (``filterd authority heads --node N`` exports them, see
docs/authority.md), and every report states its head. Because each record's
hash covers the one before it, an anchor pins every record up to ``seq``:
``filterd audit verify --anchors FILE`` proves the trail still contains
each anchored head, in order, and says which records came after the last
anchor (*not yet anchored*: only the node's own head vouches for them).

Files ``--anchors`` reads (docs/audit.md):

- the authority's export, JSON: ``{"type": "filterd-anchors", "node": ...,
  "heads": [{"seq": N, "hash": "...", "time": "...", "received_at": "..."},
  ...]}`` in the order the authority received them;
- or text, one anchor a line: ``SEQ:HASH`` (``#`` starts a comment).

Two anchors of one seq must agree: a trail restored from an old copy and
continued, or rewritten, gives a second hash for an anchored record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ANCHOR: Final = re.compile(r"([0-9]+):([0-9a-f]{64})")
MAX_ANCHORS_BYTES: Final = 64 << 20


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    hash: str
    time: str | None = None
    """When the node's head was at this record (the receipt says)."""
    received: str | None = None
    """When the authority received it."""
    source: str = ""
    """Where it came from, for messages: ``FILE #3``, ``--expect``."""

    def label(self) -> str:
        at = f", received {self.received}" if self.received else ""
        return f"anchor seq {self.seq} ({self.source}{at})"


def parse_anchor(text: str, source: str = "--expect") -> Anchor:
    """``SEQ:HASH``; ``ValueError`` with a one-line reason otherwise."""
    match = ANCHOR.fullmatch(text.strip().lower())
    if match is None or int(match[1]) < 1:
        raise ValueError(f"{source} {text.strip()[:80]!r}: not SEQ:HASH (a number, 64 hex digits)")
    return Anchor(int(match[1]), match[2], source=source)


def load_anchors(path: Path) -> list[Anchor]:
    """The anchors in ``path`` in file order; ``ValueError`` if it is not an anchors file."""
    with path.open("rb") as file:
        raw = file.read(MAX_ANCHORS_BYTES + 1)
    if len(raw) > MAX_ANCHORS_BYTES:
        raise ValueError(f"{path}: larger than {MAX_ANCHORS_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        return _from_json(path, text)
    anchors = []
    for number, line in enumerate(text.splitlines(), 1):
        content = line.split("#", 1)[0].strip()
        if content:
            anchors.append(parse_anchor(content, f"{path}:{number}"))
    return anchors


def _from_json(path: Path, text: str) -> list[Anchor]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    heads = document.get("heads") if isinstance(document, dict) else None
    if not isinstance(heads, list):
        raise ValueError(f'{path}: no "heads" list (an export of filterd authority heads?)')
    return [_head(path, number, row) for number, row in enumerate(heads, 1)]


def _head(path: Path, number: int, row: Any) -> Anchor:
    where = f"{path} #{number}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not an object")
    seq, digest = row.get("seq"), row.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"{where}: seq missing or not a positive whole number")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{where}: hash missing or not 64 hex digits")
    time, received = row.get("time"), row.get("received_at")
    return Anchor(
        seq,
        digest,
        time if isinstance(time, str) else None,
        received if isinstance(received, str) else None,
        where,
    )


def order_problem(anchors: Sequence[Anchor]) -> str:
    """Why the anchors cannot all come from one trail, or "": two anchors of
    one seq with two hashes mean the trail was rewritten (or restored from
    an old copy and continued) after the first of them was taken. Anchors
    need not arrive in seq order (receipts of several lists cross)."""
    seen: dict[int, Anchor] = {}
    for anchor in anchors:
        earlier = seen.setdefault(anchor.seq, anchor)
        if earlier.hash != anchor.hash:
            return (
                f"{anchor.label()} and {earlier.label()} give two hashes for one record: "
                "the trail was rewritten, or restored from a copy, after it was anchored"
            )
    return ""
