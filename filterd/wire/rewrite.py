"""Answers rewritten to another name: a CNAME filterd writes, then the target's records.

Safe search (docs/profiles.md) answers ``www.google.com`` with ``CNAME
forcesafesearch.google.com`` followed by the records the upstream gave for
``forcesafesearch.google.com``: a stub resolver does not chase a CNAME
itself, so the chain must be whole. The target's answer is an ordinary
upstream answer (cached, coalesced, checked by policy like any other); this
module only splices it under the client's question. Its records may hold
compression pointers into the target's own message, so they are decoded
and re-encoded with dnslib: a few tens of microseconds, paid only by
rewritten names (RFC 1035 §4.1.4).
"""

from __future__ import annotations

from typing import Final

from dnslib import CNAME, QTYPE, RR, DNSError, DNSLabel, DNSQuestion, DNSRecord

from filterd.wire.codes import NOERROR, NXDOMAIN

_SPLICED_RCODES: Final = frozenset({NOERROR, NXDOMAIN})


def target_query(data: bytes, name_end: int, target_wire: bytes) -> bytes:
    """The client's query (``data``, question name ending at ``name_end``)
    asking for ``target_wire`` instead: same ID, flags, type, class and OPT
    record, so it is cached and coalesced like the client's own question."""
    return data[:12] + target_wire + data[name_end:]


def splice(data: bytes, target: bytes, answer: bytes, ttl: int) -> bytes | None:
    """The answer to the client's query ``data``: ``qname CNAME target``
    (TTL ``ttl``; the name as the client wrote it), then every record of
    ``answer``, the upstream's answer for ``target``. ``None`` when that
    answer is a failure (SERVFAIL, REFUSED...) or cannot be decoded: the
    caller answers SERVFAIL rather than anything unfiltered."""
    try:
        upstream = DNSRecord.parse(answer)
        asked = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, KeyError, TypeError):
        return None
    if upstream.header.rcode not in _SPLICED_RCODES or not asked.questions:
        return None
    question = asked.questions[0]
    out = DNSRecord(upstream.header)
    out.header.id = asked.header.id
    out.header.ad = 0  # the CNAME is filterd's own, never validated
    out.add_question(DNSQuestion(question.qname, question.qtype, question.qclass))
    out.add_answer(
        RR(question.qname, QTYPE.CNAME, ttl=ttl, rdata=CNAME(DNSLabel(target.decode("ascii"))))
    )
    for record in upstream.rr:
        out.add_answer(record)
    for record in upstream.auth:
        out.add_auth(record)
    for record in upstream.ar:
        out.add_ar(record)
    try:
        packed = bytes(out.pack())
    except (DNSError, ValueError, IndexError, KeyError, TypeError):
        return None
    return packed
