"""Policy: the blocklist verdict for a question name.

Sits above the cache (the cache only holds upstream truth, so a list swap
applies on the very next query). Decisions are memoised per name for the
lifetime of one snapshot: a name asked again costs one dict lookup instead
of a suffix walk. A new snapshot means a new ``Policy`` object, so the memo
can never serve a verdict from an old list.

Actions resolve in this order (first defined wins), once per rule:
``blocking.category_actions[category]``, the list's ``action``, the entry's
own action (RPZ), ``blocking.default_action``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from filterd.config import BlockingConfig
from filterd.matching.matcher import Decision, Matcher
from filterd.model.rules import Action, Rule
from filterd.model.sources import SourceInfo
from filterd.wire.names import wire_to_text
from filterd.wire.synth import BlockAnswer

MEMO_LIMIT: Final = 200_000


@dataclass(slots=True)
class BlockCounter:
    """Blocked answers for one (source, category, action): aggregated for metrics."""

    source: str
    category: str
    action: str
    count: int = 0


class CountedBlock(BlockAnswer):
    """A ``BlockAnswer`` that also counts its uses (an integer increment on the hot path)."""

    __slots__ = ("counter",)

    counter: BlockCounter


Verdict = tuple[CountedBlock | None, int]
"""(answer to send, or ``None`` for allowed; offset of the matched name in qname)."""
PASS: Final[Verdict] = (None, 0)


class Policy:
    __slots__ = (
        "_answers",
        "_blocking",
        "_matcher",
        "_max_udp_size",
        "_memo",
        "_sources",
        "_text_memo",
        "counters",
    )

    def __init__(
        self,
        matcher: Matcher,
        sources: tuple[SourceInfo, ...],
        blocking: BlockingConfig,
        max_udp_size: int,
        counters: dict[tuple[str, str, str], BlockCounter],
    ) -> None:
        """``counters`` outlives the snapshot: blocked-answer counts must stay
        monotonic across list swaps."""
        self._matcher = matcher
        self._sources = sources
        self._blocking = blocking
        self._max_udp_size = max_udp_size
        self._memo: dict[bytes, Verdict] = {}
        self._text_memo: dict[bytes, Verdict] = {}
        self._answers: dict[Rule, CountedBlock] = {}
        self.counters = counters

    @property
    def matcher(self) -> Matcher:
        return self._matcher

    def memoised(self, key: bytes) -> Verdict | None:
        """The verdict already decided for a query's cache key, if any."""
        return self._memo.get(key)

    def decide(self, key: bytes, name_length: int) -> Verdict:
        """Decide (and memoise) for a validated query's cache key, whose first
        ``name_length`` bytes are the lower-cased wire name. Memoised by the
        whole key (type and variant included): one dict lookup per query and
        no slicing, at the price of one memo entry per type asked for a name."""
        verdict = self._decide(key[:name_length])
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = verdict
        return verdict

    def check_text(self, name: bytes) -> Verdict:
        """Verdict for a canonical text name (CNAME targets), memoised apart from
        wire names (CDN aliases recur in many cached answers)."""
        verdict = self._text_memo.get(name)
        if verdict is None:
            verdict = self._verdict(self._matcher.decide(name))
            if len(self._text_memo) >= MEMO_LIMIT:
                self._text_memo.clear()
            self._text_memo[name] = verdict
        return verdict

    def _decide(self, wire_name: bytes) -> Verdict:
        text = wire_to_text(wire_name)
        if not text:
            return PASS
        return self._verdict(self._matcher.decide(text))

    def _verdict(self, decision: Decision) -> Verdict:
        if not decision.blocked or decision.rule is None:
            return PASS
        answer = self._answers.get(decision.rule)
        if answer is None:
            answer = self._answers[decision.rule] = self._compile(decision.rule)
        return (answer, decision.offset)

    def action_for(self, rule: Rule) -> Action:
        source = self._sources[rule.source]
        by_category = dict(self._blocking.category_actions).get(rule.category)
        if by_category is not None:
            return by_category
        if source.action is not None:
            return Action(source.action)
        return rule.action or self._blocking.default_action

    def _compile(self, rule: Rule) -> CountedBlock:
        source = self._sources[rule.source]
        action = self.action_for(rule)
        sink = self._blocking.sinkhole
        answer = CountedBlock(
            action,
            self._blocking.ttl,
            source.ede,
            f"list={source.name} version={source.version} category={rule.category}",
            self._max_udp_size,
            ipaddress.ip_address(sink.ipv4).packed if sink.ipv4 else None,
            ipaddress.ip_address(sink.ipv6).packed if sink.ipv6 else None,
        )
        key = (source.name, rule.category, action.value)
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = BlockCounter(*key)
        answer.counter = counter
        return answer
