"""Groups, profiles, schedules and time zone in the configuration: values
and every bad input as an error with its key path (``check-config``)."""

from __future__ import annotations

import ipaddress
from datetime import date
from pathlib import Path

import pytest

from filterd.config.groups import BUILTIN_PROFILES, DEFAULT_GROUP, Window
from filterd.config.load import parse_config
from filterd.errors import ConfigError
from filterd.model.rules import Action
from filterd.wire.codes import EDE_BLOCKED, EDE_CENSORED, EDE_FILTERED

BASE = "upstream: {servers: ['192.0.2.1']}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + text, "f.yaml")
    return caught.value.problems


def test_without_groups_every_client_is_in_the_default_group() -> None:
    config = parse_config(BASE)
    assert [(g.name, g.networks, g.profile) for g in config.groups] == [
        (DEFAULT_GROUP, (), "default")
    ]
    assert config.profiles == BUILTIN_PROFILES
    assert config.time_zone == "Asia/Ho_Chi_Minh"
    assert config.client_subnet.trust == ()


def test_groups_profiles_and_schedules_are_read() -> None:
    config = parse_config(
        BASE
        + """
groups:
  school-a: {networks: ["10.1.0.0/16", "2001:db8:1::/48"], profile: exam}
  default: {profile: family}
profiles:
  exam:
    categories: [adult, games]
    scheduled: {social: [study, night]}
    safe_search: true
    youtube: strict
    action: nodata
    https_action: refused
schedules:
  study:
    - {days: weekdays, start: "08:00", end: 24:00, holidays: [2026-09-02, "2027-01-01"]}
    - {days: [sat], start: 22:30, end: "06:00"}
time_zone: Asia/Bangkok
client_subnet: {trust: ["10.0.0.53/32"]}
"""
    )
    groups = {g.name: g for g in config.groups}
    assert groups["school-a"].networks == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("2001:db8:1::/48"),
    )
    assert groups["default"].profile == "family"
    exam = {p.name: p for p in config.profiles}["exam"]
    assert exam.categories == ("adult", "games")
    assert exam.scheduled == (("social", ("study", "night")),)
    assert (exam.safe_search, exam.youtube, exam.action, exam.https_action) == (
        True, "strict", Action.NODATA, Action.REFUSED,
    )  # fmt: skip
    study = {s.name: s for s in config.schedules}["study"]
    assert study.windows == (
        Window(
            frozenset(range(5)), 8 * 60, 24 * 60, frozenset({date(2026, 9, 2), date(2027, 1, 1)})
        ),
        Window(frozenset({5}), 22 * 60 + 30, 6 * 60),
    )
    assert "night" in {s.name for s in config.schedules}  # built-ins stay
    assert config.time_zone == "Asia/Bangkok"
    assert config.client_subnet.trust == (ipaddress.ip_network("10.0.0.53/32"),)


def test_opt_in_lists_answer_filtered() -> None:
    config = parse_config(
        BASE
        + """
lists:
  - {name: games, path: g.txt, category: games, opt_in: true, https_only: true}
  - {name: own, path: o.txt}
  - {name: national, path: n.txt, mandatory: true}
"""
    )
    games, own, national = config.lists
    assert games.opt_in and games.https_only and games.ede_code == EDE_FILTERED
    assert own.ede_code == EDE_BLOCKED and national.ede_code == EDE_CENSORED


def test_bad_groups_are_errors_with_their_key_path() -> None:
    found = problems(
        """
groups:
  a: {networks: ["10.1.0.0/16", "10.2.0.1/16", "bogus", "10.1.0.0/16"], profile: nope}
  b: {networks: ["10.1.0.0/16", "10.1.128.0/17"]}
  c: {profile: family}
  default: {networks: ["10.9.0.0/16"]}
  "bad name!": {networks: ["10.3.0.0/16"]}
"""
    )
    assert found == [
        "f.yaml:4: groups.a.networks[1]: '10.2.0.1/16' is not a CIDR prefix "
        "(10.2.0.1/16 has host bits set)",
        "f.yaml:4: groups.a.networks[2]: 'bogus' is not a CIDR prefix "
        "('bogus' does not appear to be an IPv4 or IPv6 network)",
        "f.yaml:4: groups.a.networks[3]: 10.1.0.0/16 is already in this group",
        "f.yaml:5: groups.b.networks[0]: 10.1.0.0/16 is already in group 'a'",
        "f.yaml:6: groups.c.networks: required (client prefixes, e.g. 10.1.0.0/16)",
        "f.yaml:7: groups.default.networks: the default group holds every other client",
        "f.yaml:8: groups.bad name!: a group name holds letters, digits, - and _",
        "f.yaml:4: groups.a.profile: no profile 'nope' "
        "(known: default, family, school-primary, school-secondary)",
    ]


def test_an_impossible_date_is_an_error_not_a_traceback() -> None:
    found = problems(
        "schedules: {s: [{days: all, start: '07:00', end: '08:00', holidays: [2026-13-01]}]}"
    )
    assert found == ["f.yaml: invalid YAML value: month must be in 1..12"]


def test_bad_profiles_are_errors_with_their_key_path() -> None:
    found = problems(
        """
profiles:
  p:
    categories: [gamling, games]
    scheduled: {games: school-hours, social: nights}
    youtube: maybe
    https_action: sinkhole
    action: sinkhole
    colour: blue
"""
    )
    assert (
        "f.yaml:5: profiles.p.categories[0]: unknown category 'gamling': neither a built-in "
        "category (docs/profiles.md) nor the category of a configured list" in found
    )
    assert (
        "f.yaml:6: profiles.p.scheduled.games: also in categories (applied at all times): "
        "choose one" in found
    )
    assert "f.yaml:6: profiles.p.scheduled.social: no schedule 'nights'" in found
    assert (
        "f.yaml:7: profiles.p.youtube: must be one of off, moderate, strict, got 'maybe'" in found
    )
    assert any(
        line.startswith("f.yaml:8: profiles.p.https_action: must be an answer") for line in found
    )
    assert "f.yaml:9: profiles.p.action: sinkhole needs blocking.sinkhole.ipv4 and/or ipv6" in found
    assert "f.yaml:10: profiles.p.colour: unknown key" in found


def test_a_category_of_a_configured_list_is_known() -> None:
    config = parse_config(
        BASE
        + """
lists: [{name: allow-school, path: a.txt, kind: allow, category: school-allow, opt_in: true}]
profiles: {p: {categories: [school-allow]}}
"""
    )
    assert {p.name: p for p in config.profiles}["p"].categories == ("school-allow",)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ('{days: [mon], start: "25:00", end: "06:00"}',
         "schedules.s[0].start: 25:00 is not a time of day (00:00 to 23:59)"),
        ('{days: [mon], start: "07:00", end: "24:01"}',
         "schedules.s[0].end: 24:01 is not a time of day (00:00 to 24:00)"),
        ('{days: [mon], start: "7h", end: "08:00"}',
         "schedules.s[0].start: '7h' is not a time HH:MM (quote it: '07:00')"),
        ('{days: [mon], start: "07:61", end: "08:00"}',
         "schedules.s[0].start: '07:61' is not a time HH:MM"),
        ('{days: [], start: "07:00", end: "08:00"}', "schedules.s[0].days: must not be empty"),
        ('{days: [monday], start: "07:00", end: "08:00"}',
         "schedules.s[0].days: item 1: must be one of mon, tue, wed, thu, fri, sat, sun, "
         "got 'monday'"),
        ('{days: all, start: "07:00", end: "07:00"}',
         "schedules.s[0].end: equals start (07:00): an empty window; for a whole day write "
         "start 00:00, end 24:00"),
        ('{days: all, start: "07:00"}', "schedules.s[0].end: required"),
        ('{days: all, start: "07:00", end: "08:00", holidays: ["2026-13-01"]}',
         "schedules.s[0].holidays: item 1: '2026-13-01' is not a date YYYY-MM-DD"),
    ],
)  # fmt: skip
def test_impossible_schedules(window: str, message: str) -> None:
    found = problems(f"schedules:\n  s:\n    - {window}\n")
    assert [line.split(": ", 1)[1] for line in found] == [message]


def test_an_empty_schedule_and_a_bad_time_zone() -> None:
    found = problems("schedules: {s: []}\ntime_zone: Mars/Olympus\n")
    assert found == [
        "f.yaml:2: schedules.s: must be a non-empty list of windows (days, start, end)",
        "f.yaml:3: time_zone: unknown time zone 'Mars/Olympus' (an IANA name such as "
        "Asia/Ho_Chi_Minh; is the tzdata package installed?)",
    ]


def test_a_mandatory_list_cannot_be_opt_in_and_ecs_trust_needs_prefixes() -> None:
    found = problems(
        "lists: [{name: n, path: n.txt, mandatory: true, opt_in: true}]\n"
        "client_subnet: {trust: ['10.0.0.53/24']}\n"
    )
    assert found == [
        "f.yaml:3: client_subnet.trust: item 1: '10.0.0.53/24' is not a CIDR prefix "
        "(10.0.0.53/24 has host bits set)",
        "f.yaml:2: lists[0].opt_in: a mandatory list applies to every client: it cannot be opt-in",
    ]


def test_the_example_configuration_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "profiles.example.yaml"
    config = parse_config(example.read_text(), str(example), example.parent)
    groups = {g.name: g.profile for g in config.groups}
    assert groups == {
        "default": "default",
        "primary-schools": "school-primary",
        "secondary-schools": "school-secondary",
        "families": "family-block-page",
    }
    assert sum(lst.opt_in for lst in config.lists) == 29
