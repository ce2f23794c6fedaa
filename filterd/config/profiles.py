"""Reading ``groups``, ``profiles``, ``schedules``, ``time_zone`` and
``client_subnet``, and the checks that tie them to each other and to ``lists``.

Every problem is reported with its key path, as everywhere in the
configuration (docs/profiles.md lists them): a malformed or host-bits CIDR,
one prefix in two groups (nested prefixes are fine: the most specific
wins), an unknown profile, category or schedule, a time zone ``zoneinfo``
does not know, and impossible schedules (25:00, no day, a window that ends
when it starts).
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from datetime import date
from typing import Any, Final

from filterd.config import ListConfig, checks
from filterd.config.groups import (
    BUILTIN_PROFILES,
    BUILTIN_SCHEDULES,
    CATEGORIES,
    DAY_NAMES,
    DEFAULT_GROUP,
    DEFAULT_PROFILE,
    DEFAULT_TIME_ZONE,
    EVERY_DAY,
    MAX_CATEGORIES,
    WEEKDAYS,
    YOUTUBE_MODES,
    ClientSubnetConfig,
    GroupConfig,
    Network,
    ProfileConfig,
    ScheduleConfig,
    Window,
    hhmm,
)
from filterd.model.rules import Action

DAY_SETS: Final = {"all": EVERY_DAY, "weekdays": WEEKDAYS, "weekend": frozenset({5, 6})}
MINUTES_PER_DAY: Final = 24 * 60
NOTHING: Final[tuple[str, ...]] = ()


def time_zone(r: checks.Reader) -> str:
    name = r.get("time_zone", DEFAULT_TIME_ZONE, checks.domain_name)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        r.doc.problem(
            r.key("time_zone"),
            f"unknown time zone {name!r} (an IANA name such as Asia/Ho_Chi_Minh; "
            "is the tzdata package installed?)",
        )
        return DEFAULT_TIME_ZONE
    return name


def client_subnet(r: checks.Reader) -> ClientSubnetConfig:
    cfg = ClientSubnetConfig(
        trust=r.get("trust", ClientSubnetConfig().trust, checks.list_of(strict_network))
    )
    r.done()
    return cfg


def strict_network(value: Any) -> Network:
    """A CIDR prefix without host bits (``10.1.2.0/24``, not ``10.1.2.3/24``):
    a prefix that says more than it means is a typo until proven otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"must be a CIDR prefix, got {checks.kind_of(value)} {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR prefix ({exc})") from None


def schedules(r: checks.Reader) -> tuple[ScheduleConfig, ...]:
    defined = {schedule.name: schedule for schedule in BUILTIN_SCHEDULES}
    for raw_name in r.raw:
        name = _name(r, raw_name, "a schedule name")
        if name is None:
            continue
        windows = r.raw[raw_name]
        path = r.key(str(raw_name))
        if not isinstance(windows, list) or not windows:
            r.doc.problem(path, "must be a non-empty list of windows (days, start, end)")
            continue
        read = [_window(checks.Reader(r.doc, raw, f"{path}[{i}]")) for i, raw in enumerate(windows)]
        defined[name] = ScheduleConfig(name, tuple(w for w in read if w is not None))
    return tuple(defined.values())


def _window(r: checks.Reader) -> Window | None:
    days = r.get("days", None, _days)
    start = r.get("start", None, _clock(MINUTES_PER_DAY - 1))
    end = r.get("end", None, _clock(MINUTES_PER_DAY))
    no_dates: tuple[date, ...] = ()
    holidays = r.get("holidays", no_dates, checks.list_of(_date))
    for key, value in (("days", days), ("start", start), ("end", end)):
        if value is None and key not in r.raw:
            r.doc.problem(r.key(key), "required")
    r.done()
    if days is None or start is None or end is None:
        return None
    if start == end:
        r.doc.problem(
            r.key("end"),
            f"equals start ({hhmm(start)}): an empty window; for a whole day write "
            "start 00:00, end 24:00",
        )
        return None
    return Window(days, start, end, frozenset(holidays))


def _days(value: Any) -> frozenset[int]:
    if isinstance(value, str) and value in DAY_SETS:
        return DAY_SETS[value]
    names = checks.list_of(checks.choice(*DAY_NAMES), allow_empty=False)(value)
    return frozenset(DAY_NAMES.index(name) for name in names)


def _clock(latest: int) -> Any:
    def convert(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 17:00 as the base-60 number 1020,
            # which is exactly the minutes after midnight.
            minutes = value
        elif isinstance(value, str) and len(value.strip()) == 5 and value.strip()[2] == ":":
            hours, _, mins = value.strip().partition(":")
            if not (hours.isdigit() and mins.isdigit()) or int(mins) > 59:
                raise ValueError(f"{value!r} is not a time HH:MM")
            minutes = int(hours) * 60 + int(mins)
        else:
            raise ValueError(f"{value!r} is not a time HH:MM (quote it: '07:00')")
        if not 0 <= minutes <= latest:
            raise ValueError(f"{hhmm(minutes)} is not a time of day (00:00 to {hhmm(latest)})")
        return minutes

    return convert


def _date(value: Any) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a date YYYY-MM-DD") from None


def profiles(r: checks.Reader) -> tuple[ProfileConfig, ...]:
    defined = {profile.name: profile for profile in BUILTIN_PROFILES}
    for raw_name in r.raw:
        name = _name(r, raw_name, "a profile name")
        if name is not None:
            defined[name] = _profile(r.section(str(raw_name)), name)
    return tuple(defined.values())


def _profile(r: checks.Reader, name: str) -> ProfileConfig:
    scheduled = []
    plan = r.section("scheduled")
    for category in plan.raw:
        names = plan.get(str(category), NOTHING, checks.list_of(checks.label, allow_empty=False))
        scheduled.append((str(category).lower(), names))
    cfg = ProfileConfig(
        name=name,
        categories=r.get("categories", NOTHING, checks.list_of(checks.label)),
        scheduled=tuple(scheduled),
        safe_search=r.get("safe_search", False, checks.boolean),
        youtube=r.get("youtube", "off", checks.choice(*YOUTUBE_MODES)),
        action=r.get("action", None, checks.action),
        https_action=r.get("https_action", None, _dns_action),
    )
    for category, _ in cfg.scheduled:
        if category in cfg.categories:
            r.doc.problem(
                plan.key(category), "also in categories (applied at all times): choose one"
            )
    r.done()
    return cfg


def _dns_action(value: Any) -> Action:
    action = checks.action(value)
    if action is Action.SINKHOLE:
        raise ValueError("must be an answer without an address (the point is no block page)")
    return action


def groups(r: checks.Reader) -> tuple[GroupConfig, ...]:
    out: dict[str, GroupConfig] = {DEFAULT_GROUP: GroupConfig(DEFAULT_GROUP)}
    owner: dict[Network, str] = {}
    for raw_name in r.raw:
        name = _name(r, raw_name, "a group name")
        if name is None:
            continue
        g = r.section(str(raw_name))
        networks = _networks(g)
        profile = g.get("profile", DEFAULT_PROFILE, checks.label)
        g.done()
        if name == DEFAULT_GROUP and networks:
            r.doc.problem(g.key("networks"), "the default group holds every other client")
        elif name != DEFAULT_GROUP and not networks and "networks" not in g.raw:
            r.doc.problem(g.key("networks"), "required (client prefixes, e.g. 10.1.0.0/16)")
        mine: set[Network] = set()
        for i, network in networks:
            other = owner.setdefault(network, name)
            if other != name or network in mine:
                where = "this group" if other == name else f"group {other!r}"
                r.doc.problem(g.key(f"networks[{i}]"), f"{network} is already in {where}")
            mine.add(network)
        out[name] = GroupConfig(name, tuple(network for _, network in networks), profile)
    return tuple(out.values())


def _networks(g: checks.Reader) -> list[tuple[int, Network]]:
    """A group's prefixes with their positions, each checked on its own:
    one typo must not hide what the others overlap."""
    raw: Any = g.get("networks", [], lambda value: value)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        g.doc.problem(g.key("networks"), f"must be a list, got {checks.kind_of(raw)}")
        return []
    out = []
    for i, item in enumerate(raw):
        try:
            out.append((i, strict_network(item)))
        except (ValueError, TypeError) as exc:
            g.doc.problem(g.key(f"networks[{i}]"), str(exc))
    return out


def _name(r: checks.Reader, raw: Any, what: str) -> str | None:
    r.seen.add(str(raw))
    try:
        return checks.label(raw)
    except (ValueError, TypeError):
        r.doc.problem(r.key(str(raw)), f"{what} holds letters, digits, - and _")
        return None


def check_references(
    doc: checks.Document,
    groups: tuple[GroupConfig, ...],
    profiles: tuple[ProfileConfig, ...],
    schedules: tuple[ScheduleConfig, ...],
    lists: tuple[ListConfig, ...],
) -> None:
    """Names that point elsewhere exist: a group's profile, a profile's
    categories and schedules; a list's profile keys make sense."""
    known_profiles = {profile.name for profile in profiles}
    known_schedules = {schedule.name for schedule in schedules}
    known_categories = set(CATEGORIES) | {lst.category for lst in lists}
    for group in groups:
        if group.profile not in known_profiles:
            doc.problem(
                f"groups.{group.name}.profile",
                f"no profile {group.profile!r} (known: {', '.join(sorted(known_profiles))})",
            )
    for profile in profiles:
        path = f"profiles.{profile.name}"
        for i, category in enumerate(profile.categories):
            if category not in known_categories:
                doc.problem(f"{path}.categories[{i}]", _unknown_category(category))
        for category, names in profile.scheduled:
            if category not in known_categories:
                doc.problem(f"{path}.scheduled.{category}", _unknown_category(category))
            for name in names:
                if name not in known_schedules:
                    doc.problem(f"{path}.scheduled.{category}", f"no schedule {name!r}")
    opt_in = set()
    for i, lst in enumerate(lists):
        if lst.opt_in and lst.mandatory:
            doc.problem(
                f"lists[{i}].opt_in",
                "a mandatory list applies to every client: it cannot be opt-in",
            )
        if lst.opt_in:
            opt_in.add(lst.category)
    if len(opt_in) > MAX_CATEGORIES:
        doc.problem("lists", f"{len(opt_in)} categories on opt-in lists; at most {MAX_CATEGORIES}")


def _unknown_category(category: str) -> str:
    return (
        f"unknown category {category!r}: neither a built-in category "
        "(docs/profiles.md) nor the category of a configured list"
    )
