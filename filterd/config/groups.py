"""Client groups, profiles and schedules as configuration values, and the built-in ones.

A *group* is a set of client prefixes (the default group holds every client
in no other group); its *profile* says which categories of opt-in lists
apply to it, some only while a *schedule* is active, whether search engines
are rewritten to their safe-search hosts, and how its blocks are answered.
docs/profiles.md is the operator's reference; ``filterd.config.profiles``
reads the YAML into these values and ``filterd.profiles`` compiles them for
the query path.

Built in, so that the names mean the same on every installation: the
profiles ``default`` (no opt-in category: exactly what every client got
before profiles existed), ``school-primary``, ``school-secondary`` and
``family``; the schedules ``school-hours`` (Monday to Friday, 07:00-17:00)
and ``night`` (every day, 22:00-06:00); and the category vocabulary. A
configuration may redefine a built-in profile or schedule by its name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date
from typing import Final

from filterd.model.rules import Action

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_GROUP: Final = "default"
DEFAULT_PROFILE: Final = "default"
DEFAULT_TIME_ZONE: Final = "Asia/Ho_Chi_Minh"
MAX_CATEGORIES: Final = 63
"""Opt-in categories an index can carry: bit 0 of a profile's mask is taken
by the rules that apply to everyone, categories use bits 1-63 (one machine
word; docs/profiles.md)."""
DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
YOUTUBE_MODES: Final = ("off", "moderate", "strict")

CATEGORIES: Final = {
    "adult": "pornography and sexual content",
    "gambling": "betting, casinos, lotteries",
    "violence": "aggressive, hateful or violent content",
    "drugs": "illegal drugs, vaping",
    "weapons": "weapons and dangerous material (explosives, poisons)",
    "dating": "dating and meeting sites",
    "games": "online games",
    "social": "social networks",
    "chat": "chat and instant messaging on the web",
    "proxy": "proxies, VPNs and redirectors that bypass filtering",
    "doh": "public DNS-over-HTTPS and DNS-over-TLS resolvers (bypass the resolver)",
    "scam": "scams and fraud",
    "phishing": "phishing",
    "malware": "malware, ransomware, cryptojacking",
    "piracy": "pirated software and media, torrent trackers",
    "cheating": "homework and exam cheating",
    "streaming": "audio and video streaming",
    "shopping": "online shopping",
}
"""Category names a profile may use without a list carrying them yet (the
vocabulary of docs/profiles.md); a list's own category is known too."""


@dataclass(frozen=True, slots=True)
class Window:
    """One weekly window of a schedule, in the schedule's local time.

    ``start`` and ``end`` are minutes after midnight, ``end`` excluded;
    ``end`` < ``start`` crosses midnight (22:00-06:00 opens on a listed day and closes the next
    morning); ``end`` 1440 is 24:00. ``days`` are the days the window
    *opens* (0 Monday .. 6 Sunday); on a date in ``holidays`` it
    does not open."""

    days: frozenset[int]
    start: int
    end: int
    holidays: frozenset[date] = frozenset()


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    name: str
    windows: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    name: str
    categories: tuple[str, ...] = ()
    """Opt-in categories applied at all times."""
    scheduled: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(category, schedule names): applied while any of the schedules is active."""
    safe_search: bool = False
    """Google, Bing and DuckDuckGo answered with their safe-search hosts."""
    youtube: str = "off"
    """``moderate`` or ``strict``: YouTube's Restricted Mode by DNS."""
    action: Action | None = None
    """Replaces ``blocking.default_action`` for this profile's clients."""
    https_action: Action | None = None
    """Replaces a sinkhole for blocks by ``https_only`` lists."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    name: str
    networks: tuple[Network, ...] = ()
    profile: str = DEFAULT_PROFILE


@dataclass(frozen=True, slots=True)
class ClientSubnetConfig:
    """EDNS Client Subnet (RFC 7871): trusted only from these forwarders."""

    trust: tuple[Network, ...] = ()


def hhmm(minutes: int) -> str:
    """Minutes after midnight as ``HH:MM`` (1440 is ``24:00``)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


WEEKDAYS: Final = frozenset(range(5))
EVERY_DAY: Final = frozenset(range(7))

BUILTIN_SCHEDULES: Final = (
    ScheduleConfig("school-hours", (Window(WEEKDAYS, 7 * 60, 17 * 60),)),
    ScheduleConfig("night", (Window(EVERY_DAY, 22 * 60, 6 * 60),)),
)

_ALWAYS_FOR_CHILDREN: Final = (
    "adult", "gambling", "violence", "drugs", "weapons", "dating", "proxy", "doh",
    "scam", "phishing", "malware", "piracy",
)  # fmt: skip

BUILTIN_PROFILES: Final = (
    ProfileConfig(DEFAULT_PROFILE),
    ProfileConfig(
        "school-primary",
        categories=(*_ALWAYS_FOR_CHILDREN, "games", "social", "chat", "cheating"),
        safe_search=True,
        youtube="strict",
    ),
    ProfileConfig(
        "school-secondary",
        categories=(*_ALWAYS_FOR_CHILDREN, "cheating"),
        scheduled=(("games", ("school-hours",)), ("social", ("school-hours",))),
        safe_search=True,
        youtube="moderate",
    ),
    ProfileConfig(
        "family",
        categories=_ALWAYS_FOR_CHILDREN,
        scheduled=(("games", ("school-hours", "night")), ("social", ("night",))),
        safe_search=True,
        youtube="moderate",
    ),
)

DEFAULT_GROUPS: Final = (GroupConfig(DEFAULT_GROUP),)
