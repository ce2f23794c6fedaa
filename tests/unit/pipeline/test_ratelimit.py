"""The response rate limit: a token bucket per (client prefix, question),
slips, exemptions, the all-answers bucket and a bounded table."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message

from filterd.pipeline import ratelimit
from filterd.pipeline.ratelimit import ResponseRateLimit
from filterd.pipeline.tally import Counters
from filterd.wire.query import parse_query

A = bytes([192, 0, 2, 10])
SAME_24 = bytes([192, 0, 2, 99])
OTHER_24 = bytes([192, 0, 3, 10])


def answer_for(name: str = "www.example.com") -> tuple[bytes, bytes]:
    query = dns.message.make_query(name, "A")
    parsed = parse_query(query.to_wire())
    assert parsed is not None
    response = dns.message.make_response(query)
    return parsed.key, response.to_wire()


def test_a_burst_then_the_rate_with_every_second_over_the_limit_slipped() -> None:
    counters = Counters()
    limit = ResponseRateLimit(10, 5, 0, 2, counters)
    key, wire = answer_for()
    now = 1000.0
    outcomes = [limit.limit(A, key, wire, now) for _ in range(9)]
    assert outcomes[:5] == [wire] * 5
    over = outcomes[5:]
    assert over[0] is None and over[2] is None  # dropped
    slipped = [dns.message.from_wire(o) for o in over if o is not None]
    assert len(slipped) == 2 and all(m.flags & dns.flags.TC and not m.answer for m in slipped)
    assert (counters.rate_dropped, counters.rate_slipped) == (2, 2)
    assert limit.limit(A, key, wire, now + 0.1) == wire  # 10 a second: one token back


def test_one_prefix_shares_a_bucket_another_prefix_and_another_question_do_not() -> None:
    limit = ResponseRateLimit(1, 1, 0, 0, Counters())
    key, wire = answer_for()
    other_key, other_wire = answer_for("mail.example.com")
    assert limit.limit(A, key, wire, 0.0) == wire
    assert limit.limit(SAME_24, key, wire, 0.0) is None  # the same /24
    assert limit.limit(OTHER_24, key, wire, 0.0) == wire
    assert limit.limit(A, other_key, other_wire, 0.0) == other_wire


def test_exempt_networks_are_never_limited() -> None:
    exempt = (ipaddress.ip_network("192.0.2.0/24"),)
    limit = ResponseRateLimit(1, 1, 0, 0, Counters(), exempt)
    key, wire = answer_for()
    assert all(limit.limit(A, key, wire, 0.0) == wire for _ in range(100))


def test_all_per_second_bounds_every_answer_to_a_prefix() -> None:
    limit = ResponseRateLimit(100, 100, 2, 0, Counters())
    names = [answer_for(f"n{i}.example") for i in range(10)]
    sent = [limit.limit(A, key, wire, 0.0) for key, wire in names]
    assert len([s for s in sent if s is not None]) == 2  # burst scaled: 100 * 2 / 100


def test_the_table_of_buckets_is_bounded() -> None:
    limit = ResponseRateLimit(1, 1, 0, 0, Counters())
    key, wire = answer_for()
    for number in range(ratelimit.MAX_BUCKETS + 10):
        address = number.to_bytes(4, "big")[:3] + b"\x01"
        limit.limit(bytes([10]) + address[1:], key, wire, 0.0)
    assert len(limit._buckets) <= ratelimit.MAX_BUCKETS
