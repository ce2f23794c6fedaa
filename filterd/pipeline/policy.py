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
    """A ``BlockAnswer`` that also counts its uses (an integer increment on the hot path)."""

    __slots__ = ("counter",)

    counter: BlockCounter


class Rewrite:
    """Safe search: the name is answered as ``target`` (``filterd.wire.rewrite``).

    ``spliced`` memoises finished answers (``filterd.pipeline.rewrite``)."""

    __slots__ = ("spliced", "target", "target_wire", "ttl")

    def __init__(self, target: bytes, ttl: int) -> None:
        self.target = target
        self.target_wire = text_to_wire(target)
        self.ttl = ttl
        self.spliced: dict[bytes, tuple[object, int, bytes]] = {}


Verdict = tuple[CountedBlock | Rewrite | None, int]
"""(answer to send, a rewrite, or ``None`` for allowed; offset of the matched name in qname)."""
PASS: Final[Verdict] = (None, 0)


class View:
    """One profile's verdicts within one snapshot, memoised per question.

    A verdict that is the same for every profile in use (allowed, no rule
    an opt-in category could change, no rewrite: most names) is memoised
    once for all views, in the policy's ``everyone`` memo, so that four
    groups cost no more memory than one; only the rest is the view's own
    (and only that is dropped when the view's mask changes)."""

    __slots__ = (
        "_answers",
        "_everyone",
        "_everyone_text",
        "_memo",
        "_policy",
        "_rewrites",
        "_targets",
        "_text_memo",
        "mask",
        "profile",
    )

    def __init__(self, policy: Policy, profile: Profile, shared: bool) -> None:
        """``shared``: several views are in use (else this view's memos are
        the ``everyone`` memos too)."""
        self._policy = policy
        self.profile = profile
        self.mask = 0
        self._memo: dict[bytes, Verdict] = {}
        self._text_memo: dict[bytes, Verdict] = {}
        self._everyone = policy.everyone if shared else self._memo
        self._everyone_text = policy.everyone_text if shared else self._text_memo
        self._answers: dict[Rule, CountedBlock] = {}
        self._rewrites = profile.rewrites
        self._targets: dict[bytes, Rewrite] = {}

    def memoised(self, key: bytes) -> Verdict | None:
        """The verdict already decided for a query's cache key, if any."""
        return self._everyone.get(key) or self._memo.get(key)

    def decide(self, key: bytes, name_length: int) -> Verdict:
        """Decide (and memoise) for a validated query's cache key, whose first
        ``name_length`` bytes are the lower-cased wire name. Memoised by the
        whole key (type and variant included): one dict lookup per query and
        no slicing, at the price of one memo entry per type asked for a name."""
        text = wire_to_text(key[:name_length])
        verdict, everyone = self._decide(text) if text else (PASS, True)
        _remember(self._everyone if everyone else self._memo, key, verdict)
        return verdict

    def check_text(self, name: bytes) -> Verdict:
        """Verdict for a canonical text name (CNAME targets), memoised apart from
        wire names (CDN aliases recur in many cached answers). Blocks only: a
        CNAME target is never rewritten."""
        verdict = self._everyone_text.get(name) or self._text_memo.get(name)
        if verdict is None:
            found = self._policy.choices(name)
            decision = found.pick(self.mask) if isinstance(found, Choices) else found
            verdict = self._verdict(decision)
            everyone = verdict is PASS and not isinstance(found, Choices)
            _remember(self._everyone_text if everyone else self._text_memo, name, verdict)
        return verdict

    def memos(self) -> list[dict[Any, Any]]:
        """This view's own memo tables (see ``Policy.memos``)."""
        return [self._memo, self._text_memo]

    def clear(self) -> None:
        """Forget this view's own verdicts (its mask changed); with one view
        in use they are every verdict, and all go."""
        self._memo.clear()
        self._text_memo.clear()

    def _decide(self, text: bytes) -> tuple[Verdict, bool]:
        """The verdict for canonical ``text``, and whether every view in use
        gets the same (allowed, whatever the mask, and rewritten by none)."""
        policy = self._policy
        found = policy.choices(text)
        varies = isinstance(found, Choices)
        verdict = self._verdict(found.pick(self.mask) if isinstance(found, Choices) else found)
        if verdict[0] is None and self._rewrites:
            target = self._rewrites.get(text)
            if target is not None:
                rewrite = self._targets.get(target)
                if rewrite is None:
                    rewrite = self._targets[target] = Rewrite(target, policy.blocking.ttl)
                return (rewrite, 0), False
        everyone = verdict is PASS and not varies and text not in policy.rewritten
        return verdict, everyone

    def _verdict(self, decision: Decision) -> Verdict:
        if not decision.blocked or decision.rule is None:
            return PASS
        answer = self._answers.get(decision.rule)
        if answer is None:
            answer = self._answers[decision.rule] = self._compile(decision.rule)
        return (answer, decision.offset)

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


def _remember(memo: dict[bytes, Verdict], key: bytes, verdict: Verdict) -> None:
    if len(memo) >= MEMO_LIMIT:
        make_room(memo)
    memo[key] = verdict


Served = dict[bytes, tuple[Answer, int, bytes]]
"""Message after its ID -> (cache answer, counters slot of its qtype, cache
key): the repeats a group is answered without decoding (see
``filterd.pipeline.pipeline``). Values hold no object the garbage collector
tracks, so the collector soon stops visiting them."""


class ClientGroup:
    """A group within one snapshot: its counter (which outlives the
    snapshot), its profile's view (``memoised``: the view's, bound once,
    one attribute fewer per query) and its served table (``None`` when the
    profile has a schedule: its verdicts change with the clock)."""

    __slots__ = ("counter", "memoised", "served", "view")

    def __init__(self, counter: GroupCounter, view: View) -> None:
        self.counter = counter
        self.view = view
        self.memoised = view.memoised
        self.served: Served | None = None if view.profile.scheduled else {}


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
        self.everyone: dict[bytes, Verdict] = {}
        """Verdicts every view in use gets (see ``View``)."""
        self.everyone_text: dict[bytes, Verdict] = {}
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
