"""Decoding an incoming query straight from its wire bytes.

This is the first stage of every query, so it never builds a dnslib object:
it reads the header, the single question and an optional OPT record with
integer indexing, and hands back offsets into the original ``bytes``. Every
malformed packet becomes either ``None`` (drop: too short to answer, or not a
query at all) or a ``QueryError`` carrying the rcode to answer with.

Two steps, so that a repeated question costs as little as possible:
``parse_query`` takes the question name to end at the first zero octet (one
``bytes.find``) and checks everything else; ``validate`` walks the labels.
The pipeline validates before the first policy decision on a key and before
forwarding. A key found in the policy memo or the cache is byte for byte the
question of a query that was validated, so it is well-formed too; a name
holding a zero octet inside a label (legal, if odd) gets a key that matches
nothing, and is then validated and re-keyed at its real end.

Rules applied (cited so they can be checked):
- a message shorter than the 12-byte header cannot be answered: dropped;
- QR=1 is a response, never answered (prevents reflection loops): dropped;
- opcode other than QUERY: NOTIMP (RFC 1035 §4.1.1);
- QDCOUNT must be exactly 1 (RFC 9619), AN/NS counts must be 0: FORMERR;
- a compression pointer inside the question is invalid (nothing precedes it
  to point at): FORMERR; names longer than 255 octets: FORMERR (RFC 1035 §2.3.4);
- ARCOUNT 0 or a single OPT RR (RFC 6891 §6.1.1); anything else (TSIG is not
  supported) FORMERR; EDNS version above 0: BADVERS (RFC 6891 §6.1.3);
- an advertised UDP size below 512 is treated as 512 (RFC 6891 §6.2.5).
"""

from __future__ import annotations

from typing import Final

from filterd.errors import QueryError
from filterd.wire.codes import BADVERS, CLASSIC_UDP_SIZE, FORMERR, NOTIMP, TYPE_OPT

# Bits of the cache-key variant byte: answers differ by EDNS presence (an OPT
# record may only be sent to a client that sent one, RFC 6891 §7), by the DO
# bit (DNSSEC records, RFC 3225) and by CD (RFC 4035 §3.2.2).
VARIANT_EDNS: Final = 1
VARIANT_DO: Final = 2
VARIANT_CD: Final = 4
_VARIANT_BYTES: Final = tuple(bytes((i,)) for i in range(8))


_COUNTS_PLAIN: Final = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1, AN=NS=AR=0
_COUNTS_EDNS: Final = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # QD=1, AR=1 (the OPT)
_SUPPORTED_COUNTS: Final = frozenset({_COUNTS_PLAIN, _COUNTS_EDNS})


class Query:
    """One decoded query: the original bytes plus the offsets that matter.

    ``key`` is the cache key: the question section lower-cased (RFC 4343:
    ASCII case-insensitive) followed by the variant byte. Lower-casing the
    whole question is safe because label-length octets are at most 63 and so
    never fall in the ASCII upper-case range. Only what every query needs is
    stored; the rest is derived on the paths that use it.
    """

    __slots__ = (
        "asked_lower",
        "data",
        "key",
        "name_end",
        "qend",
        "udp_size",
        "validated",
        "variant",
    )

    data: bytes
    name_end: int
    qend: int
    udp_size: int
    variant: int
    key: bytes
    asked_lower: bool
    """The question is in ``key`` as the client wrote it (no upper-case
    letter): an answer stored for the key serves it as it is."""
    validated: bool

    @property
    def qtype(self) -> int:
        return self.data[self.name_end] << 8 | self.data[self.name_end + 1]

    @property
    def qclass(self) -> int:
        return self.data[self.name_end + 2] << 8 | self.data[self.name_end + 3]

    @property
    def do(self) -> bool:
        return bool(self.variant & VARIANT_DO)

    @property
    def has_edns(self) -> bool:
        return bool(self.variant & VARIANT_EDNS)

    def response_limit(self, max_udp_size: int) -> int:
        """Largest UDP answer this client accepts (RFC 6891 §6.2.3-6.2.5)."""
        if not self.variant & VARIANT_EDNS:
            return CLASSIC_UDP_SIZE
        return min(self.udp_size, max_udp_size)


class BadVersion(QueryError):
    """EDNS version above 0: answered BADVERS with an OPT record, so it keeps the query."""

    def __init__(self, query: Query) -> None:
        super().__init__(BADVERS, "EDNS version")
        self.query = query


def parse_query(data: bytes) -> Query | None:
    """Decode ``data``; ``None`` means drop silently, ``QueryError`` means answer it.

    The end of the question name is found with one ``find`` for the first
    zero octet rather than a walk over its labels; ``validate`` does the walk
    (see the module docstring for why that is safe and when it runs).
    """
    size = len(data)
    if size < 12:
        return None
    flags_hi = data[2]
    if flags_hi & 0xF8:
        if flags_hi & 0x80:
            return None
        raise QueryError(NOTIMP, "opcode")
    counts = data[4:12]
    if counts not in _SUPPORTED_COUNTS:
        raise QueryError(FORMERR, "section counts")
    query = Query()
    query.data = data
    query.validated = False
    end = data.find(0, 12)
    try:
        if end < 0:
            raise QueryError(FORMERR, "truncated question")
        _locate(query, end + 1, counts == _COUNTS_EDNS)
    except QueryError:
        # The first zero octet may sit inside a label (binary labels are legal):
        # walk the labels to find out, then decode at the real end or fail.
        name_end = _walk(data)
        if name_end == end + 1:
            raise
        _locate(query, name_end, counts == _COUNTS_EDNS)
        query.validated = True
    return query


def validate(query: Query) -> None:
    """Walk the question's labels: raise FORMERR for a malformed name.

    Needed before a name is decided or forwarded for the first time; a query
    whose key is already in the policy memo or the cache has the exact bytes
    of a question that was validated, so it needs no walk.
    """
    if query.validated:
        return
    name_end = _walk(query.data)
    if name_end != query.name_end:
        # A zero octet inside a label made ``find`` stop early.
        _locate(query, name_end, query.data[10:12] == b"\x00\x01")
    query.validated = True


def _walk(data: bytes) -> int:
    """Offset just past the question name, by its label lengths (RFC 1035 §3.1)."""
    pos = 12
    try:
        length = data[12]
        while length:
            if length > 63:
                raise QueryError(FORMERR, "label type")
            pos += length + 1
            length = data[pos]
    except IndexError:
        raise QueryError(FORMERR, "truncated question") from None
    if pos + 1 - 12 > 255:
        raise QueryError(FORMERR, "name too long")
    return pos + 1


def _locate(query: Query, name_end: int, edns: bool) -> None:
    """Set the offsets, EDNS facts and key for a question name ending at ``name_end``."""
    data = query.data
    size = len(data)
    qend = name_end + 4
    if qend > size:
        raise QueryError(FORMERR, "truncated question")
    query.name_end = name_end
    query.qend = qend
    variant = VARIANT_CD if data[3] & 0x10 else 0
    if edns:
        variant |= _parse_opt(query, data, qend, size)
    else:
        if qend != size:
            raise QueryError(FORMERR, "trailing data")
        query.udp_size = CLASSIC_UDP_SIZE
    query.variant = variant
    question = data[12:qend]
    lowered = question.lower()
    query.key = lowered + _VARIANT_BYTES[variant]
    query.asked_lower = lowered == question


def _parse_opt(query: Query, data: bytes, pos: int, size: int) -> int:
    """Check the single additional record is a well-formed OPT; return variant bits."""
    # root owner (1) + type (2) + class (2) + ttl (4) + rdlength (2)
    if pos + 11 > size or data[pos] != 0:
        raise QueryError(FORMERR, "additional record")
    if data[pos + 1] << 8 | data[pos + 2] != TYPE_OPT:
        raise QueryError(FORMERR, "additional record")
    rdlength = data[pos + 9] << 8 | data[pos + 10]
    end = pos + 11 + rdlength
    if end != size:
        raise QueryError(FORMERR, "OPT length")
    option = pos + 11
    while option < end:
        if option + 4 > end:
            raise QueryError(FORMERR, "OPT option")
        option += 4 + (data[option + 2] << 8 | data[option + 3])
    if option != end:
        raise QueryError(FORMERR, "OPT option")
    udp_size = data[pos + 3] << 8 | data[pos + 4]
    query.udp_size = udp_size if udp_size > CLASSIC_UDP_SIZE else CLASSIC_UDP_SIZE
    variant = VARIANT_EDNS | (VARIANT_DO if data[pos + 7] & 0x80 else 0)
    if data[pos + 6]:
        # A nonzero EDNS version is answered with BADVERS and our own
        # version 0 (RFC 6891 §6.1.3).
        query.variant = variant
        raise BadVersion(query)
    return variant
