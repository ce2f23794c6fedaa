"""Answers filterd writes itself: errors, truncation and blocked answers.

All of it is byte assembly around the client's own question bytes (the
question is echoed exactly, case included, RFC 1035 §4.1.2), so no answer
ever needs a dnslib object. Pieces that do not depend on the query (SOA
record body, EDE option, sinkhole address records) are compiled once per
rule into a ``BlockAnswer`` and reused for every blocked query.
"""

from __future__ import annotations

import struct
from typing import Final

from filterd.model.rules import Action
from filterd.wire.codes import (
    EDE_OPTION_CODE,
    FLAG_QR,
    FLAG_RA,
    FLAG_TC,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    TYPE_A,
    TYPE_AAAA,
    TYPE_OPT,
    TYPE_SOA,
)
from filterd.wire.query import Query

_HEADER: Final = struct.Struct("!HHHHH")
_RR_FIXED: Final = struct.Struct("!HHIH")
_POINTER: Final = struct.Struct("!H")
# The SOA of a synthesised negative answer names a zone under ".invalid"
# (RFC 6761 §6.4) so it can never be mistaken for the real zone's SOA.
_SOA_MNAME: Final = b"\x07filterd\x07invalid\x00"
_SOA_RNAME: Final = b"\x0ahostmaster\x07filterd\x07invalid\x00"


def opt_record(udp_size: int, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """An OPT pseudo-RR (RFC 6891 §6.1.2) with version 0."""
    return (
        b"\x00"
        + struct.pack(
            "!HHBBHH", TYPE_OPT, udp_size, ext_rcode, 0, 0x8000 if do else 0, len(options)
        )
        + options
    )


def ede_option(code: int, text: str) -> bytes:
    """An Extended DNS Error option (RFC 8914 §2): info-code plus UTF-8 extra text."""
    extra = text.encode("utf-8")[:400]
    return struct.pack("!HHH", EDE_OPTION_CODE, 2 + len(extra), code) + extra


def _flags(query: Query, rcode: int, extra: int = 0) -> int:
    """Response flags: QR, RA, the client's RD and CD copied (RFC 1035, 4035 §3.2.2)."""
    data = query.data
    return FLAG_QR | FLAG_RA | extra | (data[2] & 0x01) << 8 | (data[3] & 0x10) | (rcode & 0x0F)


def error_response(data: bytes, rcode: int) -> bytes:
    """Answer a query whose question could not be decoded: header only, no question.

    Opcode and RD are copied from the request; counts are all zero."""
    flags = FLAG_QR | ((data[2] & 0x79) << 8) | (rcode & 0x0F)
    return data[:2] + _HEADER.pack(flags, 0, 0, 0, 0)


def query_error(query: Query, rcode: int, max_udp_size: int, ede: bytes = b"") -> bytes:
    """Answer a decoded query with ``rcode`` and no records (SERVFAIL, REFUSED, BADVERS...).

    Extended rcodes (> 15) put their upper bits into the OPT record (RFC 6891 §6.1.3).
    An OPT record, with ``ede`` options, is added only if the client sent one."""
    data = query.data
    if query.has_edns:
        opt = opt_record(max_udp_size, query.do, rcode >> 4, ede)
        return (
            data[:2] + _HEADER.pack(_flags(query, rcode), 1, 0, 0, 1) + data[12 : query.qend] + opt
        )
    return data[:2] + _HEADER.pack(_flags(query, rcode), 1, 0, 0, 0) + data[12 : query.qend]


def truncated(query: Query, answer: bytes, max_udp_size: int) -> bytes:
    """The TC=1 stand-in for an answer too large for the client's UDP limit:
    same flags and rcode, question only (RFC 1035 §4.2.1, RFC 2181 §9), so the
    client retries over TCP."""
    data = query.data
    flags = (answer[2] << 8 | answer[3]) | FLAG_TC
    if query.has_edns:
        return (
            data[:2]
            + _HEADER.pack(flags, 1, 0, 0, 1)
            + data[12 : query.qend]
            + opt_record(max_udp_size, query.do)
        )
    return data[:2] + _HEADER.pack(flags, 1, 0, 0, 0) + data[12 : query.qend]


TYPE_HINFO: Final = 13
MINIMAL_ANY_TTL: Final = 86400
_HINFO_RFC8482: Final = b"\x07RFC8482\x00"


def minimal_any(query: Query, max_udp_size: int) -> bytes:
    """RFC 8482 §4.2: answer a query of type ANY with one synthesized HINFO
    record (CPU "RFC8482", OS empty), TTL one day, instead of every record of
    the name: ANY is the amplification payload of choice, and clients that
    need a type ask for it."""
    data = query.data
    record = (
        b"\xc0\x0c"
        + _RR_FIXED.pack(TYPE_HINFO, 1, MINIMAL_ANY_TTL, len(_HINFO_RFC8482))
        + _HINFO_RFC8482
    )
    if query.has_edns:
        header = _HEADER.pack(_flags(query, NOERROR), 1, 1, 0, 1)
        opt = opt_record(max_udp_size, query.do)
        return data[:2] + header + data[12 : query.qend] + record + opt
    header = _HEADER.pack(_flags(query, NOERROR), 1, 1, 0, 0)
    return data[:2] + header + data[12 : query.qend] + record


class BlockAnswer:
    """The compiled answer for one blocking rule.

    ``render(query, offset)`` costs a few byte concatenations: the SOA owner
    is a compression pointer to the blocked suffix inside the question
    (``offset`` from the matcher), so the same compiled bytes serve every
    name the rule covers. Negative answers carry the SOA with TTL and
    MINIMUM both set to the block TTL (RFC 2308 §5 caches a negative answer
    for min(SOA TTL, MINIMUM)).
    """

    __slots__ = (
        "_opt",
        "_opt_do",
        "_rcode",
        "_refused",
        "_sink_a",
        "_sink_aaaa",
        "_sinkhole",
        "_soa_rest",
        "drops",
    )

    def __init__(
        self,
        action: Action,
        ttl: int,
        ede_code: int,
        ede_text: str,
        max_udp_size: int,
        sinkhole_v4: bytes | None = None,
        sinkhole_v6: bytes | None = None,
        serial: int = 1,
    ) -> None:
        self._rcode = {Action.NXDOMAIN: NXDOMAIN, Action.REFUSED: REFUSED}.get(action, NOERROR)
        # Decided once: an enum member read per query costs as much as the
        # rest of the answer (Python 3.11's EnumType.__getattr__).
        self.drops = action is Action.DROP
        self._refused = action is Action.REFUSED
        self._sinkhole = action is Action.SINKHOLE
        ede = ede_option(ede_code, ede_text)
        self._opt = opt_record(max_udp_size, False, 0, ede)
        self._opt_do = opt_record(max_udp_size, True, 0, ede)
        soa_rdata = _SOA_MNAME + _SOA_RNAME + struct.pack("!IIIII", serial, 3600, 600, 86400, ttl)
        self._soa_rest = _RR_FIXED.pack(TYPE_SOA, 1, ttl, len(soa_rdata)) + soa_rdata
        self._sink_a = _address_rr(TYPE_A, ttl, sinkhole_v4)
        self._sink_aaaa = _address_rr(TYPE_AAAA, ttl, sinkhole_v6)

    def render(self, query: Query, offset: int) -> bytes:
        """The blocked answer to ``query``; ``offset`` locates the rule's name in qname."""
        data = query.data
        question = data[12 : query.qend]
        additional = b""
        arcount = 0
        if query.has_edns:
            additional = self._opt_do if query.do else self._opt
            arcount = 1
        if self._refused:
            return (
                data[:2]
                + _HEADER.pack(_flags(query, REFUSED), 1, 0, 0, arcount)
                + question
                + additional
            )
        if self._sinkhole:
            record = (
                self._sink_a
                if query.qtype == TYPE_A
                else (self._sink_aaaa if query.qtype == TYPE_AAAA else None)
            )
            if record is not None:
                header = _HEADER.pack(_flags(query, NOERROR), 1, 1, 0, arcount)
                return data[:2] + header + question + record + additional
        pointer = _POINTER.pack(0xC000 | (12 + offset))
        header = _HEADER.pack(_flags(query, self._rcode), 1, 0, 1, arcount)
        return data[:2] + header + question + pointer + self._soa_rest + additional


def _address_rr(rtype: int, ttl: int, address: bytes | None) -> bytes | None:
    """An A/AAAA record owned by the question name (pointer to offset 12)."""
    if address is None:
        return None
    return b"\xc0\x0c" + _RR_FIXED.pack(rtype, 1, ttl, len(address)) + address
