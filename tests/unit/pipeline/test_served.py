"""Repeats served from the *served* table (``filterd.pipeline.pipeline``):
the same bytes, the same counts, and nothing a new snapshot or a second of
age has changed.

The table answers a message by its bytes after the ID, skipping decode,
policy and cache. Its one law is that it changes nothing a client or an
operator can see: every answer is the one the full pipeline gives, byte for
byte, and every counter moves as it would. The property test holds two
pipelines with the same state to that law over random sequences of
questions (case, RD, ID, client, transport), clock steps, list swaps and
upstream answers; one of them forgets its table before every query. The
named tests are the cases the law must cover, spelled out.
"""

from __future__ import annotations

import gc
import ipaddress
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from filterd.config import Config, ListConfig
from filterd.config.load import parse_config
from filterd.formats import Format
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.pipeline.cache import ResponseCache
from filterd.pipeline.clock import WallClock
from filterd.pipeline.forward import Forwarder
from filterd.pipeline.guard import Guard
from filterd.pipeline.pipeline import Pipeline
from filterd.pipeline.policy import BlockCounter, GroupCounter, Policy
from filterd.pipeline.tally import QTYPE_SLOT, BlockedNames, Counters
from filterd.pipeline.untracked import NATIVE_STORE
from filterd.profiles.profileset import ProfileSet
from filterd.wire.query import Query, parse_query
from tests.unit.pipeline.test_handle import (
    CLIENT,
    STRANGER,
    RecordingForwarder,
    Source,
    answer_forwarded,
    resume,
)

NAMES = ("www.example.com", "cdn.example.net", "casino.example", "mail.example.org")
RECORDS = {
    "A": "192.0.2.1",
    "AAAA": "2001:db8::1",
    "TXT": '"v=spf1 -all"',
}


class Books:
    """The counters that outlive snapshots (blocks, groups), one set per pipeline."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[str, str, str], BlockCounter] = {}
        self.groups: dict[str, GroupCounter] = {}


GROUPS = """
access: {allow: ['192.0.2.0/24', '10.0.0.0/8']}
lists:
  - {name: national, path: national.txt, mandatory: true}
  - {name: adult, path: adult.txt, category: adult, opt_in: true}
groups:
  kids: {networks: ["10.1.0.0/16"], profile: kids}
  evening: {networks: ["10.2.0.0/16"], profile: evening}
profiles:
  kids: {categories: [adult]}
  evening: {scheduled: {adult: study}}
schedules:
  study: [{days: all, start: "07:00", end: "17:00"}]
"""
KIDS = ipaddress.ip_address("10.1.0.7").packed
EVENING = ipaddress.ip_address("10.2.0.7").packed
BEFORE_THE_BELL = datetime.fromisoformat("2026-09-07T06:59:00+07:00").timestamp()
"""A minute before the study window opens: the evening profile starts blocking."""


@dataclass(frozen=True)
class Snapshot:
    """A compiled index and the configuration whose profiles read it."""

    index: Path
    config: Config


def compile_index(tmp_path: Path, listed: tuple[str, ...], grouped: bool = False) -> Snapshot:
    """A real compiled index blocking ``listed`` (and a name nobody asks:
    a list with no entry is refused); ``grouped``: with the groups and
    profiles of ``GROUPS`` (a category list for the kids)."""
    tag = ("g-" if grouped else "") + ("-".join(listed) or "none")
    where = tmp_path / tag
    where.mkdir()
    (where / "national.txt").write_text("".join(f"{n}\n" for n in (*listed, "filler.example")))
    if grouped:
        (where / "adult.txt").write_text("cdn.example.net\n")
        config = parse_config(GROUPS + "state_dir: state\n", "c.yaml", where)
    else:
        lst = ListConfig(name="national", path=where / "national.txt", format=Format.DOMAINS)
        config = Config(lists=(lst,), state_dir=where / "state")
    return Snapshot(compile_lists(config).index_path, config)


def make_policy(
    snapshot: Snapshot | Path, books: Books, wall: Callable[[], float] = lambda: BEFORE_THE_BELL
) -> Policy:
    """A snapshot counting into ``books`` (a bare index: the default
    profiles), its schedules reading ``wall``."""
    if isinstance(snapshot, Path):
        snapshot = Snapshot(snapshot, Config())
    matcher, sources = open_matcher(snapshot.index)
    config = snapshot.config
    profiles = ProfileSet(config) if config.groups else None
    return Policy(
        matcher,
        sources,
        config.blocking,
        1232,
        books.blocks,
        profiles,
        books.groups,
        WallClock(wall, poll=0.05),  # the machine's wall clock runs fast
    )


def make_pipeline(policy: Policy) -> Pipeline:
    forwarder = RecordingForwarder()

    def make_forwarder(_: Pipeline) -> Forwarder:
        return forwarder  # type: ignore[return-value]  # the stand-in has what handle uses

    allow = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("10.0.0.0/8"))
    cache = ResponseCache(1 << 20, 0)
    top = BlockedNames(10)
    return Pipeline(Guard(allow), policy, cache, make_forwarder, 1232, False, Counters(), top)


def wire(name: str, rdtype: str = "A", *, ident: int = 1, rd: bool = True) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    query.id = ident
    if not rd:
        query.flags &= ~dns.flags.RD
    return query.to_wire()


def fill(pipeline: Pipeline, name: str, rdtype: str = "A", ttl_now: float = 100.0) -> None:
    """A miss, then the upstream's answer: ``name`` is in the cache."""
    assert pipeline.handle(wire(name, rdtype), CLIENT, True, Source(), 0, ttl_now) is None
    resume(pipeline, [(f"{name}.", rdtype, RECORDS[rdtype])], now=ttl_now)


def counts(pipeline: Pipeline, books: Books) -> dict[str, object]:
    """Everything the pipeline counts that an operator reads."""
    cache = pipeline.cache
    return {
        "udp": [asdict(o) for o in pipeline.counters.udp],
        "tcp": [asdict(o) for o in pipeline.counters.tcp],
        "cache": (cache.hits, cache.misses, cache.expired, len(cache), cache.bytes),
        "groups": {name: (g.queries, g.blocked) for name, g in books.groups.items()},
        "blocks": {key: b.count for key, b in books.blocks.items()},
        "top": pipeline.blocked_names.candidates() if pipeline.blocked_names else None,
    }


def answer_all(pipeline: Pipeline, now: float, ttl: int) -> list[bytes]:
    """The upstream answers every forwarded query (``ttl``); what clients got."""

    def respond(query: Query) -> bytes:
        request = dns.message.from_wire(query.data)
        question = request.question[0]
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(request)
        response.answer.append(
            dns.rrset.from_text(question.name, ttl, "IN", rdtype, RECORDS[rdtype])
        )
        return bytes(response.to_wire())

    return answer_forwarded(pipeline, respond, now)


@pytest.fixture
def books() -> Books:
    return Books()


@pytest.fixture
def pipeline(tmp_path: Path, books: Books) -> Pipeline:
    return make_pipeline(make_policy(compile_index(tmp_path, ("casino.example",)).index, books))


def test_a_repeat_gets_the_same_answer_under_its_own_id_and_counts_as_a_hit(
    pipeline: Pipeline, books: Books
) -> None:
    fill(pipeline, "www.example.com")
    first = pipeline.handle(wire("www.example.com", ident=7), CLIENT, True, Source(), 0, 100.2)
    before = pipeline.counters.udp[QTYPE_SLOT[1]].cached, pipeline.cache.hits
    again = pipeline.handle(wire("www.example.com", ident=9), CLIENT, True, Source(), 0, 100.4)
    assert first is not None and again is not None
    assert first[:2] == b"\x00\x07" and again[:2] == b"\x00\x09" and first[2:] == again[2:]
    after = pipeline.counters.udp[QTYPE_SLOT[1]].cached, pipeline.cache.hits
    assert after == (before[0] + 1, before[1] + 1)
    assert books.groups["default"].queries == 3  # the miss, the hit, the repeat


def test_a_repeat_after_a_new_snapshot_gets_the_new_verdict(
    pipeline: Pipeline, tmp_path: Path, books: Books
) -> None:
    """Found by reasoning about the table: an answer decided by the old list
    must not outlive the swap, even within the same second of age."""
    fill(pipeline, "www.example.com")
    allowed = pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 100.2)
    assert allowed is not None and dns.message.from_wire(allowed).rcode() == dns.rcode.NOERROR
    pipeline.swap_policy(make_policy(compile_index(tmp_path, ("example.com",)).index, books))
    blocked = pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 100.3)
    assert blocked is not None and dns.message.from_wire(blocked).rcode() == dns.rcode.NXDOMAIN


def test_with_several_profiles_an_allowed_name_is_memoised_once_for_all_of_them(
    tmp_path: Path, books: Books
) -> None:
    """Found by reading the compiled code: the ``everyone`` memo was chosen by
    ``verdict is PASS``, and compiled, a fixed-length tuple is boxed anew
    wherever it becomes an object, so the test never held and every view
    kept its own copy of every allowed name."""
    policy = make_policy(compile_index(tmp_path, ("casino.example",), grouped=True), books)
    pipeline = make_pipeline(policy)
    for client in (KIDS, EVENING, CLIENT):  # three groups, three profiles
        pipeline.handle(wire("www.example.com"), client, True, Source(), 0, 100.0)
    query = parse_query(wire("www.example.com"))
    assert query is not None
    key = query.key
    assert key in policy.everyone
    assert not [t for g in policy.groups for t in g.view.memos() if key in t]
    assert tracked_tables(pipeline) == []


def served_block(pipeline: Pipeline, data: bytes) -> object:
    """What the default group's table of blocks holds for ``data`` (``None``: nothing)."""
    return pipeline.policy.groups[0].served_blocks.get(data[2:])


def test_a_blocked_repeat_gets_the_same_answer_under_its_own_id_and_counts_as_a_block(
    pipeline: Pipeline, books: Books
) -> None:
    pipeline.handle(wire("www.casino.example", ident=5), CLIENT, True, Source(), 0, 100.0)
    first = pipeline.handle(wire("www.casino.example", ident=7), CLIENT, True, Source(), 0, 100.0)
    assert served_block(pipeline, wire("www.casino.example")) is not None
    before = counts(pipeline, books)
    again = pipeline.handle(wire("www.casino.example", ident=9), CLIENT, True, Source(), 0, 900.0)
    assert first is not None and again is not None
    assert dns.message.from_wire(again).rcode() == dns.rcode.NXDOMAIN
    assert first[:2] == b"\x00\x07" and again[:2] == b"\x00\x09" and first[2:] == again[2:]
    after = counts(pipeline, books)
    assert after["blocks"] == {k: n + 1 for k, n in before["blocks"].items()}  # type: ignore[attr-defined]
    assert after["groups"] == {"default": (3, 3)}
    assert after["top"] == [(b"\x06casino\x07example\x00", "uncategorized", 3)]
    slot = pipeline.counters.udp[QTYPE_SLOT[1]]
    assert (slot.blocked, slot.cached) == (3, 0)


def test_a_listed_name_asked_once_is_not_kept(pipeline: Pipeline) -> None:
    """The long tail of a list: a blocked question asked once would only fill
    the table with its own bytes; its second asking is kept, for the third."""
    data = wire("once.casino.example")
    assert pipeline.handle(data, CLIENT, True, Source(), 0, 100.0) is not None
    assert served_block(pipeline, data) is None
    assert pipeline.handle(data, CLIENT, True, Source(), 0, 100.0) is not None
    assert served_block(pipeline, data) is not None


def test_a_blocked_message_in_any_form_is_served_again_as_asked(pipeline: Pipeline) -> None:
    """A block's rendering depends on the message alone: a 0x20 client's
    case and a cleared RD come back as the full path renders them."""
    data = wire("wWw.CaSiNo.example", "AAAA", ident=3, rd=False)
    pipeline.handle(data, CLIENT, True, Source(), 0, 100.0)
    first = pipeline.handle(data, CLIENT, True, Source(), 0, 100.0)
    assert served_block(pipeline, data) is not None
    again = pipeline.handle(data, CLIENT, False, Source(False), 0, 100.5)
    assert first is not None and first == again
    message = dns.message.from_wire(again)
    assert str(message.question[0].name) == "wWw.CaSiNo.example."
    assert not message.flags & dns.flags.RD


def test_a_blocked_repeat_after_the_name_left_the_list_is_asked_upstream(
    pipeline: Pipeline, tmp_path: Path, books: Books
) -> None:
    for _ in (1, 2):
        pipeline.handle(wire("casino.example"), CLIENT, True, Source(), 0, 100.0)
    assert served_block(pipeline, wire("casino.example")) is not None
    pipeline.swap_policy(make_policy(compile_index(tmp_path, ("example.org",)).index, books))
    assert pipeline.handle(wire("casino.example"), CLIENT, True, Source(), 0, 100.1) is None
    assert pipeline.forwarder.forwarded  # type: ignore[attr-defined]  # asked upstream


def test_a_dropped_block_is_never_kept(tmp_path: Path, books: Books) -> None:
    """No answer, nothing to repeat: every repeat runs the full path and is counted dropped."""
    (tmp_path / "national.txt").write_text("casino.example\n")
    text = "lists: [{name: national, path: national.txt}]\nblocking: {default_action: drop}\n"
    config = parse_config(text + "state_dir: state\n", "c.yaml", tmp_path)
    snapshot = Snapshot(compile_lists(config).index_path, config)
    pipeline = make_pipeline(make_policy(snapshot, books))
    for ident in (1, 2, 3):
        assert (
            pipeline.handle(wire("casino.example", ident=ident), CLIENT, True, Source(), 0, 100.0)
            is None
        )
    assert served_block(pipeline, wire("casino.example")) is None
    assert pipeline.counters.udp[QTYPE_SLOT[1]].dropped == 3


def test_a_repeat_in_a_later_second_of_age_gets_aged_ttls(pipeline: Pipeline) -> None:
    fill(pipeline, "www.example.com")
    pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 100.5)
    later = pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 102.5)
    assert later is not None and dns.message.from_wire(later).answer[0].ttl == 298


def test_a_refused_client_sending_a_served_message_is_still_refused(pipeline: Pipeline) -> None:
    fill(pipeline, "www.example.com")
    pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 100.2)
    out = pipeline.handle(wire("www.example.com"), STRANGER, True, Source(), 0, 100.3)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.REFUSED


def test_an_expired_answer_is_never_served_again(pipeline: Pipeline) -> None:
    fill(pipeline, "www.example.com")
    pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 399.5)
    assert pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 400.0) is None
    assert pipeline.forwarder.forwarded  # type: ignore[attr-defined]  # asked upstream again


def test_a_renewed_repeat_never_skips_the_check_of_a_new_answer_s_cnames(
    pipeline: Pipeline,
) -> None:
    """Found by mutating ``_renew``: a served entry outlives its answer's
    expiry, and meanwhile another message for the same question (here in
    mixed case) brought a new upstream answer whose CNAME points into the
    list. The renewed repeat must get what the full pipeline gives: the
    block, not the new answer's records."""
    fill(pipeline, "www.example.com")
    kept = pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 100.2)
    assert kept is not None and dns.message.from_wire(kept).rcode() == dns.rcode.NOERROR
    assert pipeline.handle(wire("WWW.Example.com"), CLIENT, True, Source(), 0, 401.0) is None
    chained = [
        ("WWW.Example.com.", "CNAME", "casino.example."),
        ("casino.example.", "A", "192.0.2.66"),
    ]
    (other,) = resume(pipeline, chained, now=401.0)
    assert other.rcode() == dns.rcode.NXDOMAIN  # the CNAME target is listed
    again = pipeline.handle(wire("www.example.com"), CLIENT, True, Source(), 0, 401.5)
    assert again is not None
    message = dns.message.from_wire(again)
    assert message.rcode() == dns.rcode.NXDOMAIN and not message.answer


def test_a_renewed_repeat_never_sends_a_classic_client_more_than_512_octets(
    pipeline: Pipeline,
) -> None:
    """The same mutation's other half: the new answer no longer fits a
    client without EDNS (RFC 1035 §4.2.1), which gets it truncated (TC=1)."""

    def classic(name: str) -> bytes:
        query = dns.message.make_query(name, "TXT", use_edns=False)
        query.id = 5
        return query.to_wire()

    small = [("www.example.com.", "TXT", '"v=spf1 -all"')]
    assert pipeline.handle(classic("www.example.com"), CLIENT, True, Source(), 0, 100.0) is None
    resume(pipeline, small, now=100.0)
    kept = pipeline.handle(classic("www.example.com"), CLIENT, True, Source(), 0, 100.2)
    assert kept is not None and len(kept) <= 512  # served from the cache: now in the table
    big = [("WWW.Example.com.", "TXT", " ".join(f'"{i:03d}{"x" * 96}"' for i in range(8)))]
    assert pipeline.handle(classic("WWW.Example.com"), CLIENT, True, Source(), 0, 401.0) is None
    (other,) = resume(pipeline, big, now=401.0)
    assert other.flags & dns.flags.TC
    again = pipeline.handle(classic("www.example.com"), CLIENT, True, Source(), 0, 401.5)
    assert again is not None and len(again) <= 512
    assert dns.message.from_wire(again).flags & dns.flags.TC


Question = tuple[str, str, bool, bool, int, bytes, bool]
QUESTION = st.tuples(
    st.sampled_from(NAMES[:3]),
    st.sampled_from(("A", "TXT")),
    st.sampled_from((False, False, False, True)),  # a 0x20 client, now and then
    st.sampled_from((True, True, True, False)),  # RD, mostly set
    st.integers(0, 0xFFFF),  # ID
    st.just(CLIENT),  # replaced by the machine's client
    st.sampled_from((True, True, True, False)),  # over UDP, mostly
)


def forget_served(pipeline: Pipeline) -> None:
    for group in pipeline.policy.groups:
        if group.served is not None:
            group.served.clear()
        group.served_blocks.clear()


def served_size(pipeline: Pipeline) -> int:
    hits = sum(len(g.served) for g in pipeline.policy.groups if g.served is not None)
    return hits + sum(len(g.served_blocks) for g in pipeline.policy.groups)


def tracked_tables(pipeline: Pipeline) -> list[str]:
    """The query path's tables the cyclic collector would visit entry by
    entry (``filterd.pipeline.untracked``): verdict memos hold ints, so never;
    the cache and the served tables hold tuples, untracked by the C extension."""
    policy = pipeline.policy
    tables: dict[str, dict[bytes, object]] = {
        "everyone": policy.everyone,  # type: ignore[dict-item]
        "everyone_text": policy.everyone_text,  # type: ignore[dict-item]
    }
    for number, group in enumerate(policy.groups):
        for memo, table in enumerate(group.view.memos()):
            tables[f"group {number} memo {memo}"] = table
        if NATIVE_STORE and group.served is not None:
            tables[f"group {number} served"] = group.served  # type: ignore[assignment]
        if NATIVE_STORE:
            tables[f"group {number} served blocks"] = group.served_blocks  # type: ignore[assignment]
    if NATIVE_STORE:
        tables["cache"] = pipeline.cache._entries  # type: ignore[assignment]
    return [name for name, table in tables.items() if gc.is_tracked(table)]


class ServedAgainstReference(RuleBasedStateMachine):
    """Two pipelines with the same state; the reference forgets its tables
    before every query, so it always runs the full pipeline."""

    grouped = False
    clients: tuple[bytes, ...] = (CLIENT, CLIENT, CLIENT, STRANGER)

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory(prefix="filterd-served-")
        self.tmp = Path(self._dir.name)
        self.snapshots: dict[tuple[str, ...], Snapshot] = {}
        self.mine, self.theirs = Books(), Books()
        self.wall = BEFORE_THE_BELL
        start = self.snapshot(("casino.example",))
        self.served = make_pipeline(make_policy(start, self.mine, self.read_wall))
        self.reference = make_pipeline(make_policy(start, self.theirs, self.read_wall))
        self.now = 100.0
        self.last: Question | None = None

    def read_wall(self) -> float:
        return self.wall

    def snapshot(self, listed: tuple[str, ...]) -> Snapshot:
        if listed not in self.snapshots:
            self.snapshots[listed] = compile_index(self.tmp, listed, self.grouped)
        return self.snapshots[listed]

    def both(self, data: bytes, address: bytes, udp: bool) -> None:
        forget_served(self.reference)  # the reference never uses its tables
        got = self.served.handle(data, address, udp, Source(udp), 0, self.now)
        want = self.reference.handle(data, address, udp, Source(udp), 0, self.now)
        assert got == want
        event(f"tables hold {min(served_size(self.served), 2)}+ messages")

    @rule(question=QUESTION, client=st.integers(0, 3))
    def ask(self, question: Question, client: int) -> None:
        self.last = question
        self.again(1, client)

    @rule(times=st.integers(1, 4), client=st.integers(0, 3))
    def again(self, times: int, client: int) -> None:
        """The last question again, under new IDs (a popular name), perhaps
        from another client."""
        if self.last is None:
            return
        name, rdtype, mixed, rd, ident, _, udp = self.last
        if mixed:
            name = "".join(c.upper() if i % 2 else c for i, c in enumerate(name))
        for repeat in range(times):
            data = wire(name, rdtype, ident=(ident + repeat) & 0xFFFF, rd=rd)
            self.both(data, self.clients[client], udp)

    @rule(ttl=st.integers(1, 10))
    def answer(self, ttl: int) -> None:
        """The upstream answers every query it was asked."""
        assert answer_all(self.served, self.now, ttl) == answer_all(self.reference, self.now, ttl)

    @rule(seconds=st.floats(0.05, 2.0))
    def wait(self, seconds: float) -> None:
        """Time passes; the wall clock runs ten minutes per second, so that
        the study window opens while answers stored before it are still
        within their second."""
        self.now += seconds
        self.wall += seconds * 600

    @rule(listed=st.sets(st.sampled_from(NAMES[:3])))
    def swap(self, listed: set[str]) -> None:
        """A new list version, installed between two queries."""
        snapshot = self.snapshot(tuple(sorted(listed)))
        self.served.swap_policy(make_policy(snapshot, self.mine, self.read_wall))
        self.reference.swap_policy(make_policy(snapshot, self.theirs, self.read_wall))

    @invariant()
    def same_counts(self) -> None:
        assert counts(self.served, self.mine) == counts(self.reference, self.theirs)

    @invariant()
    def no_table_in_the_collectors_sight(self) -> None:
        assert tracked_tables(self.served) == []
        assert tracked_tables(self.reference) == []

    def teardown(self) -> None:
        self._dir.cleanup()


class GroupedServedAgainstReference(ServedAgainstReference):
    """The same law with groups: a category list for the kids' network, a
    scheduled profile (no served table) and the default group."""

    grouped = True
    clients = (KIDS, EVENING, CLIENT, STRANGER)


MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ServedAgainstReference.TestCase.settings = MACHINE_SETTINGS
GroupedServedAgainstReference.TestCase.settings = MACHINE_SETTINGS
test_the_table_changes_no_answer_and_no_count = ServedAgainstReference.TestCase
test_with_groups_the_tables_change_no_answer_and_no_count = GroupedServedAgainstReference.TestCase


def test_a_scheduled_group_is_never_served_a_verdict_from_before_its_window(
    tmp_path: Path,
) -> None:
    """The evening profile blocks the adult category from 07:00: a repeat
    one second of wall clock after it opens must be blocked, although the
    allowed answer was given within the same second of its age."""
    wall = [BEFORE_THE_BELL + 59.5]
    books = Books()
    pipeline = make_pipeline(
        make_policy(compile_index(tmp_path, ("casino.example",), True), books, lambda: wall[0])
    )
    name = "cdn.example.net"  # on the adult list
    assert pipeline.handle(wire(name), EVENING, True, Source(), 0, 100.0) is None
    answer_all(pipeline, 100.0, 300)
    allowed = pipeline.handle(wire(name), EVENING, True, Source(), 0, 100.1)
    assert allowed is not None and dns.message.from_wire(allowed).rcode() == dns.rcode.NOERROR
    kids = pipeline.handle(wire(name), KIDS, True, Source(), 0, 100.1)
    assert kids is not None and dns.message.from_wire(kids).rcode() == dns.rcode.NXDOMAIN
    wall[0] += 1.0  # 07:00:00.5: the study window is open
    blocked = pipeline.handle(wire(name), EVENING, True, Source(), 0, 100.2)
    assert blocked is not None and dns.message.from_wire(blocked).rcode() == dns.rcode.NXDOMAIN
    again = pipeline.handle(wire(name), CLIENT, True, Source(), 0, 100.2)
    assert again is not None and dns.message.from_wire(again).rcode() == dns.rcode.NOERROR
