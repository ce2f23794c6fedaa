"""The group table: most specific prefix wins, IPv4 and IPv6, ECS within its prefix."""

from __future__ import annotations

import ipaddress

from filterd.config.groups import GroupConfig
from filterd.profiles.groups import GroupTable, PrefixTable


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


TABLE = GroupTable(
    [
        GroupConfig("default"),
        GroupConfig("isp", (net("10.0.0.0/8"), net("2001:db8::/32"))),
        GroupConfig("school", (net("10.1.0.0/16"), net("2001:db8:1::/48"))),
        GroupConfig("lab", (net("10.1.2.0/24"), net("10.1.2.128/25"))),
        GroupConfig("host", (net("10.1.2.200/32"),)),
    ],
    trust=(net("192.0.2.53/32"),),
)


def name_of(address: str) -> str:
    return TABLE.names[TABLE.group_of(packed(address))]


def test_the_most_specific_prefix_wins() -> None:
    assert name_of("10.9.9.9") == "isp"
    assert name_of("10.1.9.9") == "school"
    assert name_of("10.1.2.3") == "lab"
    assert name_of("10.1.2.129") == "lab"
    assert name_of("10.1.2.200") == "host"
    assert name_of("192.0.2.1") == "default"
    assert name_of("2001:db8:1::5") == "school"
    assert name_of("2001:db8:2::5") == "isp"
    assert name_of("2001:db9::1") == "default"


def test_ipv4_mapped_addresses_are_ipv4() -> None:
    assert name_of("::ffff:10.1.2.3") == "lab"


def test_a_client_subnet_vouches_only_for_its_own_prefix() -> None:
    # A /16 subnet says nothing about which /24 inside it the client is in.
    assert TABLE.names[TABLE.find(packed("10.1.0.0"), 16) or 0] == "school"
    assert TABLE.find(packed("10.1.2.0"), 24) == TABLE.names.index("lab")
    assert TABLE.find(packed("172.16.0.0"), 16) is None


def test_trusted_forwarders() -> None:
    assert TABLE.trusts(packed("192.0.2.53"))
    assert not TABLE.trusts(packed("192.0.2.54"))
    assert not GroupTable([GroupConfig("default")]).trusts(packed("192.0.2.53"))


def test_without_groups_there_is_nothing_to_look_up() -> None:
    table = GroupTable([GroupConfig("default")])
    assert table.single
    assert table.group_of(packed("10.1.2.3")) == table.default
    assert not TABLE.single


def test_prefix_table_keeps_one_table_per_configured_length() -> None:
    table = PrefixTable([(net("10.0.0.0/8"), "a"), (net("10.1.0.0/16"), "b")])
    assert table.lookup(packed("10.1.0.1")) == "b"
    assert table.lookup(packed("10.2.0.1")) == "a"
    assert table.lookup(packed("11.0.0.1")) is None
    assert table.lookup(packed("::1")) is None
    assert not PrefixTable([])
