"""Groups and profiles on the query path: ``Pipeline.handle`` with clients
in different groups, a wall clock the test sets, a trusted forwarder's
client subnet, and safe-search rewrites (bytes in, bytes out)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from filterd.config.load import parse_config
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.pipeline.cache import ResponseCache
from filterd.pipeline.clock import WallClock
from filterd.pipeline.forward import Forwarder
from filterd.pipeline.guard import Guard
from filterd.pipeline.pipeline import Pipeline
from filterd.pipeline.policy import GroupCounter, Policy
from filterd.pipeline.tally import Counters
from filterd.profiles.profileset import ProfileSet
from filterd.wire.query import Query
from tests.unit.pipeline.test_handle import (
    RecordingForwarder,
    Sent,
    Source,
    answer_forwarded,
    ede_codes,
)

KIDS = ipaddress.ip_address("10.1.0.7").packed
EVENING = ipaddress.ip_address("10.2.0.7").packed
ANYONE = ipaddress.ip_address("10.9.0.7").packed
FORWARDER = ipaddress.ip_address("10.0.0.53").packed

CONFIG = """
upstream: {servers: ['192.0.2.1']}
access: {allow: ['0.0.0.0/0']}
blocking: {sinkhole: {ipv4: 192.0.2.80}}
lists:
  - {name: national, path: national.txt, mandatory: true, category: gambling}
  - {name: games, path: games.txt, category: games, opt_in: true, https_only: true}
  - {name: adult, path: adult.txt, category: adult, opt_in: true}
  - {name: kids-allow, path: allow.txt, kind: allow, category: kids-allow, opt_in: true}
  - {name: operator, path: operator.txt, category: malware}
groups:
  kids: {networks: ["10.1.0.0/16"], profile: kids}
  evening: {networks: ["10.2.0.0/16"], profile: evening}
profiles:
  kids:
    categories: [games, adult, kids-allow]
    safe_search: true
    youtube: strict
    action: sinkhole
    https_action: nodata
  evening:
    scheduled: {games: study}
schedules:
  study: [{days: all, start: "07:00", end: "17:00"}]
client_subnet: {trust: ["10.0.0.53/32"]}
"""


class Wall:
    """The wall clock schedules read: set by the test."""

    def __init__(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).timestamp()

    def read(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall("2026-09-07T06:59:30+07:00")


@pytest.fixture
def counters() -> dict[str, GroupCounter]:
    return {}


@pytest.fixture
def pipeline(tmp_path: Path, wall: Wall, counters: dict[str, GroupCounter]) -> Pipeline:
    (tmp_path / "national.txt").write_text("casino.example\n")
    (tmp_path / "games.txt").write_text("games.example\ncasino.example\nmalware.example\n")
    (tmp_path / "allow.txt").write_text("ok.games.example\ncasino.example\nmalware.example\n")
    (tmp_path / "operator.txt").write_text("malware.example\n")
    (tmp_path / "adult.txt").write_text("adult.example\n")
    config = parse_config(CONFIG + "state_dir: state\n", "c.yaml", tmp_path)
    matcher, sources = open_matcher(compile_lists(config).index_path)
    policy = Policy(
        matcher,
        sources,
        config.blocking,
        1232,
        {},
        ProfileSet(config),
        counters,
        WallClock(wall.read),
    )
    forwarder = RecordingForwarder()

    def make_forwarder(_: Pipeline) -> Forwarder:
        return forwarder  # type: ignore[return-value]  # the stand-in has what handle uses

    guard = Guard(config.access.allow)
    return Pipeline(
        guard, policy, ResponseCache(1000, 0), make_forwarder, 1232, False, Counters(), None
    )


def ask(
    pipeline: Pipeline,
    name: str,
    address: bytes,
    rdtype: str = "A",
    *,
    now: float = 100.0,
    options: Sequence[dns.edns.Option] = (),
    source: Source | None = None,
) -> dns.message.Message | None:
    query = dns.message.make_query(name, rdtype, use_edns=0, options=list(options))
    out = pipeline.handle(query.to_wire(), address, True, source or Source(), 0, now)
    return None if out is None else dns.message.from_wire(out)


def forwarded(pipeline: Pipeline) -> list[str]:
    forwarder = pipeline.forwarder
    assert isinstance(forwarder, RecordingForwarder)
    names = [
        dns.message.from_wire(q.data).question[0].name.to_text() for q, _ in forwarder.forwarded
    ]
    return names


def answer_upstream(pipeline: Pipeline, records: dict[str, str], now: float = 100.0) -> None:
    """Answer every forwarded question with an A record from ``records`` (by name)."""

    def respond(query: Query) -> bytes:
        request = dns.message.from_wire(query.data)
        response = dns.message.make_response(request)
        owner = request.question[0].name
        if owner.to_text() in records:
            response.answer.append(
                dns.rrset.from_text(owner, 300, "IN", "A", records[owner.to_text()])
            )
        return bytes(response.to_wire())

    answer_forwarded(pipeline, respond, now)


def test_groups_get_their_profiles_answers(pipeline: Pipeline) -> None:
    kids = ask(pipeline, "www.adult.example", KIDS)
    assert kids is not None and kids.answer[0].to_text().endswith("A 192.0.2.80")  # sinkhole
    assert ede_codes(kids) == [17]  # Filtered: a category the network opted into
    assert ask(pipeline, "www.adult.example", ANYONE) is None  # forwarded: not filtered
    assert forwarded(pipeline) == ["www.adult.example."]
    # An HTTPS-only list's sinkhole becomes the profile's https_action.
    games = ask(pipeline, "games.example", KIDS)
    assert games is not None and games.rcode() == dns.rcode.NOERROR and not games.answer
    assert ede_codes(games) == [17]
    # The kids' own allowlist lifts their category block, for them only.
    assert ask(pipeline, "ok.games.example", KIDS) is None


def test_no_profile_lifts_the_mandatory_list(pipeline: Pipeline) -> None:
    for address in (EVENING, ANYONE):
        answer = ask(pipeline, "www.casino.example", address)
        assert answer is not None and answer.rcode() == dns.rcode.NXDOMAIN
        assert ede_codes(answer) == [16]  # Censored: the authority's list
    # The kids' profile answers every block with its block page, still as censored.
    kids = ask(pipeline, "www.casino.example", KIDS)
    assert kids is not None and kids.answer[0].to_text().endswith("A 192.0.2.80")
    assert ede_codes(kids) == [16]


def test_an_operator_list_applies_to_everyone_but_a_profile_allowlist_may_lift_it(
    pipeline: Pipeline,
) -> None:
    anyone = ask(pipeline, "malware.example", ANYONE)
    assert anyone is not None and anyone.rcode() == dns.rcode.NXDOMAIN and ede_codes(anyone) == [15]
    assert ask(pipeline, "malware.example", KIDS) is None


def test_a_schedule_transition_applies_on_the_next_query(pipeline: Pipeline, wall: Wall) -> None:
    assert ask(pipeline, "games.example", EVENING, now=100.0) is None  # 06:59:30
    assert forwarded(pipeline) == ["games.example."]
    wall.now += 30  # 07:00:00; the monotonic clock moves as much
    blocked = ask(pipeline, "games.example", EVENING, now=130.0)
    assert blocked is not None and blocked.rcode() == dns.rcode.NXDOMAIN
    assert ede_codes(blocked) == [17]
    wall.now += 10 * 3600  # 17:00: the memoised block must not outlive the window
    assert ask(pipeline, "games.example", EVENING, now=130.0 + 10 * 3600) is None


def test_a_trusted_forwarder_s_client_subnet_decides_the_group(pipeline: Pipeline) -> None:
    kids_subnet = [dns.edns.ECSOption("10.1.0.0", 24)]
    blocked = ask(pipeline, "games.example", FORWARDER, options=kids_subnet)
    assert blocked is not None and ede_codes(blocked) == [17]
    # The same option from anyone else is ignored: it is theirs to forge.
    assert ask(pipeline, "games.example", ANYONE, options=kids_subnet) is None
    # A subnet in no group: the forwarder's own group (here the default).
    assert (
        ask(pipeline, "games.example", FORWARDER, options=[dns.edns.ECSOption("172.16.0.0", 16)])
        is None
    )


def test_safe_search_answers_with_a_cname_and_the_target_s_addresses(pipeline: Pipeline) -> None:
    source = Source()
    # The clock the pipeline reads when upstream answers, in whole seconds:
    # (now + 100) - now is 100 exactly only when now + 100 needs no rounding,
    # which a fractional reading just below a power of two (4096 s of uptime,
    # say) does not give, and the TTL below would be 201.
    now = float(int(time.monotonic()))
    assert ask(pipeline, "WWW.Google.com", KIDS, source=source, now=now) is None
    assert forwarded(pipeline) == ["forcesafesearch.google.com."]
    answer_upstream(pipeline, {"forcesafesearch.google.com.": "216.239.38.120"}, now)
    (reply,) = source.replies
    assert isinstance(reply, Sent)
    (wire,) = reply.answers
    message = dns.message.from_wire(wire)
    assert message.question[0].name.to_text() == "WWW.Google.com."  # echoed as asked
    assert [rrset.to_text() for rrset in message.answer] == [
        "WWW.Google.com. 5 IN CNAME forcesafesearch.google.com.",
        "forcesafesearch.google.com. 300 IN A 216.239.38.120",
    ]
    # The target is now cached: the next client gets the whole chain at once.
    cached = ask(pipeline, "www.google.com", KIDS, now=now + 100)
    assert cached is not None
    assert [rrset.to_text() for rrset in cached.answer] == [
        "www.google.com. 5 IN CNAME forcesafesearch.google.com.",
        "forcesafesearch.google.com. 200 IN A 216.239.38.120",
    ]
    # Other groups get the real name.
    assert ask(pipeline, "www.google.com", ANYONE) is None
    assert forwarded(pipeline) == ["www.google.com."]


def test_an_unresolvable_safe_search_target_is_servfail(pipeline: Pipeline) -> None:
    source = Source()
    assert ask(pipeline, "www.youtube.com", KIDS, source=source) is None
    assert forwarded(pipeline) == ["restrict.youtube.com."]
    forwarder = pipeline.forwarder
    assert isinstance(forwarder, RecordingForwarder)
    (query, reply) = forwarder.forwarded[0]
    pipeline.resume(query, reply, None, "timeout")
    (sent,) = source.replies
    message = dns.message.from_wire(sent.answers[0])
    assert message.rcode() == dns.rcode.SERVFAIL
    assert message.question[0].name.to_text() == "www.youtube.com."


def test_per_group_counters(pipeline: Pipeline, counters: dict[str, GroupCounter]) -> None:
    ask(pipeline, "games.example", KIDS)
    ask(pipeline, "www.casino.example", KIDS)
    ask(pipeline, "www.google.com", KIDS)
    ask(pipeline, "games.example", ANYONE)
    assert counters["kids"] == GroupCounter("kids", queries=3, blocked=2, rewritten=1)
    assert counters["default"] == GroupCounter("default", queries=1)
    assert counters["evening"] == GroupCounter("evening")
