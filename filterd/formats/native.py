"""filterd's own list format: ``NAME KIND CATEGORY [REFERENCE]`` under a ``#filterd-list 1`` header.

The authority publishes in this format (categories and references survive a
sync); semantics in ``docs/list-formats.md``.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Final

from filterd.formats.common import (
    EVERY_LINE,
    NATIVE_HEADER,
    EntryKind,
    Format,
    LineClass,
    ListInput,
    ParsedList,
    ParseOptions,
    Skip,
    entry_name,
    name_pattern,
    read_pieces,
    slow_lines,
)
from filterd.model.rules import Scope


def parse_native(data: ListInput, options: ParseOptions) -> ParsedList:
    """filterd's own format: ``NAME KIND CATEGORY [REFERENCE]``, see docs/list-formats.md.

    Lines already in canonical form (what an authority publishes) are read
    in bulk a chunk at a time; anything else (comments, other case or
    spacing, errors) takes the per-line path."""
    result = ParsedList(Format.NATIVE)
    pieces = read_pieces(data)
    first, _, rest = next(pieces, b"").partition(b"\n")
    if first.strip() != NATIVE_HEADER:
        result.reject(1, f"missing '{NATIVE_HEADER.decode()}' header", first)
        return result
    kinds: dict[tuple[bytes, bytes, bytes], EntryKind] = {}

    def slow(line: bytes, out: ParsedList) -> None:
        _native_slow(line, out, options)

    line_number = 2
    for piece in chain((rest,), pieces):
        text = piece.replace(b"\r\n", b"\n") if b"\r" in piece else piece
        newlines = text.count(b"\n")
        groups: dict[tuple[bytes, bytes, bytes], list[bytes]] = {}
        for name, kind, category, ref in _NATIVE_LINE.good.findall(text):
            groups.setdefault((kind, category, ref), []).append(name)
        try:
            found = [(_native_kind(kinds, key), names) for key, names in groups.items()]
        except UnicodeDecodeError:
            # Rare: a reference that is not UTF-8. Every line of this chunk is
            # judged on its own, so that one is rejected with its line number.
            slow_lines(text, EVERY_LINE, line_number, slow, result)
        else:
            accepted = 0
            for entry_kind, names in found:
                result.group(entry_kind).extend(names)
                accepted += len(names)
            result.accepted += accepted
            if accepted != newlines + (1 if text and not text.endswith(b"\n") else 0):
                slow_lines(text, _NATIVE_LINE, line_number, slow, result)
        line_number += newlines
    return result


def _native_kind(
    kinds: dict[tuple[bytes, bytes, bytes], EntryKind], key: tuple[bytes, bytes, bytes]
) -> EntryKind:
    """The entry kind of a canonical line's (kind, category, reference), made once."""
    entry_kind = kinds.get(key)
    if entry_kind is None:
        kind, category, ref = key
        reference = "" if ref in (b"", b"-") else ref.decode("utf-8")
        scope, allow = NATIVE_KINDS[kind]
        category_text = None if category == b"-" else category.decode()
        entry_kind = kinds[key] = EntryKind(scope, allow, category_text, None, reference)
    return entry_kind


def _native_slow(line: bytes, result: ParsedList, options: ParseOptions) -> None:
    if line.startswith(b"#"):
        return
    kind, name = _native_line(line, options)
    result.add(kind, name)


NATIVE_KINDS: Final = {
    b"block": (Scope.SUBTREE, False),
    b"block-exact": (Scope.EXACT, False),
    b"block-below": (Scope.BELOW, False),
    b"allow": (Scope.SUBTREE, True),
    b"allow-exact": (Scope.EXACT, True),
}
_CATEGORY: Final = re.compile(rb"[a-z0-9][a-z0-9_-]{0,63}")
MAX_REFERENCE_LENGTH: Final = 200
# A native line in canonical form: name, kind, category, optional reference
# (no leading or trailing space; at most 200 bytes here, longer ones and
# anything unusual are judged line by line).
_NATIVE_LINE: Final = LineClass(
    rb"(" + name_pattern(rb"[ \t][^\n]*").replace(rb"$", rb"") + rb")[ \t]+"
    rb"(block|block-exact|block-below|allow|allow-exact)[ \t]+"
    rb"([a-z0-9][a-z0-9_-]{0,63}|-)"
    rb"(?:[ \t]+([^\s](?:[^\n]{0,198}[^\s])?))?"
)


def _native_line(line: bytes, options: ParseOptions) -> tuple[EntryKind, bytes]:
    fields = line.split(None, 3)
    if len(fields) < 3:
        raise Skip("expected NAME KIND CATEGORY [REFERENCE]")
    raw_name, raw_kind, raw_category = fields[0], fields[1].lower(), fields[2].lower()
    spec = NATIVE_KINDS.get(raw_kind)
    if spec is None:
        raise Skip("unknown kind (block, block-exact, block-below, allow, allow-exact)")
    if raw_category == b"-":
        category = None
    elif _CATEGORY.fullmatch(raw_category):
        category = raw_category.decode("ascii")
    else:
        raise Skip("category must match [a-z0-9][a-z0-9_-]* or be '-'")
    ref = ""
    if len(fields) == 4:
        try:
            # ASCII white space only, as the bulk path's pattern trims.
            ref = fields[3].strip().decode("utf-8")
        except UnicodeDecodeError:
            raise Skip("reference is not valid UTF-8") from None
        if ref == "-":
            ref = ""  # as on the bulk path: "-" is no reference
        if len(ref.encode()) > MAX_REFERENCE_LENGTH:
            raise Skip("reference longer than 200 bytes (UTF-8)")
    if raw_name.startswith(b"*"):
        raise Skip("wildcards are written as kind 'block-below', not '*.'")
    scope, allow = spec
    return EntryKind(scope, allow, category, None, ref), entry_name(raw_name, options)
