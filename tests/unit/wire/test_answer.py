"""Upstream responses: validation, TTL positions, negative TTLs, CNAME targets, OPT span."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
import pytest

from filterd.wire.answer import BadResponse, inspect_response, read_name
from filterd.wire.query import parse_query


def exchange(name: str = "www.example.com", rdtype: str = "A") -> tuple[dns.message.Message, bytes]:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    parsed = parse_query(query.to_wire())
    assert parsed is not None
    return query, parsed.key[:-1]


def test_positive_answer_ttls_and_cname_targets() -> None:
    query, question = exchange()
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text("www.example.com.", 300, "IN", "CNAME", "Edge.CDN.example.")
    )
    response.answer.append(
        dns.rrset.from_text("edge.cdn.example.", 60, "IN", "A", "192.0.2.1", "192.0.2.2")
    )
    wire = response.to_wire()
    info = inspect_response(wire, question, query.id)
    assert info.rcode == dns.rcode.NOERROR and not info.truncated
    assert info.ttls == [300, 60, 60]
    for offset, ttl in zip(info.ttl_offsets, info.ttls, strict=True):
        assert int.from_bytes(wire[offset : offset + 4], "big") == ttl
    assert info.cacheable_ttl == 60
    assert info.cname_targets == [b"edge.cdn.example"]
    assert info.opt_span is not None
    start, end = info.opt_span
    assert wire[start] == 0 and end == len(wire)


def test_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    query, question = exchange()
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(
        dns.rrset.from_text("example.com.", 900, "IN", "SOA", "ns. host. 1 2 3 4 120")
    )
    info = inspect_response(response.to_wire(), question, query.id)
    assert info.negative and info.cacheable_ttl == 120


def test_negative_without_soa_is_not_cached() -> None:
    query, question = exchange()
    response = dns.message.make_response(query)
    info = inspect_response(response.to_wire(), question, query.id)
    assert info.negative and info.cacheable_ttl is None


def test_servfail_and_truncated_are_not_cached() -> None:
    query, question = exchange()
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.SERVFAIL)
    assert inspect_response(response.to_wire(), question, query.id).cacheable_ttl is None
    response.set_rcode(dns.rcode.NOERROR)
    response.flags |= dns.flags.TC
    info = inspect_response(response.to_wire(), question, query.id)
    assert info.truncated and info.cacheable_ttl is None


@pytest.mark.parametrize("tamper", ["id", "question", "qr"])
def test_mismatched_responses_are_rejected(tamper: str) -> None:
    query, question = exchange()
    if tamper == "question":
        query = dns.message.make_query("other.example.com", "A")
    response = dns.message.make_response(query)
    wire = bytearray(response.to_wire())
    if tamper == "qr":
        wire[2] &= 0x7F
    query_id = query.id ^ 1 if tamper == "id" else query.id
    with pytest.raises(BadResponse):
        inspect_response(bytes(wire), question, query_id)


def test_question_compared_case_insensitively() -> None:
    query, question = exchange("WWW.Example.COM")
    response = dns.message.make_response(query)
    info = inspect_response(response.to_wire(), question, query.id)
    assert info.rcode == 0


@pytest.mark.parametrize("cut", [13, 20, 35, 40])
def test_truncated_messages_are_rejected(cut: int) -> None:
    query, question = exchange()
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    with pytest.raises(BadResponse):
        inspect_response(response.to_wire()[:cut], question, query.id)


def test_compression_loop_is_rejected() -> None:
    looping = b"\x00" * 12 + b"\xc0\x0c"
    with pytest.raises(BadResponse):
        read_name(looping, 12)


def _answer(rdtype: str, *rdata: str) -> tuple[bytes, bytes, int]:
    query, question = exchange("www.example.com", rdtype)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", rdtype, *rdata))
    return response.to_wire(), question, query.id


@pytest.mark.parametrize(
    ("rdtype", "rdata"),
    [
        ("A", "192.0.2.1"),
        ("AAAA", "2001:db8::1"),
        ("CNAME", "target.example."),
        ("NS", "ns1.example."),
        ("MX", "10 mail.example."),
        ("TXT", '"v=spf1 -all" "second"'),
        ("SOA", "ns.example. admin.example. 1 2 3 4 5"),
        ("SRV", "0 5 443 svc.example."),
        ("PTR", "host.example."),
        ("CAA", '0 issue "ca.example"'),
    ],
)
def test_well_formed_records_of_every_checked_type_pass(rdtype: str, rdata: str) -> None:
    wire, question, query_id = _answer(rdtype, rdata)
    assert inspect_response(wire, question, query_id).rcode == dns.rcode.NOERROR


def test_trailing_bytes_after_the_last_record_are_refused() -> None:
    wire, question, query_id = _answer("A", "192.0.2.1")
    with pytest.raises(BadResponse, match="after the last record"):
        inspect_response(wire + b"\x00junk", question, query_id)


@pytest.mark.parametrize(("rdtype", "rdata", "grow"), [("A", "192.0.2.1", -1), ("AAAA", "::1", 1)])
def test_fixed_size_rdata_of_another_length_is_refused(rdtype: str, rdata: str, grow: int) -> None:
    query, question = exchange("www.example.com", rdtype)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", rdtype, rdata))
    wire = bytearray(response.to_wire())
    size = 4 if rdtype == "A" else 16
    at = len(question) + 12 + 10  # owner pointer, type, class, TTL: then RDLENGTH
    assert int.from_bytes(wire[at : at + 2], "big") == size
    wire[at : at + 2] = (size + grow).to_bytes(2, "big")
    rdata_at = at + 2
    if grow < 0:
        del wire[rdata_at + size - 1]
    else:
        wire[rdata_at + size : rdata_at + size] = b"\x00"
    with pytest.raises(BadResponse, match="octets"):
        inspect_response(bytes(wire), question, query.id)


def test_a_name_rdata_with_junk_after_the_name_is_refused() -> None:
    wire, question, query_id = _answer("CNAME", "t.example.")
    at = len(question) + 12 + 10
    length = int.from_bytes(wire[at : at + 2], "big")
    opt = wire[at + 2 + length :]
    tampered = wire[:at] + (length + 2).to_bytes(2, "big") + wire[at + 2 : at + 2 + length]
    with pytest.raises(BadResponse):
        inspect_response(tampered + b"\x01\x02" + opt, question, query_id)


def test_a_forward_compression_pointer_is_refused() -> None:
    wire, question, query_id = _answer("A", "192.0.2.1")
    at = len(question) + 12  # the answer's owner: a pointer to the question (0xc00c)
    assert wire[at : at + 2] == b"\xc0\x0c"
    forward = wire[:at] + (0xC000 | at).to_bytes(2, "big") + wire[at + 2 :]
    with pytest.raises(BadResponse, match="point back"):
        inspect_response(forward, question, query_id)
