"""The configured groups and profiles, compiled once per configuration.

``ProfileSet`` answers, for the query path and for ``explain``: which group
a client address is in (``filterd.profiles.groups``), and which categories
a profile applies at a given moment (its fixed categories, plus each
scheduled category whose schedule is active then). The policy stage turns
those categories into a mask over the index's category bits once per
minute, not per query (``filterd.pipeline.policy``).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from filterd.config import BlockingConfig, Config
from filterd.config.groups import ProfileConfig, ScheduleConfig
from filterd.model.rules import Action, Rule
from filterd.model.sources import SourceInfo
from filterd.profiles.groups import GroupTable
from filterd.profiles.safesearch import rewrites
from filterd.profiles.schedules import is_active


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile, with its schedules resolved and its rewrite table built."""

    name: str
    categories: frozenset[str]
    scheduled: tuple[tuple[str, tuple[ScheduleConfig, ...]], ...]
    rewrites: Mapping[bytes, bytes]
    action: Action | None
    https_action: Action | None

    def categories_at(self, local: datetime) -> frozenset[str]:
        """The categories this profile applies at ``local`` (zone-aware)."""
        if not self.scheduled:
            return self.categories
        active = {
            c for c, schedules in self.scheduled if any(is_active(s, local) for s in schedules)
        }
        return self.categories | active if active else self.categories

    def schedules_of(self, category: str) -> tuple[ScheduleConfig, ...]:
        """The schedules that gate ``category`` (empty: fixed or not applied)."""
        for name, schedules in self.scheduled:
            if name == category:
                return schedules
        return ()

    def applies(self, category: str) -> bool:
        """Does this profile apply ``category`` at some time?"""
        return category in self.categories or bool(self.schedules_of(category))

    def action_for(self, rule: Rule, source: SourceInfo, blocking: BlockingConfig) -> Action:
        """What this profile's clients get for a block by ``rule`` (of
        ``source``): first defined of ``blocking.category_actions``, the
        list's action, the entry's own, this profile's, the default; then
        a sinkhole for an ``https_only`` list becomes ``https_action``."""
        action = dict(blocking.category_actions).get(rule.category)
        if action is None and source.action is not None:
            action = Action(source.action)
        if action is None:
            action = rule.action or self.action or blocking.default_action
        if action is Action.SINKHOLE and self.https_action is not None and source.https_only:
            return self.https_action
        return action


class ProfileSet:
    """Groups, their profiles and the time zone of ``config``."""

    __slots__ = ("group_profiles", "groups", "profiles", "zone")

    def __init__(self, config: Config) -> None:
        self.zone = zoneinfo.ZoneInfo(config.time_zone)
        self.groups = GroupTable(config.groups, config.client_subnet.trust)
        schedules = {schedule.name: schedule for schedule in config.schedules}
        self.profiles = {p.name: _compile(p, schedules) for p in config.profiles}
        self.group_profiles = tuple(self.profiles[g.profile] for g in config.groups)
        """The profile of each group, by group number."""

    def profile_of_group(self, number: int) -> Profile:
        return self.group_profiles[number]

    def local(self, when: float) -> datetime:
        """Unix time ``when`` as a wall-clock time of the configured zone."""
        return datetime.fromtimestamp(when, self.zone)


def default_profile_set() -> ProfileSet:
    """Every client in the default group, with the default profile."""
    return ProfileSet(Config())


def _compile(profile: ProfileConfig, schedules: Mapping[str, ScheduleConfig]) -> Profile:
    return Profile(
        profile.name,
        frozenset(profile.categories),
        tuple(
            (category, tuple(schedules[name] for name in names))
            for category, names in profile.scheduled
        ),
        rewrites(profile.safe_search, profile.youtube),
        profile.action,
        profile.https_action,
    )
