"""Blocklist formats: bytes in, canonical names grouped by meaning out.

One function per format, all with the same contract: ``parse(data, options)``
returns a ``ParsedList`` whose ``groups`` map an ``EntryKind`` (scope,
allow/block, category, action, reference) to the canonical names carrying
it. Nothing here raises on bad content: every data line is either accepted,
*invalid* (malformed, reported with its line number and reason) or *ignored*
(valid syntax of that format that filterd does not enforce at the DNS level,
reported the same way). ``accepted + invalid + ignored`` equals the number of
data lines, so a list's accounting can always be checked.

The common case is made fast: a whole line that already is a canonical name
(or a ``0.0.0.0 name`` hosts line, or a ``||name^`` rule) is recognised by one
compiled regular expression applied with ``map``; only the remaining lines
take the per-line path. Semantics of each format are documented in
``docs/list-formats.md``.
"""

from __future__ import annotations

import io
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain
from typing import Final, Protocol

from filterd.lists.names import Names
from filterd.matching.rules import Action, Scope
from filterd.wire.names import InvalidName, normalise

MAX_REPORTED_PROBLEMS: Final = 50


def _name_pattern(tail: bytes) -> bytes:
    """A canonical multi-label name followed by ``tail`` and the end of the line:
    at most 253 characters, labels of 1-63 ``[a-z0-9_-]``, last label not numeric."""
    return (
        rb"(?=[^\n]{1,253}" + tail + rb"$)(?:[a-z0-9_-]{1,63}\.)+(?![0-9]+" + tail + rb"$)"
        rb"[a-z0-9_-]{1,63}"
    )


class _LineClass:
    """A line shape accepted in bulk: ``good`` finds the names of all lines
    that have it, ``other`` every line that does not (for the per-line path).
    Both scan the whole buffer inside the regex engine: per-line ``re`` calls
    cost about a microsecond each, which is most of a million-line parse."""

    def __init__(self, line: bytes) -> None:
        self.good = re.compile(rb"(?m)^" + line + rb"$")
        self.other = re.compile(rb"(?m)^(?!" + line + rb"$).*$")


_DOMAIN_LINE: Final = _LineClass(_name_pattern(b""))
_EVERY_LINE: Final = _LineClass(rb"(?!)")  # no line has this shape: all go per line
_HOSTS_LINE: Final = _LineClass(
    # localhost.localdomain is preamble, not a block: it takes the per-line path.
    rb"(?:0\.0\.0\.0|127\.0\.0\.1)[ \t]+(?!localhost\.localdomain[ \t]*$)("
    + _name_pattern(rb"[ \t]*")
    + rb")[ \t]*"
)
_ADBLOCK_LINE: Final = _LineClass(rb"\|\|(" + _name_pattern(rb"\^\|?") + rb")\^\|?")


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


class _Skip(Exception):
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
    if tokens and sum(len(t) >= 2 and _is_ip(t[0]) for t in tokens) * 2 > len(tokens):
        return Format.HOSTS
    return Format.DOMAINS


def _is_ip(token: bytes) -> bool:
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


def parse(data: ListInput, fmt: Format, options: ParseOptions) -> ParsedList:
    """Parse ``data`` (a whole list file) in format ``fmt``."""
    return _PARSERS[fmt](data, options)


def _name(raw: bytes, options: ParseOptions) -> bytes:
    """Normalise one name taken from a list line, enforcing the TLD opt-in."""
    try:
        name = normalise(raw)
    except InvalidName as exc:
        raise _Skip(str(exc)) from None
    if b"." not in name and not options.allow_tld:
        raise _Skip("single-label name would block a whole top-level domain (allow_tld: false)")
    return name


def _bulk(
    data: ListInput,
    fmt: Format,
    shape: _LineClass,
    fast_kind: EntryKind,
    slow: Callable[[bytes, ParsedList], None],
) -> ParsedList:
    """Shared driver: lines of ``shape`` are accepted in bulk, the rest go to ``slow``.

    ``slow(line, result)`` gets one line with surrounding white space removed;
    it ignores comments and blank lines, adds entries, or raises ``_Skip``.
    """
    result = ParsedList(fmt)
    first_line = 1
    for text in _chunks(data):
        names: list[bytes] = shape.good.findall(text)
        if names:
            result.group(fast_kind).extend(names)
            result.accepted += len(names)
        newlines = text.count(b"\n")
        lines = newlines + (1 if text and not text.endswith(b"\n") else 0)
        if len(names) != lines:
            _slow_lines(text, shape, first_line, slow, result)
        first_line += newlines
    return result


CHUNK_BYTES: Final = 4 << 20


def _pieces(data: ListInput) -> Iterator[bytes]:
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


def _chunks(data: ListInput) -> Iterator[bytes]:
    """``data`` lower-cased, with CRLF as LF, a piece at a time: a lower-cased
    copy of a whole large list would double the compiler's memory peak for
    nothing."""
    for piece in _pieces(data):
        text = piece.lower()
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n")
        yield text


def _slow_lines(
    text: bytes,
    shape: _LineClass,
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
        except _Skip as skip:
            result.reject(line_number, skip.reason, raw, ignored=skip.ignored)


def _strip_comment(line: bytes) -> bytes:
    """Drop a ``#`` comment (full-line or inline) and surrounding white space."""
    hash_at = line.find(b"#")
    if hash_at >= 0:
        line = line[:hash_at]
    return line.strip()


# ---------------------------------------------------------------- domains


def parse_domains(data: ListInput, options: ParseOptions) -> ParsedList:
    """One name per line; ``*.name`` and ``.name`` mean the name and its subdomains."""
    plain = EntryKind(options.plain_scope)
    subtree = EntryKind(Scope.SUBTREE)

    def slow(line: bytes, result: ParsedList) -> None:
        tokens = _strip_comment(line).split()
        if not tokens:
            return
        if len(tokens) != 1:
            raise _Skip("more than one token on the line")
        token = tokens[0]
        kind = plain
        if token.startswith(b"*."):
            token, kind = token[2:], subtree
        elif token.startswith(b".") and not token.startswith(b".."):
            kind = subtree
        result.add(kind, _name(token, options))

    return _bulk(data, Format.DOMAINS, _DOMAIN_LINE, plain, slow)


# ---------------------------------------------------------------- hosts

_HOSTS_PREAMBLE: Final = frozenset(
    {
        b"localhost",
        b"localhost.localdomain",
        b"local",
        b"broadcasthost",
        b"ip6-localhost",
        b"ip6-loopback",
        b"ip6-localnet",
        b"ip6-mcastprefix",
        b"ip6-allnodes",
        b"ip6-allrouters",
        b"ip6-allhosts",
        b"0.0.0.0",
    }
)


def parse_hosts(data: ListInput, options: ParseOptions) -> ParsedList:
    """``ADDRESS name [name ...]``: every name is blocked, whatever the address.

    The usual ``/etc/hosts`` preamble (``localhost``, ``broadcasthost``,
    ``ip6-*``, ``0.0.0.0 0.0.0.0``) is ignored, never turned into blocks.
    """
    plain = EntryKind(options.plain_scope)

    def slow(line: bytes, result: ParsedList) -> None:
        tokens = _strip_comment(line).split()
        if not tokens:
            return
        if not _is_ip(tokens[0]):
            raise _Skip("first field is not an IP address")
        if len(tokens) < 2:
            raise _Skip("address without a name")
        names = []
        for token in tokens[1:]:
            if token in _HOSTS_PREAMBLE:
                raise _Skip("hosts-file preamble entry", ignored=True)
            names.append(_name(token, options))
        # Accounting is per line: extra names on the line join the same group.
        result.add(plain, names[0])
        result.group(plain).extend(names[1:])

    return _bulk(data, Format.HOSTS, _HOSTS_LINE, plain, slow)


# ---------------------------------------------------------------- adblock

_ADBLOCK_RULE: Final = re.compile(rb"(@@)?\|\|([^\^$/:*|]+)\^?\|?(?:\$(.*))?")


def parse_adblock(data: ListInput, options: ParseOptions) -> ParsedList:
    """AdBlock/AdGuard DNS rules: ``||name^`` blocks, ``@@||name^`` allows (name and
    subdomains). Everything that needs more than a host name is ignored and
    reported: modifiers other than ``$important``, paths, ports, schemes,
    globs, regular expressions, cosmetic rules and bare names without ``||``.
    """
    block = EntryKind(Scope.SUBTREE)
    allow = EntryKind(Scope.SUBTREE, allow=True)

    def slow(line: bytes, result: ParsedList) -> None:
        if line.startswith((b"!", b"[")) or (
            line.startswith(b"#") and not line.startswith((b"##", b"#@#", b"#?#"))
        ):
            return
        if b"##" in line or b"#@#" in line or b"#?#" in line:
            raise _Skip("cosmetic rule", ignored=True)
        match = _ADBLOCK_RULE.fullmatch(line)
        if match is None:
            raise _Skip(_adblock_unsupported(line), ignored=True)
        exception, host, modifiers = match.groups()
        if modifiers is not None and modifiers != b"important":
            raise _Skip("rule modifiers other than $important", ignored=True)
        if host.endswith(b"."):
            raise _Skip("'||name.' (any top-level domain) rule", ignored=True)
        if _is_ip(host):
            raise _Skip("IP address rule", ignored=True)
        result.add(allow if exception else block, _name(host, options))

    return _bulk(data, Format.ADBLOCK, _ADBLOCK_LINE, block, slow)


def _adblock_unsupported(line: bytes) -> str:
    if line.startswith(b"/") and line.endswith(b"/"):
        return "regular-expression rule"
    if line.startswith((b"|http", b"|https", b"http")) or b"://" in line:
        return "URL rule with a scheme"
    if b"*" in line:
        return "wildcard inside a rule"
    if b"/" in line:
        return "rule with a path"
    if b":" in line:
        return "rule with a port"
    if line.startswith(b"||") is False and line.startswith(b"@@") is False:
        return "rule without '||' anchor"
    return "unsupported rule syntax"


# ---------------------------------------------------------------- native


def parse_native(data: ListInput, options: ParseOptions) -> ParsedList:
    """filterd's own format: ``NAME KIND CATEGORY [REFERENCE]``, see docs/list-formats.md.

    Lines already in canonical form (what an authority publishes) are read
    in bulk a chunk at a time; anything else (comments, other case or
    spacing, errors) takes the per-line path."""
    result = ParsedList(Format.NATIVE)
    pieces = _pieces(data)
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
            _slow_lines(text, _EVERY_LINE, line_number, slow, result)
        else:
            accepted = 0
            for entry_kind, names in found:
                result.group(entry_kind).extend(names)
                accepted += len(names)
            result.accepted += accepted
            if accepted != newlines + (1 if text and not text.endswith(b"\n") else 0):
                _slow_lines(text, _NATIVE_LINE, line_number, slow, result)
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
_NATIVE_LINE: Final = _LineClass(
    rb"(" + _name_pattern(rb"[ \t][^\n]*").replace(rb"$", rb"") + rb")[ \t]+"
    rb"(block|block-exact|block-below|allow|allow-exact)[ \t]+"
    rb"([a-z0-9][a-z0-9_-]{0,63}|-)"
    rb"(?:[ \t]+([^\s](?:[^\n]{0,198}[^\s])?))?"
)


def _native_line(line: bytes, options: ParseOptions) -> tuple[EntryKind, bytes]:
    fields = line.split(None, 3)
    if len(fields) < 3:
        raise _Skip("expected NAME KIND CATEGORY [REFERENCE]")
    raw_name, raw_kind, raw_category = fields[0], fields[1].lower(), fields[2].lower()
    spec = NATIVE_KINDS.get(raw_kind)
    if spec is None:
        raise _Skip("unknown kind (block, block-exact, block-below, allow, allow-exact)")
    if raw_category == b"-":
        category = None
    elif _CATEGORY.fullmatch(raw_category):
        category = raw_category.decode("ascii")
    else:
        raise _Skip("category must match [a-z0-9][a-z0-9_-]* or be '-'")
    ref = ""
    if len(fields) == 4:
        try:
            # ASCII white space only, as the bulk path's pattern trims.
            ref = fields[3].strip().decode("utf-8")
        except UnicodeDecodeError:
            raise _Skip("reference is not valid UTF-8") from None
        if ref == "-":
            ref = ""  # as on the bulk path: "-" is no reference
        if len(ref.encode()) > MAX_REFERENCE_LENGTH:
            raise _Skip("reference longer than 200 bytes (UTF-8)")
    if raw_name.startswith(b"*"):
        raise _Skip("wildcards are written as kind 'block-below', not '*.'")
    scope, allow = spec
    return EntryKind(scope, allow, category, None, ref), _name(raw_name, options)


# ---------------------------------------------------------------- RPZ

_RPZ_ACTIONS: Final = {
    b".": (Action.NXDOMAIN, False),
    b"*.": (Action.NODATA, False),
    b"rpz-passthru.": (None, True),
    b"rpz-drop.": (Action.DROP, False),
}
_RPZ_UNSUPPORTED_TRIGGERS: Final = (b"rpz-ip", b"rpz-nsdname", b"rpz-nsip", b"rpz-client-ip")
_RR_CLASSES: Final = frozenset({b"in", b"ch", b"hs", b"cs"})
_RPZ_POLICY: Final = rb"[ \t]+(?:[0-9]+[ \t]+)?(?:in[ \t]+)?cname[ \t]+"
_RPZ_TARGETS: Final = rb"\.|\*\.|rpz-passthru\.|rpz-drop\."
# A QNAME trigger in canonical form with one of the four policy targets: what
# nearly every line of a large policy zone looks like, taken without the
# general record walk (which costs about ten times as much per line).
_RPZ_FAST: Final = re.compile(
    rb"(\*\.)?("
    + _name_pattern(_RPZ_POLICY + rb"(?:" + _RPZ_TARGETS + rb")[ \t]*")
    + rb")"
    + _RPZ_POLICY
    + rb"("
    + _RPZ_TARGETS
    + rb")[ \t]*"
)
_RPZ_FAST_KINDS: Final = {
    (scope, target): EntryKind(scope, allow, None, action)
    for scope in (Scope.EXACT, Scope.BELOW, Scope.SUBTREE)
    for target, (action, allow) in _RPZ_ACTIONS.items()
}


def parse_rpz(data: ListInput, options: ParseOptions) -> ParsedList:
    """Response Policy Zone (draft-vixie-dnsop-dns-rpz) QNAME triggers.

    ``name CNAME .`` is NXDOMAIN, ``CNAME *.`` NODATA, ``CNAME rpz-passthru.``
    an allow, ``CNAME rpz-drop.`` a drop; ``*.name`` owners match subdomains
    only. SOA/NS apex records are zone structure, not entries. IP, NSDNAME,
    NSIP and client-IP triggers and local-data records (A, AAAA, TXT, CNAME to
    another name) are ignored and reported.

    With ``options.join_rpz_pairs``, ``x CNAME target`` and ``*.x CNAME
    target`` on adjacent lines (how policy zones usually block a name with its
    subdomains) become one entry for ``x`` and everything below it: the same
    meaning, in half the entries.
    """
    result = ParsedList(Format.RPZ)
    zone = _ZoneNames()
    owner = b"@"
    unsupported = tuple(b"." + trigger for trigger in _RPZ_UNSUPPORTED_TRIGGERS)
    # Quick records are collected per (scope, target) and handed over in
    # batches, always before a record of the general path; ``batched``
    # counts records (a joined pair is two records and one name).
    batch: dict[tuple[Scope, bytes], list[bytes]] = {}
    batched = 0
    join_pairs = options.join_rpz_pairs
    last_quick: _Quick | None = None

    def flush() -> None:
        nonlocal batched
        for key, names in batch.items():
            if names:
                result.group(_RPZ_FAST_KINDS[key]).extend(names)
        result.accepted += batched
        batch.clear()
        batched = 0

    def add_quick(star: bool, name: bytes, target: bytes) -> None:
        nonlocal batched, last_quick
        scope = Scope.BELOW if star else Scope.EXACT
        if (
            join_pairs
            and last_quick is not None
            and last_quick[0] is not star  # one record with "*.", one without
            and last_quick[1] == name
            and last_quick[2] == target
        ):
            other = batch.get((Scope.EXACT if star else Scope.BELOW, target))
            if other and other[-1] == name:
                other.pop()
                scope = Scope.SUBTREE
        names = batch.get((scope, target))
        if names is None:
            names = batch[scope, target] = []
        names.append(name)
        last_quick = (star, name, target)
        batched += 1
        if batched >= 65536:
            flush()

    for number, text, quick in _rpz_records(data):
        if (
            quick is not None
            and zone.origin == (zone.apex or b"")  # a relative owner is its own trigger
            and not quick[1].endswith(unsupported)
        ):
            add_quick(*quick)
            continue
        if batched:
            flush()
        if last_quick is not None:  # the owner a continuation line refers to
            owner = (b"*." if last_quick[0] else b"") + last_quick[1]
            last_quick = None
        if text.startswith(b"$"):
            directive = text.split()
            if directive[0] == b"$origin" and len(directive) == 2:
                zone.set_origin(directive[1])
            elif directive[0] != b"$ttl":
                result.reject(number, "unsupported zone directive", text)
            continue
        fields = text.split()
        if text[:1] in b" \t":
            fields.insert(0, owner)
        owner = fields[0]
        # Owner [TTL] [CLASS] TYPE RDATA: TTL and class may come in either order.
        rtype_at = 1
        while rtype_at < len(fields) and (
            _TTL.fullmatch(fields[rtype_at]) or fields[rtype_at] in _RR_CLASSES
        ):
            rtype_at += 1
        if rtype_at >= len(fields):
            result.reject(number, "record without a type", text)
            continue
        rtype, rdata = fields[rtype_at], fields[rtype_at + 1 :]
        if rtype in (b"soa", b"ns"):
            continue  # zone structure, not policy
        try:
            trigger = zone.trigger(owner)
            if trigger is None:
                raise _Skip("policy record at the zone apex")
            kind, name = _rpz_record(trigger, rtype, rdata, options)
        except _Skip as skip:
            result.reject(number, skip.reason, text, ignored=skip.ignored)
            continue
        result.add(kind, name)
    flush()
    return result


# A TTL is seconds, or BIND's units: "3600", "1h", "1d2h" (RFC 1035 §5.1, BIND).
_TTL: Final = re.compile(rb"(?:[0-9]+[wdhms]?)+")


class _ZoneNames:
    """Owner names of a policy zone, made relative to its apex.

    The apex is the first ``$ORIGIN``; later ``$ORIGIN`` lines (absolute, or
    relative to the current origin) change what relative owners are relative
    to (RFC 1035 §5.1). Without any ``$ORIGIN`` the apex is unknown and owner
    names are taken as written relative to it.
    """

    def __init__(self) -> None:
        self.apex: bytes | None = None
        self.origin = b""

    def set_origin(self, value: bytes) -> None:
        if value.endswith(b"."):
            origin = value[:-1]
        else:
            origin = value + b"." + self.origin if self.origin else value
        if self.apex is None:
            self.apex = origin
        self.origin = origin

    def trigger(self, owner: bytes) -> bytes | None:
        """The trigger name of ``owner`` relative to the apex; ``None`` for the apex."""
        if owner == b"@":
            full = self.origin
        elif owner.endswith(b"."):
            if self.apex is None:
                raise _Skip("absolute owner name without $ORIGIN")
            full = owner[:-1]
        else:
            full = owner + b"." + self.origin if self.origin else owner
        apex = self.apex
        if apex is None:
            return full or None
        if full == apex:
            return None
        if not full.endswith(b"." + apex):
            raise _Skip("absolute owner name outside $ORIGIN")
        return full[: -len(apex) - 1]


def _rpz_record(
    trigger: bytes, rtype: bytes, rdata: list[bytes], options: ParseOptions
) -> tuple[EntryKind, bytes]:
    last_label = trigger.rsplit(b".", 1)[-1]
    if last_label in _RPZ_UNSUPPORTED_TRIGGERS:
        raise _Skip(f"{last_label.decode()} trigger", ignored=True)
    if rtype != b"cname":
        raise _Skip("local-data record", ignored=True)
    if len(rdata) != 1:
        raise _Skip("CNAME without a single target")
    target = rdata[0]
    spec = _RPZ_ACTIONS.get(target)
    if spec is None:
        if target == b"rpz-tcp-only.":
            raise _Skip("rpz-tcp-only action", ignored=True)
        raise _Skip("CNAME rewrite to another name", ignored=True)
    action, allow = spec
    scope = Scope.EXACT
    if trigger.startswith(b"*."):
        trigger, scope = trigger[2:], Scope.BELOW
    return EntryKind(scope, allow, None, action), _name(trigger, options)


_Quick = tuple[bool, bytes, bytes]
"""A one-line QNAME policy in canonical form: (owner has "*.", name, target)."""
_Record = tuple[int, bytes, _Quick | None]
"""(first line number, record text, the quick form if the record has it)."""


def _rpz_records(data: ListInput) -> Iterator[_Record]:
    """Yield records (first line number, record text, quick form) with
    comments removed and parenthesised continuations joined (RFC 1035 §5.1),
    lower-cased a chunk at a time."""
    pending: list[bytes] = []
    start = 0
    depth = 0
    number = 0
    for chunk in _chunks(data):
        for raw in chunk.splitlines():
            number += 1
            if not pending:
                match = _RPZ_FAST.fullmatch(raw)
                if match is not None:
                    yield number, raw, (match[1] is not None, match[2], match[3])
                    continue
            line = _strip_zone_comment(raw).rstrip()
            if not line.strip():
                continue
            if not pending:
                start = number
            pending.append(line)
            depth += line.count(b"(") - line.count(b")")
            if depth > 0:
                continue
            depth = 0
            text = b" ".join(pending).replace(b"(", b" ").replace(b")", b" ")
            if pending[0][:1] in b" \t":
                text = b" " + text.lstrip()
            pending = []
            yield start, text, None
    if pending:
        yield start, b" ".join(pending), None


def _strip_zone_comment(line: bytes) -> bytes:
    if b";" not in line:
        return line
    quoted = False
    for i, char in enumerate(line):
        if char == 0x22:
            quoted = not quoted
        elif char == 0x3B and not quoted:
            return line[:i]
    return line


_PARSERS: Final[dict[Format, Callable[[ListInput, ParseOptions], ParsedList]]] = {
    Format.DOMAINS: parse_domains,
    Format.HOSTS: parse_hosts,
    Format.ADBLOCK: parse_adblock,
    Format.RPZ: parse_rpz,
    Format.NATIVE: parse_native,
}
