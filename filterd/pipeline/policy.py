"""Policy: the verdict for a question name, for the client's group.

Sits above the cache (the cache only holds upstream truth, so a list swap
or a schedule transition applies on the very next query, and no cache key
needs a group). A ``Policy`` is one snapshot (one index generation, one
configuration); a new snapshot means a new ``Policy``, so no memo can serve
a verdict from an old list.

Groups and profiles (docs/profiles.md): the client's address, or the EDNS
Client Subnet of a trusted forwarder, gives its group (``group_of``); the
group's profile has a ``View``: the verdicts that profile gets, memoised per
question. One index walk answers every profile (``Matcher.choices``,
memoised here by name when several profiles are in use); a view applies its
profile's category mask to that one result. The mask is recomputed when
the wall-clock minute changes (``filterd.pipeline.clock``), never per
query, and a view whose mask changed drops its memo: nothing decided before
a schedule transition is served after it.

Actions resolve once per rule and view (``Profile.action_for``), in this
order (first defined wins): ``blocking.category_actions[category]``, the
list's ``action``, the entry's own action (RPZ), the profile's ``action``,
``blocking.default_action``; then a sinkhole for a list marked
``https_only`` becomes the profile's ``https_action`` if it has one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from filterd.config import BlockingConfig
from filterd.matching.matcher import EVERYONE, Choices, Decision, Matcher
from filterd.model.rules import Action, Rule
from filterd.model.sources import SourceInfo
from filterd.pipeline.cache import Answer
from filterd.pipeline.clock import SYSTEM_CLOCK, WallClock
from filterd.pipeline.memo import make_room
from filterd.profiles.profileset import Profile, ProfileSet, default_profile_set
from filterd.wire.names import text_to_wire, wire_to_text
from filterd.wire.query import Query
from filterd.wire.subnet import client_subnet
from filterd.wire.synth import BlockAnswer

MEMO_LIMIT: Final = 524_288
"""Verdicts memoised per memo (room is made when full: ``make_room``). It
must hold the distinct questions of a working set, or verdicts are dropped
over and over and names decided again (a suffix walk, 3-4 µs): at 200,000
(then emptied when full), the 278,000 distinct questions of
``bench/run``'s mix were decided again for 17.5 % of queries instead of
7 %. An entry costs about 130 bytes (its key and dict slot): 65 MB at
most."""
ADDRESS_LIMIT: Final = 65_536
"""Client addresses whose group is memoised (bounded, room made when full:
a spoofed flood cannot grow it)."""


@dataclass(slots=True)
class BlockCounter:
    """Blocked answers for one (source, category, action): aggregated for metrics."""

    source: str
    category: str
    action: str
    count: int = 0


@dataclass(slots=True)
class GroupCounter:
    """One group's queries, blocked answers and safe-search rewrites (its
    name is a bounded label from the configuration, never an address)."""

    name: str
    queries: int = 0
    blocked: int = 0
    rewritten: int = 0


class CountedBlock(BlockAnswer):
    """A ``BlockAnswer`` that also counts its uses (an integer increment on the
    hot path), and knows its number in the view that compiled it (a served
    repeat names its block by that number: ``ServedBlocks``)."""

    __slots__ = ("counter", "number")

    counter: BlockCounter
    number: int


class Rewrite:
    """Safe search: the name is answered as ``target`` (``filterd.wire.rewrite``).

    ``spliced`` memoises finished answers (``filterd.pipeline.rewrite``)."""

    __slots__ = ("spliced", "target", "target_wire", "ttl")

    def __init__(self, target: bytes, ttl: int) -> None:
        self.target = target
        self.target_wire = text_to_wire(target)
        self.ttl = ttl
        self.spliced: dict[bytes, tuple[bytes, int, bytes]] = {}
        """Client's message after its ID -> (the cached answer's wire bytes it was
        spliced from, their age in seconds, the answer after its ID)."""


Verdict = tuple[CountedBlock | Rewrite | None, int]
"""(answer to send, a rewrite, or ``None`` for allowed; offset of the matched name in qname)."""
OFFSET_BITS: Final = 8
"""A memoised verdict is one int, ``number << OFFSET_BITS | offset``: the
number of the view's answer (``View``; 0 is allowed) and the offset of the
matched name in the text name (a name is at most 253 characters, RFC 1035
§2.3.4)."""
OFFSET_MASK: Final = (1 << OFFSET_BITS) - 1


class View:
    """One profile's verdicts within one snapshot, memoised per question.

    A verdict that is the same for every profile in use (allowed, no rule
    an opt-in category could change, no rewrite: most names) is memoised
    once for all views, in the policy's ``everyone`` memo, so that four
    groups cost no more memory than one; only the rest is the view's own
    (and only that is dropped when the view's mask changes).

    A memo holds each verdict as one int (``OFFSET_BITS``): the view numbers
    its answers (blocks and rewrites) as it compiles them. A dict of bytes
    and ints is never visited by the garbage collector, where one holding a
    tuple that refers to an answer object is visited entry by entry at every
    collection of its generation (``filterd.pipeline.untracked``)."""

    __slots__ = (
        "_answers",
        "_everyone",
        "_everyone_text",
        "_memo",
        "_numbered",
        "_policy",
        "_rewrites",
        "_shared",
        "_targets",
        "_text_memo",
        "mask",
        "profile",
    )

    def __init__(self, policy: Policy, profile: Profile, shared: bool) -> None:
        """``shared``: several views are in use (else this view keeps its own
        ``everyone`` memos)."""
        self._policy = policy
        self.profile = profile
        self.mask = 0
        self._memo: dict[bytes, int] = {}
        self._text_memo: dict[bytes, int] = {}
        self._everyone: dict[bytes, int] = policy.everyone if shared else {}
        self._everyone_text: dict[bytes, int] = policy.everyone_text if shared else {}
        self._shared = shared
        self._numbered: list[CountedBlock | Rewrite | None] = [None]
        """The view's answers by number (0: allowed)."""
        self._answers: dict[Rule, int] = {}
        """Rule -> the number of its block answer."""
        self._rewrites = profile.rewrites
        self._targets: dict[bytes, int] = {}
        """Rewrite target -> the number of its ``Rewrite``."""

    def memoised(self, key: bytes) -> Verdict | None:
        """The verdict already decided for a query's cache key, if any."""
        code = self._everyone.get(key)
        if code is None:
            code = self._memo.get(key)
            if code is None:
                return None
        return self._verdict(code)

    def decide(self, key: bytes, name_length: int) -> Verdict:
        """Decide (and memoise) for a validated query's cache key, whose first
        ``name_length`` bytes are the lower-cased wire name. Memoised by the
        whole key (type and variant included): one dict lookup per query and
        no slicing, at the price of one memo entry per type asked for a name."""
        text = wire_to_text(key[:name_length])
        code, everyone = self._decide(text) if text else (0, True)
        _remember(self._everyone if everyone else self._memo, key, code)
        return self._verdict(code)

    def check_text(self, name: bytes) -> Verdict:
        """Verdict for a canonical text name (CNAME targets), memoised apart from
        wire names (CDN aliases recur in many cached answers). Blocks only: a
        CNAME target is never rewritten."""
        code = self._everyone_text.get(name)
        if code is None:
            code = self._text_memo.get(name)
        if code is None:
            found = self._policy.choices(name)
            decision = found.pick(self.mask) if isinstance(found, Choices) else found
            code = self._code(decision)
            everyone = code == 0 and not isinstance(found, Choices)
            _remember(self._everyone_text if everyone else self._text_memo, name, code)
        return self._verdict(code)

    def memos(self) -> list[dict[Any, Any]]:
        """This view's own memo tables (see ``Policy.memos``)."""
        own = [self._memo, self._text_memo]
        return own if self._shared else [*own, self._everyone, self._everyone_text]

    def clear(self) -> None:
        """Forget this view's own verdicts (its mask changed). The ``everyone``
        verdicts stay: they are the same whatever the mask."""
        self._memo.clear()
        self._text_memo.clear()

    def _decide(self, text: bytes) -> tuple[int, bool]:
        """The memo code for canonical ``text``, and whether every view in use
        gets the same (allowed, whatever the mask, and rewritten by none)."""
        policy = self._policy
        found = policy.choices(text)
        varies = isinstance(found, Choices)
        code = self._code(found.pick(self.mask) if isinstance(found, Choices) else found)
        if code == 0 and self._rewrites:
            target = self._rewrites.get(text)
            if target is not None:
                number = self._targets.get(target)
                if number is None:
                    number = self._targets[target] = self._number(
                        Rewrite(target, policy.blocking.ttl)
                    )
                return number << OFFSET_BITS, False
        everyone = code == 0 and not varies and text not in policy.rewritten
        return code, everyone

    def _code(self, decision: Decision) -> int:
        if not decision.blocked or decision.rule is None:
            return 0
        number = self._answers.get(decision.rule)
        if number is None:
            block = self._compile(decision.rule)
            number = self._answers[decision.rule] = block.number = self._number(block)
        return number << OFFSET_BITS | decision.offset

    def block(self, number: int) -> CountedBlock:
        """The block answer this view numbered ``number`` (``CountedBlock.number``)."""
        answer = self._numbered[number]
        assert isinstance(answer, CountedBlock)
        return answer

    def _verdict(self, code: int) -> Verdict:
        """The verdict a memo ``code`` stands for (``OFFSET_BITS``)."""
        return (self._numbered[code >> OFFSET_BITS], code & OFFSET_MASK)

    def _number(self, answer: CountedBlock | Rewrite) -> int:
        self._numbered.append(answer)
        return len(self._numbered) - 1

    def action_for(self, rule: Rule) -> Action:
        policy = self._policy
        return self.profile.action_for(rule, policy.sources[rule.source], policy.blocking)

    def _compile(self, rule: Rule) -> CountedBlock:
        policy = self._policy
        source = policy.sources[rule.source]
        action = self.action_for(rule)
        sink = policy.blocking.sinkhole
        answer = CountedBlock(
            action,
            policy.blocking.ttl,
            source.ede,
            f"list={source.name} version={source.version} category={rule.category}",
            policy.max_udp_size,
            ipaddress.ip_address(sink.ipv4).packed if sink.ipv4 else None,
            ipaddress.ip_address(sink.ipv6).packed if sink.ipv6 else None,
        )
        key = (source.name, rule.category, action.value)
        counter = policy.counters.get(key)
        if counter is None:
            counter = policy.counters[key] = BlockCounter(*key)
        answer.counter = counter
        return answer


def _remember(memo: dict[bytes, int], key: bytes, code: int) -> None:
    if len(memo) >= MEMO_LIMIT:
        make_room(memo)
    memo[key] = code


Served = dict[bytes, tuple[Answer, int, bytes]]
"""Message after its ID -> (cache answer, counters slot of its qtype, cache
key): the repeats a group is answered from the cache without decoding (see
``filterd.pipeline.pipeline``)."""
ServedBlock = tuple[bytes, int, bytes, int, bytes]
ServedBlocks = dict[bytes, ServedBlock]
"""Message after its ID -> (the block answer after its ID, counters slot of
its qtype, cache key, the block's number in the group's view, the matched
list entry as a lower-cased wire name): the repeats a group is answered
with a block without decoding. Apart from ``Served`` because a repeat from
the cache, the most common query, must not pay to tell the two apart.
Neither table's values hold an object the garbage collector tracks (a
block by its number, not the object), so the collector never visits them
(``filterd.pipeline.untracked``)."""


class ClientGroup:
    """A group within one snapshot: its counter (which outlives the
    snapshot), its profile's view (``memoised``: the view's, bound once,
    one attribute fewer per query) and its served tables (``served``:
    ``None`` when the profile has a schedule, its verdicts change with the
    clock; ``served_blocks`` is then never filled)."""

    __slots__ = ("counter", "memoised", "served", "served_blocks", "view")

    def __init__(self, counter: GroupCounter, view: View) -> None:
        self.counter = counter
        self.view = view
        self.memoised = view.memoised
        self.served: Served | None = None if view.profile.scheduled else {}
        self.served_blocks: ServedBlocks = {}


class Policy:
    __slots__ = (
        "_choices",
        "_clock",
        "_default",
        "_groups",
        "_matcher",
        "_possible",
        "_profiles",
        "_views",
        "blocking",
        "by_address",
        "counters",
        "everyone",
        "everyone_text",
        "max_udp_size",
        "next_tick",
        "rewritten",
        "single",
        "sources",
    )

    def __init__(
        self,
        matcher: Matcher,
        sources: tuple[SourceInfo, ...],
        blocking: BlockingConfig,
        max_udp_size: int,
        counters: dict[tuple[str, str, str], BlockCounter],
        profiles: ProfileSet | None = None,
        group_counters: dict[str, GroupCounter] | None = None,
        clock: WallClock = SYSTEM_CLOCK,
    ) -> None:
        """``counters`` and ``group_counters`` outlive the snapshot: counts
        must stay monotonic across list swaps and reloads."""
        self._matcher = matcher
        self.sources = sources
        self.blocking = blocking
        self.max_udp_size = max_udp_size
        self.counters = counters
        self._profiles = profiles = profiles or default_profile_set()
        self._clock = clock
        table = profiles.groups
        used = {profile.name: profile for profile in profiles.group_profiles}
        shared = len(used) > 1
        self.everyone: dict[bytes, int] = {}
        """Verdicts every view in use gets (see ``View``): all allowed, 0."""
        self.everyone_text: dict[bytes, int] = {}
        self.rewritten = frozenset(name for p in used.values() for name in p.rewrites)
        """Names some view in use rewrites (safe search): never everyone's."""
        self._views = {name: View(self, profile, shared) for name, profile in used.items()}
        self._possible = 0
        """Category bits some profile in use applies at some time."""
        for profile in used.values():
            scheduled = {category for category, _ in profile.scheduled}
            self._possible |= matcher.mask_of(profile.categories | scheduled) & ~EVERYONE
        self._choices: dict[bytes, Decision | Choices] | None = {} if shared else None
        group_counters = {} if group_counters is None else group_counters
        self._groups = tuple(
            ClientGroup(
                group_counters.setdefault(name, GroupCounter(name)),
                self._views[profiles.group_profiles[number].name],
            )
            for number, name in enumerate(table.names)
        )
        self._default = self._groups[table.default]
        changing = any(view.profile.scheduled for view in self._views.values())
        self.single = self._default if table.single and not changing else None
        """The one group when no prefixes are configured and its profile has
        no schedule: the pipeline then needs no ``group_of`` at all."""
        self.by_address: dict[bytes, ClientGroup] = {}
        """Group by client address (a bounded memo; trusted forwarders are
        never in it: their every query names its own client)."""
        # The masks as of now; the first query reads the clock again with the
        # caller's monotonic time, which then drives the next readings.
        self._tick(float("-inf"))
        self.next_tick = float("-inf")
        """Monotonic time of the next clock reading (``_tick``)."""

    @property
    def matcher(self) -> Matcher:
        return self._matcher

    @property
    def profiles(self) -> ProfileSet:
        return self._profiles

    @property
    def views(self) -> Mapping[str, View]:
        """The view of each profile in use, by profile name."""
        return self._views

    def memos(self) -> list[dict[Any, Any]]:
        """Every memo and served table of this snapshot, for freeing them a
        slice at a time once it is retired (``memo.release``)."""
        tables: list[dict[Any, Any]] = [self.everyone, self.everyone_text, self.by_address]
        if self._choices is not None:
            tables.append(self._choices)
        for view in self._views.values():
            tables += view.memos()
        tables += [group.served for group in self._groups if group.served is not None]
        tables += [group.served_blocks for group in self._groups]
        return tables

    @property
    def groups(self) -> tuple[ClientGroup, ...]:
        """Every group of this snapshot, in the configuration's order."""
        return self._groups

    # ------------------------------------------------------------- groups

    def group_of(self, address: bytes, query: Query, now: float) -> ClientGroup:
        """The group of the client at packed ``address`` asking ``query``
        (``now``: monotonic seconds, which drive schedule transitions).

        The pipeline inlines the common case (``single``, else a hit in
        ``by_address`` after ``tick_if_due``) and calls this for the rest."""
        self.tick_if_due(now)
        group = self.single or self.by_address.get(address)
        if group is not None:
            return group
        table = self._profiles.groups
        if table.trusts(address):
            return self._behind_forwarder(address, query)
        group = self._groups[table.group_of(address)]
        if len(self.by_address) >= ADDRESS_LIMIT:
            make_room(self.by_address)
        self.by_address[address] = group
        return group

    def tick_if_due(self, now: float) -> None:
        if now >= self.next_tick:
            self._tick(now)

    def _behind_forwarder(self, address: bytes, query: Query) -> ClientGroup:
        """A trusted forwarder's query: the group of the client subnet it
        names, if a configured prefix holds it, else the forwarder's own."""
        table = self._profiles.groups
        subnet = client_subnet(query.data, query.qend) if query.has_edns else None
        number = table.find(*subnet) if subnet is not None else None
        return self._groups[table.group_of(address) if number is None else number]

    def _tick(self, now: float) -> None:
        """Recompute each view's mask from the wall clock; drop the memo of
        a view whose mask changed. Runs when a minute may have turned."""
        clock = self._clock
        wall = clock.read()
        local = self._profiles.local(wall)
        scheduled = False
        for view in self._views.values():
            scheduled = scheduled or bool(view.profile.scheduled)
            mask = self._matcher.mask_of(view.profile.categories_at(local))
            if mask != view.mask:
                view.mask = mask
                view.clear()
        if clock.poll is not None:
            self.next_tick = now + clock.poll
        elif scheduled:
            self.next_tick = now + 60.0 - wall % 60.0
        else:
            self.next_tick = float("inf")  # no schedule: masks never change

    # ----------------------------------------------------------- decisions

    def choices(self, text: bytes) -> Decision | Choices:
        """Every profile's decision for canonical ``text``: one index walk
        per name, memoised when several views share it. A name allowed for
        every mask is not kept here: its verdict goes to ``everyone``, which
        every view reads first."""
        memo = self._choices
        found = memo.get(text) if memo is not None else None
        if found is None:
            found = self._matcher.choices(text)
            if isinstance(found, Choices) and not any(
                bits & self._possible for bits, _ in found.options
            ):
                # Only categories no profile in use ever applies: the same for all.
                found = found.pick(EVERYONE)
            if memo is not None and (isinstance(found, Choices) or found.blocked):
                if len(memo) >= MEMO_LIMIT:
                    make_room(memo)
                memo[text] = found
        return found

    # The default group's view, for callers that know no groups (tests,
    # benchmarks, tools): the same verdicts the pipeline gives its clients.

    def memoised(self, key: bytes) -> Verdict | None:
        return self._default.view.memoised(key)

    def decide(self, key: bytes, name_length: int) -> Verdict:
        return self._default.view.decide(key, name_length)

    def check_text(self, name: bytes) -> Verdict:
        return self._default.view.check_text(name)

    def action_for(self, rule: Rule) -> Action:
        return self._default.view.action_for(rule)
