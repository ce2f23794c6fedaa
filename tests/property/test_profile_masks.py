"""Profiles are masks over one index walk, and no profile lifts a mandatory block.

Two laws, over random lists, opt-in sources, categories and profiles:

1. One walk answers every profile: ``Matcher.choices(name)`` picked with a
   profile's mask decides exactly as the naive reference of
   ``test_matcher_laws`` does over only the rules that profile applies
   (every non-opt-in rule, and opt-in rules of its categories): the same
   answer as a separate index per profile.
2. Each group's verdict through the policy (memos shared between views
   included) is that same reference for the categories its profile
   applies at that moment, under random groups, profiles (categories,
   actions, https actions, safe search) and schedules; and whenever the
   authority's rules alone block a name, every group gets the authority's
   block, with its Extended DNS Error: no profile lifts it.
"""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path

import dns.edns
import dns.message
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.config import BlockingConfig, Config, SinkholeConfig
from filterd.config.groups import EVERY_DAY, GroupConfig, ProfileConfig, ScheduleConfig, Window
from filterd.matching.matcher import Choices, Matcher
from filterd.model.rules import Action, Rule
from filterd.model.sources import SourceInfo
from filterd.pipeline.clock import WallClock
from filterd.pipeline.policy import CountedBlock, Policy
from filterd.profiles.profileset import ProfileSet
from filterd.wire.codes import EDE_BLOCKED, EDE_CENSORED, EDE_FILTERED
from filterd.wire.query import parse_query
from tests.property.test_matcher_laws import build, entries, names, reference

CATEGORIES = ("adult", "games", "gambling")
SOURCES = 4
category_sets = st.frozensets(st.sampled_from(CATEGORIES))
actions = st.sampled_from([None, *Action])
profiles = st.lists(
    st.builds(
        ProfileConfig,
        name=st.just(""),
        categories=category_sets.map(tuple),
        scheduled=st.lists(
            st.tuples(st.sampled_from(CATEGORIES), st.just(("sometimes",))), max_size=2
        ).map(tuple),
        safe_search=st.booleans(),
        youtube=st.sampled_from(["off", "strict"]),
        action=actions,
        https_action=st.sampled_from([None, Action.NXDOMAIN, Action.NODATA, Action.DROP]),
    ),
    min_size=1,
    max_size=4,
)


def configured(
    profiles: list[ProfileConfig],
    mandatory: frozenset[int],
    opt_in: frozenset[int],
    window: tuple[int, int],
) -> tuple[Config, tuple[SourceInfo, ...]]:
    """A configuration with a group per generated profile (the first also
    the default group's) and the sources ``s0``..``s3``."""
    named = [
        ProfileConfig(f"p{i}", *(getattr(p, f) for f in ProfileConfig.__slots__[1:]))
        for i, p in enumerate(profiles)
    ]
    config = Config(
        blocking=BlockingConfig(sinkhole=SinkholeConfig(ipv4="192.0.2.80")),
        groups=(
            GroupConfig("default", (), named[0].name),
            *(
                GroupConfig(f"g{i}", (ipaddress.ip_network(f"10.{i}.0.0/16"),), p.name)
                for i, p in enumerate(named)
            ),
        ),
        profiles=tuple(named),
        schedules=(ScheduleConfig("sometimes", (Window(EVERY_DAY, *window),)),),
    )
    sources = tuple(
        SourceInfo(
            f"s{n}", "1", n in mandatory,
            EDE_CENSORED if n in mandatory else EDE_FILTERED if n in opt_in else EDE_BLOCKED,
            "c", None, "", "domains", opt_in=n in opt_in,
        )
        for n in range(SOURCES)
    )  # fmt: skip
    return config, sources


def applies(rule: Rule, opt_in: frozenset[int], categories: frozenset[str]) -> bool:
    return rule.source not in opt_in or rule.category in categories


@settings(max_examples=300, deadline=None)
@given(
    entries=entries,
    mandatory=st.frozensets(st.integers(0, SOURCES - 1)),
    opt_in=st.frozensets(st.integers(0, SOURCES - 1)),
    profile=category_sets,
    queries=st.lists(names, max_size=10),
)
def test_one_walk_decides_as_an_index_per_profile(
    entries: list[tuple[bytes, Rule]],
    mandatory: frozenset[int],
    opt_in: frozenset[int],
    profile: frozenset[str],
    queries: list[bytes],
) -> None:
    opt_in -= mandatory  # configuration refuses an opt-in mandatory list
    applied = [(name, rule) for name, rule in entries if applies(rule, opt_in, profile)]
    with tempfile.TemporaryDirectory() as scratch:
        index = build(entries, Path(scratch))
        try:
            matcher = Matcher(index, mandatory, None, opt_in, CATEGORIES)
            mask = matcher.mask_of(profile)
            for query in queries + [name for name, _ in entries]:
                found = matcher.choices(query)
                decision = found.pick(mask) if isinstance(found, Choices) else found
                blocked, rule, offset = reference(applied, mandatory, query)
                assert (decision.blocked, decision.rule) == (blocked, rule), query
                if rule is not None:
                    assert decision.offset == offset
        finally:
            index.close()


@settings(max_examples=200, deadline=None)
@given(
    entries=entries,
    mandatory=st.frozensets(st.integers(0, SOURCES - 1)),
    opt_in=st.frozensets(st.integers(0, SOURCES - 1)),
    profiles=profiles,
    window=st.tuples(st.integers(0, 1439), st.integers(1, 1440)).filter(lambda w: w[0] != w[1]),
    hour=st.integers(0, 23),
    queries=st.lists(names, max_size=10),
)
def test_each_group_gets_its_profile_and_none_lifts_a_mandatory_block(
    entries: list[tuple[bytes, Rule]],
    mandatory: frozenset[int],
    opt_in: frozenset[int],
    profiles: list[ProfileConfig],
    window: tuple[int, int],
    hour: int,
    queries: list[bytes],
) -> None:
    opt_in -= mandatory  # configuration refuses an opt-in mandatory list
    config, sources = configured(profiles, mandatory, opt_in, window)
    authority = [(name, rule) for name, rule in entries if rule.source in mandatory]
    moment = 1_788_000_000.0 + hour * 3600  # some day of 2026, at each hour in turn
    with tempfile.TemporaryDirectory() as scratch:
        index = build(entries, Path(scratch))
        try:
            matcher = Matcher(index, mandatory, None, opt_in, CATEGORIES)
            profile_set = ProfileSet(config)
            policy = Policy(
                matcher, sources, config.blocking, 1232, {}, profile_set,
                clock=WallClock(lambda: moment),
            )  # fmt: skip
            local = profile_set.local(moment)
            # Views interleaved, so that one view's memo entries meet another's reads.
            for text in queries + [name for name, _ in entries]:
                query = parse_query(
                    dns.message.make_query(text.decode(), "A", use_edns=0).to_wire()
                )
                assert query is not None
                censored, _, _ = reference(authority, mandatory, text)
                for view in policy.views.values():
                    applied = view.profile.categories_at(local)
                    rules = [(n, r) for n, r in entries if applies(r, opt_in, applied)]
                    blocked, rule, _ = reference(rules, mandatory, text)
                    # As the pipeline asks: the memos first (shared ones included).
                    verdict = view.memoised(query.key) or view.decide(
                        query.key, query.name_end - 12
                    )
                    answer, offset = verdict
                    assert isinstance(answer, CountedBlock) == blocked, view.profile.name
                    if not isinstance(answer, CountedBlock):
                        continue
                    assert rule is not None and answer.counter.source == f"s{rule.source}"
                    if censored:  # the authority's block, whatever the profile
                        assert rule.source in mandatory
                        if not answer.drops:
                            out = dns.message.from_wire(answer.render(query, offset))
                            ede = [o.code for o in out.options if isinstance(o, dns.edns.EDEOption)]
                            assert ede == [EDE_CENSORED]
        finally:
            index.close()
