"""``Pipeline.handle`` without sockets: bytes in, bytes out (or a forward).

The query path is pure enough to test stage by stage: a real compiled
index and policy, a real cache, and in place of the upstream a forwarder
that records what it was asked and lets the test resume it with an answer
made by dnspython (the independent codec), at a clock the test sets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from filterd.config import BlockingConfig, CacheConfig, Config, ListConfig
from filterd.formats import Format
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.pipeline.cache import ResponseCache, build_answer
from filterd.pipeline.forward import Forwarder, Reply
from filterd.pipeline.guard import Guard
from filterd.pipeline.pipeline import Pipeline
from filterd.pipeline.policy import Policy
from filterd.pipeline.ratelimit import ResponseRateLimit
from filterd.pipeline.tally import Counters
from filterd.wire.answer import inspect_response
from filterd.wire.query import Query

CLIENT = bytes([192, 0, 2, 10])
STRANGER = bytes([198, 51, 100, 7])


@dataclass
class Sent:
    """A reply for a forwarded query: what was sent later, over which transport."""

    udp: bool = True
    received: float = 0.0
    address: bytes = CLIENT
    answers: list[bytes] = field(default_factory=list)

    def send(self, answer: bytes) -> None:
        self.answers.append(answer)


class Source:
    def __init__(self, udp: bool = True) -> None:
        self.replies: list[Sent] = []
        self.udp = udp

    def reply(self, client: object, received: float) -> Reply:
        sent = Sent(self.udp, received)
        self.replies.append(sent)
        return sent


class RecordingForwarder:
    """Stands in for the upstream pool: remembers each cache miss."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[Query, Reply]] = []

    def forward(self, query: Query, reply: Reply) -> None:
        self.forwarded.append((query, reply))


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    (tmp_path / "list.txt").write_text("casino.example\n")
    lst = ListConfig(name="national", path=tmp_path / "list.txt", format=Format.DOMAINS)
    config = Config(lists=(lst,), state_dir=tmp_path / "state")
    report = compile_lists(config)
    matcher, sources = open_matcher(report.index_path)
    policy = Policy(matcher, sources, BlockingConfig(), 1232, {})
    cache = ResponseCache(1 << 20, 0)
    forwarder = RecordingForwarder()

    def make_forwarder(_: Pipeline) -> Forwarder:
        return forwarder  # type: ignore[return-value]  # the stand-in has what handle uses

    allow = (ipaddress.ip_network("192.0.2.0/24"),)
    return Pipeline(Guard(allow), policy, cache, make_forwarder, 1232, False, Counters(), None)


def ask(
    pipeline: Pipeline,
    name: str,
    rdtype: str = "A",
    *,
    address: bytes = CLIENT,
    udp: bool = True,
    source: Source | None = None,
    payload: int = 1232,
    now: float = 100.0,
) -> dns.message.Message | None:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=payload)
    out = pipeline.handle(query.to_wire(), address, udp, source or Source(udp), 0, now)
    return None if out is None else dns.message.from_wire(out)


def upstream_answer(query: Query, rdata: list[tuple[str, str, str]], ttl: int = 300) -> bytes:
    request = dns.message.from_wire(query.data)
    response = dns.message.make_response(request)
    for owner, rdtype, value in rdata:
        response.answer.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, value))
    return response.to_wire(max_size=65535)  # an upstream over TCP: no UDP limit


def answer_forwarded(
    pipeline: Pipeline, respond: Callable[[Query], bytes], now: float = 100.0
) -> list[bytes]:
    """Answer every forwarded query with the upstream's ``respond(query)``
    (cached as the forwarder would) and return what clients got."""
    forwarder = pipeline.forwarder
    assert isinstance(forwarder, RecordingForwarder)
    sent: list[bytes] = []
    for query, reply in forwarder.forwarded:
        wire = respond(query)
        info = inspect_response(wire, query.key[:-1], int.from_bytes(query.data[:2], "big"))
        answer, lifetime = build_answer(wire, info, query, CacheConfig(), 1232, now)
        if lifetime:
            pipeline.cache.put(query.key, answer)
        pipeline.resume(query, reply, answer, "")
        if isinstance(reply, Sent):  # else a wrapper (a rewrite) that sent through one
            sent += reply.answers
    forwarder.forwarded.clear()
    return sent


def resume(
    pipeline: Pipeline, rdata: list[tuple[str, str, str]], now: float = 100.0
) -> list[dns.message.Message]:
    """Answer every forwarded query from ``rdata`` and return what clients got."""
    sent = answer_forwarded(pipeline, lambda query: upstream_answer(query, rdata), now)
    return [dns.message.from_wire(answer) for answer in sent]


def ede_codes(message: dns.message.Message) -> list[int]:
    return [o.code for o in message.options if isinstance(o, dns.edns.EDEOption)]


def test_a_miss_is_forwarded_then_a_hit_is_answered_from_the_cache(pipeline: Pipeline) -> None:
    assert ask(pipeline, "www.example.com") is None  # nothing to send now
    (answer,) = resume(pipeline, [("www.example.com.", "A", "192.0.2.1")])
    assert answer.rcode() == dns.rcode.NOERROR and str(answer.answer[0][0]) == "192.0.2.1"
    hit = ask(pipeline, "WWW.Example.COM", now=160.0)
    assert hit is not None and hit.answer[0].ttl == 240  # aged by 60 s
    assert str(hit.question[0].name) == "WWW.Example.COM."  # the client's own case
    assert not pipeline.forwarder.forwarded  # type: ignore[attr-defined]


def test_a_listed_name_and_its_subdomains_are_blocked_with_ede(pipeline: Pipeline) -> None:
    for name in ("casino.example", "www.casino.example"):
        answer = ask(pipeline, name)
        assert answer is not None and answer.rcode() == dns.rcode.NXDOMAIN
        assert ede_codes(answer) == [15]
    assert not pipeline.forwarder.forwarded  # type: ignore[attr-defined]


def test_a_client_outside_the_access_list_is_refused(pipeline: Pipeline) -> None:
    answer = ask(pipeline, "www.example.com", address=STRANGER)
    assert answer is not None and answer.rcode() == dns.rcode.REFUSED
    assert ede_codes(answer) == [18]


def test_a_malformed_query_is_formerr_and_garbage_is_dropped(pipeline: Pipeline) -> None:
    query = dns.message.make_query("www.example.com", "A").to_wire()
    bad_name = query[:12] + b"\x40" + query[13:]  # a label length over 63
    out = pipeline.handle(bad_name, CLIENT, True, Source(), 0, 100.0)
    assert out is not None and dns.message.from_wire(out, question_only=True).rcode() in (
        dns.rcode.FORMERR,
        dns.rcode.NOTIMP,
    )
    assert pipeline.handle(b"\x00\x01", CLIENT, True, Source(), 0, 100.0) is None


def test_a_cname_to_a_listed_name_is_blocked_on_the_way_back(pipeline: Pipeline) -> None:
    ask(pipeline, "alias.example.org")
    (answer,) = resume(
        pipeline,
        [
            ("alias.example.org.", "CNAME", "www.casino.example."),
            ("www.casino.example.", "A", "192.0.2.9"),
        ],
    )
    assert answer.rcode() == dns.rcode.NXDOMAIN and ede_codes(answer) == [15]
    again = ask(pipeline, "alias.example.org")  # from the cache: checked again
    assert again is not None and again.rcode() == dns.rcode.NXDOMAIN


def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(pipeline: Pipeline) -> None:
    records = [("big.example.org.", "TXT", f'"{"x" * 200}{i}"') for i in range(10)]
    ask(pipeline, "big.example.org", "TXT")
    (first,) = resume(pipeline, records)
    assert first.flags & dns.flags.TC and not first.answer
    udp = ask(pipeline, "big.example.org", "TXT", payload=512)
    assert udp is not None and udp.flags & dns.flags.TC
    tcp = ask(pipeline, "big.example.org", "TXT", udp=False)
    assert tcp is not None and not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 10


def test_upstream_failure_is_servfail_never_nxdomain(pipeline: Pipeline) -> None:
    ask(pipeline, "down.example.org")
    forwarder = pipeline.forwarder
    assert isinstance(forwarder, RecordingForwarder)
    ((query, reply),) = forwarder.forwarded
    pipeline.resume(query, reply, None, "timeout")
    assert isinstance(reply, Sent)
    (answer,) = [dns.message.from_wire(a) for a in reply.answers]
    assert answer.rcode() == dns.rcode.SERVFAIL and ede_codes(answer) == [22]


def test_any_gets_the_minimal_answer_without_a_forward(pipeline: Pipeline) -> None:
    answer = ask(pipeline, "www.example.com", "ANY")
    assert answer is not None
    assert [rrset.rdtype for rrset in answer.answer] == [dns.rdatatype.HINFO]
    assert not pipeline.forwarder.forwarded  # type: ignore[attr-defined]


def test_the_rate_limit_applies_to_udp_answers_only(pipeline: Pipeline) -> None:
    pipeline.rrl = ResponseRateLimit(1, 2, 0, 2, pipeline.counters)
    answers = [ask(pipeline, "casino.example") for _ in range(6)]
    sent = [a for a in answers if a is not None]
    assert len([a for a in sent if not a.flags & dns.flags.TC]) == 2  # the burst
    assert len([a for a in sent if a.flags & dns.flags.TC]) == 2  # every second one after
    assert pipeline.counters.rate_dropped == 2 and pipeline.counters.rate_slipped == 2
    assert all(ask(pipeline, "casino.example", udp=False) is not None for _ in range(6))
