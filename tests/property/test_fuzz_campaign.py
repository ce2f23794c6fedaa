"""The fuzz campaign of ``bench/fuzz``, short: tens of thousands of mutated
and generated packets through a real pipeline (real index, real upstream on
loopback) and mutated list text through every parser, with no failure.

The full campaign (a million packets) is ``bench/fuzz``; its figures are in
bench/README.md. This run is bounded by its counts (and the test timeout),
never by a clock reading.
"""

from __future__ import annotations

import math

import dns.message
import dns.rrset

from bench.fuzz import FORMATS, answer_problem, campaign, list_stream, packet_stream

PACKETS = 30_000
LISTS = 400
SEED = 14


def test_short_campaign_finds_nothing() -> None:
    figures = campaign(PACKETS, LISTS, SEED, math.inf)
    packets, lists = figures["packets"], figures["lists"]
    assert isinstance(packets, dict) and isinstance(lists, dict)
    assert packets["inputs"] == PACKETS
    assert lists["inputs"] == LISTS and lists["parses"] == LISTS * len(FORMATS)
    assert packets["failures"] == 0, figures["failure_examples"]
    assert lists["failures"] == 0, figures["failure_examples"]
    # Every part of the path was reached: answers at once and from upstream,
    # and more than one rcode (FORMERR, REFUSED, NXDOMAIN, NOERROR...).
    assert packets["answered_at_once"] > PACKETS // 4
    assert packets["answered_from_upstream"] > 0
    rcodes = packets["rcodes"]
    assert isinstance(rcodes, dict) and {"0", "1", "3", "5"} <= set(rcodes)


def test_generators_are_deterministic() -> None:
    """A failure reproduces from the seed: the same seed, the same inputs."""
    assert list(packet_stream(7, 500)) == list(packet_stream(7, 500))
    assert list(list_stream(7, 20)) == list(list_stream(7, 20))
    assert list(packet_stream(7, 50)) != list(packet_stream(8, 50))


def test_the_checker_rejects_bad_answers() -> None:
    query = dns.message.make_query("www.example.com", "A")
    query.id = 0x1234
    wire = query.to_wire()
    good = dns.message.make_response(query).to_wire()
    assert answer_problem(wire, good, udp=True) is None
    assert answer_problem(wire, b"\x43\x21" + good[2:], udp=True) is not None  # other ID
    assert answer_problem(wire, wire, udp=True) is not None  # QR clear
    assert answer_problem(wire, good[:-3], udp=True) is not None  # does not parse
    big = dns.message.make_response(query)
    big.answer.append(
        dns.rrset.from_text("www.example.com.", 60, "IN", "TXT", *[f'"{c * 200}"' for c in "abcd"])
    )
    assert answer_problem(wire, big.to_wire(), udp=True) is not None  # over 512 without EDNS
    assert answer_problem(wire, big.to_wire(), udp=False) is None
