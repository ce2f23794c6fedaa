"""Verdicts: which rule, if any, decides a name.

The precedence, documented for operators in docs/list-formats.md:

1. Rules live in two tiers. *Mandatory* lists (the authority's) form the
   first tier; the operator's own lists form the second. A block decided in
   the mandatory tier is final: no operator allowlist can lift it.
2. Within a tier the most specific rule wins: the walk goes from the queried
   name up to its top-level label and the first level where a rule of the
   tier applies decides for that tier.
3. At equal specificity an allow beats a block (so an exception written for
   exactly the blocked name works), and among blocks the list configured
   first wins.
4. A mandatory *allow* (the authority's own exception) only cancels the
   authority's blocks; the operator may still block the name in its tier.

``Matcher`` is pure and synchronous; the policy stage memoises its answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from filterd.matching.index import CompiledIndex
from filterd.model.rules import Rule


@dataclass(frozen=True, slots=True)
class Decision:
    """Why a name is blocked or allowed.

    ``offset`` is where the deciding entry's name starts inside the queried
    name (``b"ads.example.com"`` decided by ``example.com`` has offset 4): the
    same offset addresses that suffix inside the wire-format question, which
    lets the synthesiser point the SOA owner at it with a compression pointer.
    """

    blocked: bool
    rule: Rule | None = None
    entry: bytes = b""
    offset: int = 0
    ref: str = ""


ALLOWED = Decision(blocked=False)


Overlaid = tuple[tuple[Rule, ...], str]
"""An overlay entry: the name's complete rules (empty: it has none now) and reference."""


class Matcher:
    """Decides names against one compiled index; ``mandatory`` marks first-tier sources.

    An ``overlay`` (from small authority deltas, see ``filterd.lists.overlay``)
    holds names whose rules changed since the index was compiled: for those
    names it replaces what the index says, including "no rules any more"."""

    __slots__ = ("_index", "_mandatory", "_overlay")

    def __init__(
        self,
        index: CompiledIndex,
        mandatory: frozenset[int],
        overlay: Mapping[bytes, Overlaid] | None = None,
    ) -> None:
        self._index = index
        self._mandatory = mandatory
        self._overlay = overlay or {}

    @property
    def index(self) -> CompiledIndex:
        return self._index

    @property
    def mandatory(self) -> frozenset[int]:
        return self._mandatory

    @property
    def overlay(self) -> Mapping[bytes, Overlaid]:
        return self._overlay

    def rules_of(self, name: bytes) -> Overlaid | None:
        """The rules stored for exactly ``name`` (overlay first), or None."""
        found = self._overlay.get(name)
        if found is not None:
            return found
        index = self._index
        entry = index.find(name)
        if entry < 0:
            return None
        return index.rules_at(entry), index.ref_at(entry)

    def decide(self, name: bytes) -> Decision:
        """Decide a canonical name (lower-case ASCII, no trailing dot)."""
        mandatory = self._mandatory
        first: Decision | None = None  # mandatory tier's verdict
        second: Decision | None = None  # operator tier's verdict
        offset = 0
        while True:
            suffix = name[offset:] if offset else name
            stored = self.rules_of(suffix)
            if stored is not None:
                rules, ref = stored
                at_name = offset == 0
                first_here: Rule | None = None
                second_here: Rule | None = None
                for rule in rules:
                    if not rule.reaches(at_name):
                        continue
                    if rule.source in mandatory:
                        if first is None and _better(rule, first_here):
                            first_here = rule
                    elif second is None and _better(rule, second_here):
                        second_here = rule
                if first_here is not None:
                    first = _decision(first_here, suffix, offset, ref)
                    if first.blocked:
                        return first
                if second_here is not None:
                    second = _decision(second_here, suffix, offset, ref)
                if first is not None and second is not None:
                    break
            dot = name.find(b".", offset)
            if dot < 0:
                break
            offset = dot + 1
        if second is not None:
            return second
        return first if first is not None else ALLOWED


def _decision(rule: Rule, entry: bytes, offset: int, ref: str) -> Decision:
    return Decision(blocked=not rule.allow, rule=rule, entry=entry, offset=offset, ref=ref)


def _better(rule: Rule, current: Rule | None) -> bool:
    """At one level: allow beats block; otherwise the earlier source (rules are
    sorted by source, so the first seen is kept)."""
    if current is None:
        return True
    return rule.allow and not current.allow
