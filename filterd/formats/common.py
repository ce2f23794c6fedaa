"""What every list format shares: the parse result, its accounting, and the bulk driver.

A parser's contract (see ``filterd.formats``): bytes in, a ``ParsedList`` out
whose ``groups`` map an ``EntryKind`` (scope, allow/block, category, action,
reference) to the canonical names carrying it. Nothing raises on bad content:
every data line is either accepted, *invalid* (malformed, reported with its
line number and reason) or *ignored* (valid syntax of that format that
filterd does not enforce at the DNS level). ``accepted + invalid + ignored``
equals the number of data lines, so a list's accounting can always be
checked.

The common case is made fast here: a whole line that already is a canonical
name (or a ``0.0.0.0 name`` hosts line, or a ``||name^`` rule) is recognised
by one compiled regular expression applied to a whole chunk (``LineClass``,
``parse_in_bulk``); only the remaining lines take the per-line path.
"""

from __future__ import annotations

import io
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from filterd.formats.names import Names
from filterd.model.rules import Action, Scope
from filterd.wire.names import InvalidName, normalise

MAX_REPORTED_PROBLEMS: Final = 50


def name_pattern(tail: bytes) -> bytes:
    """A canonical multi-label name followed by ``tail`` and the end of the line:
    at most 253 characters, labels of 1-63 ``[a-z0-9_-]``, last label not numeric."""
    return (
        rb"(?=[^\n]{1,253}" + tail + rb"$)(?:[a-z0-9_-]{1,63}\.)+(?![0-9]+" + tail + rb"$)"
        rb"[a-z0-9_-]{1,63}"
    )


class LineClass:
    """A line shape accepted in bulk: ``good`` finds the names of all lines
    that have it, ``other`` every line that does not (for the per-line path).
    Both scan the whole buffer inside the regex engine: per-line ``re`` calls
    cost about a microsecond each, which is most of a million-line parse."""

    def __init__(self, line: bytes) -> None:
        self.good = re.compile(rb"(?m)^" + line + rb"$")
        self.other = re.compile(rb"(?m)^(?!" + line + rb"$).*$")


DOMAIN_LINE: Final = LineClass(name_pattern(b""))
EVERY_LINE: Final = LineClass(rb"(?!)")  # no line has this shape: all go per line
HOSTS_LINE: Final = LineClass(
    # localhost.localdomain is preamble, not a block: it takes the per-line path.
    rb"(?:0\.0\.0\.0|127\.0\.0\.1)[ \t]+(?!localhost\.localdomain[ \t]*$)("
    + name_pattern(rb"[ \t]*")
    + rb")[ \t]*"
)
ADBLOCK_LINE: Final = LineClass(rb"\|\|(" + name_pattern(rb"\^\|?") + rb")\^\|?")


class Format(StrEnum):
    DOMAINS = "domains"
    HOSTS = "hosts"
    ADBLOCK = "adblock"
    RPZ = "rpz"
    NATIVE = "native"


NATIVE_HEADER: Final = b"#filterd-list 1"


@dataclass(frozen=True, slots=True, order=True)
class EntryKind:
    """What a group of entries means; ``category`` ``None`` takes the list's default."""

    scope: Scope
    allow: bool = False
    category: str | None = None
    action: Action | None = None
    ref: str = ""


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """Per-list parsing choices (see the ``lists`` section of the configuration)."""

    path: str
    """Name used in problem reports (``path:line``)."""
    plain_scope: Scope = Scope.SUBTREE
    """What a bare name means in domains and hosts lists (``subtree`` or ``exact``)."""
    allow_tld: bool = False
    """Accept single-label entries, which block a whole top-level domain."""
    join_rpz_pairs: bool = False
    """Store ``x CNAME t`` next to ``*.x CNAME t`` as one subtree entry (the
    compiler: half the entries, same meaning). Off where every record must
    stay a rule of its own, as in ``filterd probe``, which probes each."""


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    reason: str
    text: str

    def describe(self, path: str) -> str:
        return f"{path}:{self.line}: {self.reason}: {self.text[:80]!r}"


@dataclass(slots=True)
class ParsedList:
    """The outcome of parsing one list."""

    format: Format
    groups: dict[EntryKind, Names] = field(default_factory=dict)
    accepted: int = 0
    invalid: int = 0
    ignored: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    """The first ``MAX_REPORTED_PROBLEMS`` invalid or ignored lines, in order."""

    @property
    def entries(self) -> int:
        """Data lines seen (comments and blank lines excluded)."""
        return self.accepted + self.invalid + self.ignored

    @property
    def names(self) -> int:
        """Names produced (a hosts line may name several)."""
        return sum(map(len, self.groups.values()))

    def group(self, kind: EntryKind) -> Names:
        """The names of ``kind`` so far (created empty on first use)."""
        names = self.groups.get(kind)
        if names is None:
            names = self.groups[kind] = Names()
        return names

    def add(self, kind: EntryKind, name: bytes) -> None:
        """Accept one data line that produced ``name``."""
        self.group(kind).append(name)
        self.accepted += 1

    def reject(self, line: int, reason: str, text: bytes, *, ignored: bool = False) -> None:
        if ignored:
            self.ignored += 1
        else:
            self.invalid += 1
        self.reasons[reason] += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(Problem(line, reason, text.decode("utf-8", "replace")))


class Skip(Exception):
    """Raised inside a line handler: the line is rejected for ``reason``."""

    def __init__(self, reason: str, *, ignored: bool = False) -> None:
        self.reason = reason
        self.ignored = ignored


# ---------------------------------------------------------------- detection


_ZONE_RECORD: Final = re.compile(rb"\s(?:soa|cname)\s")


FORMAT_HEAD: Final = 65536


def detect_format(data: bytes) -> Format:
    """Guess a list's format from its first data lines (``format: auto``):
    only the first ``FORMAT_HEAD`` bytes are looked at."""
    head = data[:FORMAT_HEAD]
    if head.split(b"\n", 1)[0].strip() == NATIVE_HEADER:
        return Format.NATIVE
    lines = [line.strip() for line in head.lower().splitlines()]
    data_lines = [line for line in lines if line and not line.startswith((b"#", b";"))][:200]
    if any(line.startswith((b"[adblock", b"!")) for line in lines[:5]) or any(
        line.startswith((b"||", b"@@")) for line in data_lines
    ):
        return Format.ADBLOCK
    if any(
        line.startswith((b"$ttl", b"$origin")) or _ZONE_RECORD.search(line) is not None
        for line in data_lines
    ):
        return Format.RPZ
    tokens = [line.split() for line in data_lines if not line.startswith(b"!")]
    if tokens and sum(len(t) >= 2 and is_ip(t[0]) for t in tokens) * 2 > len(tokens):
        return Format.HOSTS
    return Format.DOMAINS


def is_ip(token: bytes) -> bool:
    try:
        ipaddress.ip_address(token.split(b"%", 1)[0].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


# ---------------------------------------------------------------- dispatch


class Readable(Protocol):
    """What a list is read from: a file opened in binary mode, or a wrapper."""

    def read(self, size: int = -1, /) -> bytes: ...


ListInput = bytes | Readable
"""A whole list: its bytes, or a binary file read a chunk at a time (the
compiler streams list files, so a large list is never in memory whole)."""


def entry_name(raw: bytes, options: ParseOptions) -> bytes:
    """Normalise one name taken from a list line, enforcing the TLD opt-in."""
    try:
        name = normalise(raw)
    except InvalidName as exc:
        raise Skip(str(exc)) from None
    if b"." not in name and not options.allow_tld:
        raise Skip("single-label name would block a whole top-level domain (allow_tld: false)")
    return name


def parse_in_bulk(
    data: ListInput,
    fmt: Format,
    shape: LineClass,
    fast_kind: EntryKind,
    slow: Callable[[bytes, ParsedList], None],
) -> ParsedList:
    """Shared driver: lines of ``shape`` are accepted in bulk, the rest go to ``slow``.

    ``slow(line, result)`` gets one line with surrounding white space removed;
    it ignores comments and blank lines, adds entries, or raises ``Skip``.
    """
    result = ParsedList(fmt)
    first_line = 1
    for text in read_chunks(data):
        names: list[bytes] = shape.good.findall(text)
        if names:
            result.group(fast_kind).extend(names)
            result.accepted += len(names)
        newlines = text.count(b"\n")
        lines = newlines + (1 if text and not text.endswith(b"\n") else 0)
        if len(names) != lines:
            slow_lines(text, shape, first_line, slow, result)
        first_line += newlines
    return result


CHUNK_BYTES: Final = 4 << 20


def read_pieces(data: ListInput) -> Iterator[bytes]:
    """``data`` as it is, in pieces of at most ``CHUNK_BYTES`` that end at a
    line end (unless a line is longer, and the last one); a file is read one
    piece at a time, bytes are read the same way (``BytesIO`` shares them)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    unfinished: list[bytes] = []  # the start of a line longer than a piece
    while block := source.read(CHUNK_BYTES):
        cut = block.rfind(b"\n")
        if cut < 0:
            unfinished.append(block)
            continue
        head = block[: cut + 1]
        yield b"".join((*unfinished, head)) if unfinished else head
        unfinished = [block[cut + 1 :]] if cut + 1 < len(block) else []
    if unfinished:
        yield b"".join(unfinished)


def read_chunks(data: ListInput) -> Iterator[bytes]:
    """``data`` lower-cased, with CRLF as LF, a piece at a time: a lower-cased
    copy of a whole large list would double the compiler's memory peak for
    nothing."""
    for piece in read_pieces(data):
        text = piece.lower()
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n")
        yield text


def slow_lines(
    text: bytes,
    shape: LineClass,
    first_line: int,
    slow: Callable[[bytes, ParsedList], None],
    result: ParsedList,
) -> None:
    """Run ``slow`` over every line of ``text`` not of ``shape``."""
    line_number = first_line
    position = 0
    for match in shape.other.finditer(text):
        line_number += text.count(b"\n", position, match.start())
        position = match.start()
        raw = match.group()
        line = raw.strip()
        if not line:
            continue
        try:
            slow(line, result)
        except Skip as skip:
            result.reject(line_number, skip.reason, raw, ignored=skip.ignored)


def strip_comment(line: bytes) -> bytes:
    """Drop a ``#`` comment (full-line or inline) and surrounding white space."""
    hash_at = line.find(b"#")
    if hash_at >= 0:
        line = line[:hash_at]
    return line.strip()
