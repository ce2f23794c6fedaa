"""The EDNS Client Subnet option read from query bytes (RFC 7871 §6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.edns
import dns.message

from filterd.wire.query import parse_query
from filterd.wire.subnet import OPTION_CLIENT_SUBNET, client_subnet


def subnet_of(options: Sequence[dns.edns.Option], edns: bool = True) -> tuple[str, int] | None:
    wire = dns.message.make_query(
        "example.com", "A", use_edns=0 if edns else False, options=list(options)
    ).to_wire()
    query = parse_query(wire)
    assert query is not None
    found = client_subnet(wire, query.qend)
    return None if found is None else (str(ipaddress.ip_address(found[0])), found[1])


def raw(payload: bytes) -> dns.edns.Option:
    return dns.edns.GenericOption(dns.edns.OptionType(OPTION_CLIENT_SUBNET), payload)


def test_ipv4_and_ipv6_subnets() -> None:
    assert subnet_of([dns.edns.ECSOption("10.1.2.0", 24)]) == ("10.1.2.0", 24)
    assert subnet_of([dns.edns.ECSOption("2001:db8:1::", 48)]) == ("2001:db8:1::", 48)
    assert subnet_of([dns.edns.ECSOption("0.0.0.0", 0)]) == ("0.0.0.0", 0)


def test_bits_past_the_prefix_are_cleared() -> None:
    # family 1, /20, scope 0, three address bytes with stray low bits
    assert subnet_of([raw(b"\x00\x01\x14\x00\x0a\x01\xff")]) == ("10.1.240.0", 20)


def test_other_options_are_skipped_and_absence_is_none() -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    assert subnet_of([cookie, dns.edns.ECSOption("10.1.2.0", 24)]) == ("10.1.2.0", 24)
    assert subnet_of([cookie]) is None
    assert subnet_of([]) is None
    assert subnet_of([], edns=False) is None


def test_malformed_options_are_ignored() -> None:
    assert subnet_of([raw(b"\x00\x01\x18")]) is None  # too short
    assert subnet_of([raw(b"\x00\x03\x08\x00\x0a")]) is None  # unknown family
    assert subnet_of([raw(b"\x00\x01\x21\x00\x0a\x01\x02\x03\x04")]) is None  # /33
    assert subnet_of([raw(b"\x00\x01\x18\x00\x0a\x01")]) is None  # /24 needs three bytes
