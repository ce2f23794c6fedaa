"""Answers filterd writes itself read back correctly with dnspython (an independent codec)."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from filterd.model.rules import Action
from filterd.wire.codes import EDE_CENSORED, FORMERR, NOTIMP, SERVFAIL
from filterd.wire.query import Query, parse_query
from filterd.wire.synth import BlockAnswer, error_response, query_error, truncated


def make(name: str, rdtype: str = "A", edns: bool = True, want_dnssec: bool = False) -> Query:
    message = dns.message.make_query(
        name, rdtype, use_edns=0 if edns else False, want_dnssec=want_dnssec
    )
    query = parse_query(message.to_wire())
    assert query is not None
    return query


def block(
    action: Action, sinkhole_v4: bytes | None = None, sinkhole_v6: bytes | None = None
) -> BlockAnswer:
    text = "list=national version=7 category=gambling"
    return BlockAnswer(action, 5, EDE_CENSORED, text, 1232, sinkhole_v4, sinkhole_v6)


def read(wire: bytes) -> dns.message.Message:
    return dns.message.from_wire(wire)


def test_nxdomain_has_soa_at_the_blocked_suffix_and_ede() -> None:
    query = make("ads.Casino.example")
    answer = read(block(Action.NXDOMAIN).render(query, len("ads.")))
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert answer.id == dns.message.from_wire(query.data).id
    assert str(answer.question[0].name) == "ads.Casino.example."  # echoed, case kept
    soa = answer.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert str(soa.name) == "Casino.example."
    assert soa.ttl == 5 and soa[0].minimum == 5
    assert answer.flags & dns.flags.QR and answer.flags & dns.flags.RA
    assert answer.flags & dns.flags.RD
    (ede,) = answer.options
    assert isinstance(ede, dns.edns.EDEOption)
    assert ede.code == dns.edns.EDECode.CENSORED
    assert ede.text == "list=national version=7 category=gambling"


def test_nodata_is_noerror_with_soa() -> None:
    answer = read(block(Action.NODATA).render(make("x.example", "AAAA"), 0))
    assert answer.rcode() == dns.rcode.NOERROR
    assert not answer.answer
    assert answer.authority[0].rdtype == dns.rdatatype.SOA


def test_refused_has_ede_but_no_soa() -> None:
    answer = read(block(Action.REFUSED).render(make("x.example"), 0))
    assert answer.rcode() == dns.rcode.REFUSED
    assert not answer.authority
    assert answer.options[0].code == dns.edns.EDECode.CENSORED


@pytest.mark.parametrize(("rdtype", "expected"), [("A", "192.0.2.80"), ("AAAA", "2001:db8::80")])
def test_sinkhole_answers_addresses(rdtype: str, expected: str) -> None:
    sink = block(
        Action.SINKHOLE,
        sinkhole_v4=ipaddress.ip_address("192.0.2.80").packed,
        sinkhole_v6=ipaddress.ip_address("2001:db8::80").packed,
    )
    answer = read(sink.render(make("x.example", rdtype), 0))
    assert answer.rcode() == dns.rcode.NOERROR
    (rrset,) = answer.answer
    assert rrset.ttl == 5 and str(rrset[0]) == expected
    assert str(rrset.name) == "x.example."


def test_sinkhole_of_other_types_is_nodata() -> None:
    sink = block(Action.SINKHOLE, sinkhole_v4=ipaddress.ip_address("192.0.2.80").packed)
    answer = read(sink.render(make("x.example", "HTTPS"), 0))
    assert answer.rcode() == dns.rcode.NOERROR and not answer.answer
    assert answer.authority[0].rdtype == dns.rdatatype.SOA


def test_no_opt_record_to_a_client_without_edns() -> None:
    answer = read(block(Action.NXDOMAIN).render(make("x.example", edns=False), 0))
    assert answer.edns == -1  # RFC 6891 §7: never an OPT to a client that sent none
    assert answer.rcode() == dns.rcode.NXDOMAIN


def test_do_bit_is_echoed() -> None:
    answer = read(block(Action.NXDOMAIN).render(make("x.example", want_dnssec=True), 0))
    assert answer.ednsflags & dns.flags.DO


def test_error_response_without_question() -> None:
    data = make("x.example").data
    answer = read(error_response(data, FORMERR))
    assert answer.rcode() == dns.rcode.FORMERR and not answer.question
    assert answer.id == dns.message.from_wire(data).id
    opcode = bytearray(data)
    opcode[2] |= 0x28  # opcode 5 (UPDATE)
    assert read(error_response(bytes(opcode), NOTIMP)).opcode() == 5


def test_query_error_keeps_question_and_carries_ede_only_with_edns() -> None:
    answer = read(query_error(make("x.example"), SERVFAIL, 1232))
    assert answer.rcode() == dns.rcode.SERVFAIL and answer.question
    assert answer.edns == 0
    plain = read(query_error(make("x.example", edns=False), SERVFAIL, 1232))
    assert plain.edns == -1


def test_truncated_keeps_rcode_and_sets_tc() -> None:
    query = make("x.example")
    full = block(Action.NXDOMAIN).render(query, 0)
    answer = read(truncated(query, full, 1232))
    assert answer.flags & dns.flags.TC
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert not answer.authority and answer.question
