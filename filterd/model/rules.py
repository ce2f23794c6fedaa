"""What a list entry says, independent of any list format.

A ``Rule`` is the unit the index stores: which list it came from, how far it
reaches (``Scope``), whether it blocks or allows, its category and, for
formats that carry one (RPZ), its own action. Actions named by configuration
are resolved later, by the policy stage, so that the same compiled index can
serve different action settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class Scope(IntEnum):
    """How far a rule on ``example.com`` reaches."""

    EXACT = 1
    """``example.com`` only."""
    SUBTREE = 2
    """``example.com`` and every name below it."""
    BELOW = 3
    """Names strictly below ``example.com`` (RPZ ``*.example.com``), not the name itself."""


class Action(StrEnum):
    """What a blocked query gets."""

    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    REFUSED = "refused"
    SINKHOLE = "sinkhole"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry's meaning.

    Rules sort by ``source`` first (config order: the earlier list wins a
    tie among blocks), then allow, category and action, and by scope last:
    the same entry written as one subtree rule or as an exact and a below
    rule (an RPZ pair, joined or not) then decides alike, also when a list
    holds conflicting entries for one name."""

    source: int
    scope: Scope
    allow: bool
    category: str
    action: Action | None = None

    def reaches(self, at_name: bool) -> bool:
        """Does this rule apply when it sits on the queried name itself (``at_name``)
        or on one of its parents (``not at_name``)?"""
        if self.scope is Scope.SUBTREE:
            return True
        return at_name == (self.scope is Scope.EXACT)

    def __lt__(self, other: Rule) -> bool:
        return self._precedence() < other._precedence()

    def _precedence(self) -> tuple[int, bool, str, str, int]:
        action = "" if self.action is None else self.action.value
        return (self.source, self.allow, self.category, action, int(self.scope))

    def to_json(self) -> list[object]:
        return [self.source, int(self.scope), self.allow, self.category, self.action]

    @classmethod
    def from_json(cls, raw: list[object]) -> Rule:
        source, scope, allow, category, action = raw
        assert isinstance(source, int) and isinstance(scope, int)
        assert isinstance(allow, bool) and isinstance(category, str)
        return cls(
            source,
            Scope(scope),
            allow,
            category,
            Action(action) if isinstance(action, str) else None,
        )
