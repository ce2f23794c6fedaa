"""Response Policy Zones (draft-vixie-dnsop-dns-rpz): zone-file records in, rules out.

``CNAME .`` is NXDOMAIN, ``CNAME *.`` NODATA, ``rpz-passthru.`` allow and
``rpz-drop.`` drop; ``*.name`` matches subdomains only. Triggers that are not
QNAME triggers (rpz-ip, rpz-nsdname, ...) are valid syntax that filterd does
not enforce: they are counted as ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from filterd.formats.common import (
    EntryKind,
    Format,
    ListInput,
    ParsedList,
    ParseOptions,
    Skip,
    entry_name,
    name_pattern,
    read_chunks,
)
from filterd.model.rules import Action, Scope

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
    + name_pattern(_RPZ_POLICY + rb"(?:" + _RPZ_TARGETS + rb")[ \t]*")
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
                raise Skip("policy record at the zone apex")
            kind, name = _rpz_record(trigger, rtype, rdata, options)
        except Skip as skip:
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
                raise Skip("absolute owner name without $ORIGIN")
            full = owner[:-1]
        else:
            full = owner + b"." + self.origin if self.origin else owner
        apex = self.apex
        if apex is None:
            return full or None
        if full == apex:
            return None
        if not full.endswith(b"." + apex):
            raise Skip("absolute owner name outside $ORIGIN")
        return full[: -len(apex) - 1]


def _rpz_record(
    trigger: bytes, rtype: bytes, rdata: list[bytes], options: ParseOptions
) -> tuple[EntryKind, bytes]:
    last_label = trigger.rsplit(b".", 1)[-1]
    if last_label in _RPZ_UNSUPPORTED_TRIGGERS:
        raise Skip(f"{last_label.decode()} trigger", ignored=True)
    if rtype != b"cname":
        raise Skip("local-data record", ignored=True)
    if len(rdata) != 1:
        raise Skip("CNAME without a single target")
    target = rdata[0]
    spec = _RPZ_ACTIONS.get(target)
    if spec is None:
        if target == b"rpz-tcp-only.":
            raise Skip("rpz-tcp-only action", ignored=True)
        raise Skip("CNAME rewrite to another name", ignored=True)
    action, allow = spec
    scope = Scope.EXACT
    if trigger.startswith(b"*."):
        trigger, scope = trigger[2:], Scope.BELOW
    return EntryKind(scope, allow, None, action), entry_name(trigger, options)


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
    for chunk in read_chunks(data):
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
