"""Reading an upstream response once, on the cache-miss path.

``inspect_response`` walks every record of the message with integer
indexing (no dnslib objects) and returns what the cache and the policy
need: the rcode and TC bit, where each TTL field sits (so a cache hit can
decrement TTLs in place), the TTL the answer may be cached for, the CNAME
targets (so policy can re-check names the answer leads to) and the span of
the upstream's OPT record (which is replaced by filterd's own).

Caching rules applied:
- positive answers live for the smallest TTL of the message's records
  (RFC 2181 §5.2 gives one TTL per RRset; the message lives as long as its
  shortest-lived part);
- negative answers (NXDOMAIN, or NOERROR without answers) live for
  min(SOA TTL, SOA MINIMUM) from the authority section, and are not cached
  at all without an SOA (RFC 2308 §5);
- truncated answers are never cached; other rcodes are not cached.

A message is refused (``BadResponse``: the client gets SERVFAIL, nothing is
cached) unless it is well formed to its last byte: records end where the
message ends (no trailing bytes, RFC 1035 §4.1), compression pointers point
back into the message before them (§4.1.4), and the rdata of the types whose
layout is fixed has that layout: 4 octets for A, 16 for AAAA (RFC 3596),
exactly one name for CNAME, NS, PTR and DNAME, a preference and a name for
MX, two names and 20 octets for SOA, three numbers and a name for SRV
(RFC 2782), and character-strings that fill TXT exactly. A record of another
type is passed through as the upstream sent it. Without these checks an
answer with an A record of 3 octets, or junk after its last record, was
cached for its TTL, and every client failed to parse it until it expired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from filterd.wire.codes import (
    NOERROR,
    NXDOMAIN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_DNAME,
    TYPE_MX,
    TYPE_NS,
    TYPE_OPT,
    TYPE_SOA,
    TYPE_SRV,
    TYPE_TXT,
)

MAX_POINTER_HOPS: Final = 64
TYPE_PTR: Final = 12
_FIXED_SIZE: Final = {TYPE_A: 4, TYPE_AAAA: 16}
_NAME_AFTER: Final = {
    TYPE_CNAME: 0,
    TYPE_NS: 0,
    TYPE_PTR: 0,
    TYPE_DNAME: 0,
    TYPE_MX: 2,
    TYPE_SRV: 6,
}
"""Types whose rdata is octets (this many) and then one name that ends it."""


class BadResponse(ValueError):
    """The upstream message is malformed or does not answer our question."""


@dataclass(slots=True)
class ResponseInfo:
    rcode: int
    truncated: bool
    ancount: int
    ttl_offsets: list[int] = field(default_factory=list)
    ttls: list[int] = field(default_factory=list)
    cacheable_ttl: int | None = None
    """Seconds the message may be cached for; ``None``: do not cache."""
    cname_targets: list[bytes] = field(default_factory=list)
    """Canonical text names that answer CNAMEs point to."""
    opt_span: tuple[int, int] | None = None
    """[start, end) of the upstream's OPT record, if any."""
    negative: bool = False


def inspect_response(message: bytes, question: bytes, query_id: int) -> ResponseInfo:
    """Validate ``message`` as the answer to ``question`` (lower-cased wire
    question: name, type, class) sent with ``query_id``; raise ``BadResponse``."""
    size = len(message)
    if size < 12:
        raise BadResponse("shorter than a header")
    if (message[0] << 8 | message[1]) != query_id:
        raise BadResponse("query ID mismatch")
    if not message[2] & 0x80:
        raise BadResponse("not a response")
    qdcount = message[4] << 8 | message[5]
    ancount = message[6] << 8 | message[7]
    nscount = message[8] << 8 | message[9]
    arcount = message[10] << 8 | message[11]
    qend = 12 + len(question)
    if qdcount != 1 or message[12:qend].lower() != question:
        raise BadResponse("question mismatch")
    info = ResponseInfo(rcode=message[3] & 0x0F, truncated=bool(message[2] & 0x02), ancount=ancount)
    pos = qend
    soa_negative_ttl: int | None = None
    try:
        for section, count in ((0, ancount), (1, nscount), (2, arcount)):
            for _ in range(count):
                pos = _skip_name(message, pos)
                if pos + 10 > size:
                    raise BadResponse("record header runs past the message")
                rtype = message[pos] << 8 | message[pos + 1]
                ttl_at = pos + 4
                rdlength = message[pos + 8] << 8 | message[pos + 9]
                rdata = pos + 10
                end = rdata + rdlength
                if end > size:
                    raise BadResponse("record runs past the message")
                _check_rdata(message, rtype, rdata, end)
                if rtype == TYPE_OPT:
                    if section != 2 or info.opt_span is not None:
                        raise BadResponse("misplaced OPT record")
                    start = _record_start(message, qend, pos)
                    info.opt_span = (start, end)
                    info.rcode |= message[pos + 4] << 4
                    pos = end
                    continue
                ttl = int.from_bytes(message[ttl_at : ttl_at + 4], "big") & 0x7FFFFFFF
                info.ttl_offsets.append(ttl_at)
                info.ttls.append(ttl)
                if section == 0 and rtype == TYPE_CNAME:
                    info.cname_targets.append(read_name(message, rdata))
                elif section == 1 and rtype == TYPE_SOA and rdlength >= 22:
                    minimum = int.from_bytes(message[end - 4 : end], "big")
                    soa_negative_ttl = min(ttl, minimum)
                pos = end
    except IndexError:
        raise BadResponse("truncated record") from None
    if pos != size:
        raise BadResponse(f"{size - pos} bytes after the last record")
    if info.truncated:
        return info
    if info.rcode == NXDOMAIN or (info.rcode == NOERROR and ancount == 0):
        info.negative = True
        info.cacheable_ttl = soa_negative_ttl
    elif info.rcode == NOERROR:
        info.cacheable_ttl = min(info.ttls) if info.ttls else None
    return info


def _record_start(message: bytes, qend: int, type_at: int) -> int:
    """Offset of the owner name of the record whose TYPE field is at ``type_at``.

    Only used for OPT, whose owner is the root: a single zero octet."""
    if message[type_at - 1] != 0:
        raise BadResponse("OPT owner is not the root")
    return type_at - 1


def _skip_name(message: bytes, pos: int) -> int:
    """Offset just past the (possibly compressed) name starting at ``pos``; a
    pointer must point back, to a place before the name (RFC 1035 §4.1.4)."""
    start = pos
    while True:
        length = message[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            target = (length & 0x3F) << 8 | message[pos + 1]
            if not 12 <= target < start:
                raise BadResponse("compression pointer does not point back")
            return pos + 2
        if length > 63:
            raise BadResponse("bad label type")
        pos += length + 1


def _check_rdata(message: bytes, rtype: int, rdata: int, end: int) -> None:
    """The rdata of a type with a fixed layout has exactly that layout."""
    fixed = _FIXED_SIZE.get(rtype)
    if fixed is not None:
        if end - rdata != fixed:
            raise BadResponse(f"type {rtype} rdata of {end - rdata} octets, not {fixed}")
        return
    before = _NAME_AFTER.get(rtype)
    if before is not None:
        if rdata + before >= end or _skip_name(message, rdata + before) != end:
            raise BadResponse(f"type {rtype} rdata is not one name where one is due")
        read_name(message, rdata + before)  # no loop, no overlong name
    elif rtype == TYPE_SOA:
        names_end = _skip_name(message, _skip_name(message, rdata))
        if names_end + 20 != end:
            raise BadResponse("SOA rdata is not two names and 20 octets")
    elif rtype == TYPE_TXT:
        pos = rdata
        while pos < end:
            pos += message[pos] + 1
        if pos != end or rdata == end:
            raise BadResponse("TXT rdata is not a sequence of character-strings")


def read_name(message: bytes, pos: int) -> bytes:
    """Decode a possibly compressed name into canonical text (lower-case, no
    trailing dot); loops and runaway pointers are rejected."""
    labels: list[bytes] = []
    hops = 0
    total = 0
    while True:
        length = message[pos]
        if length == 0:
            return b".".join(labels).lower()
        if length >= 0xC0:
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise BadResponse("compression loop")
            pos = (length & 0x3F) << 8 | message[pos + 1]
            continue
        if length > 63:
            raise BadResponse("bad label type")
        total += length + 1
        if total > 255:
            raise BadResponse("name too long")
        labels.append(message[pos + 1 : pos + 1 + length])
        pos += length + 1
