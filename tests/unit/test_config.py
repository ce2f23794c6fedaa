"""Configuration: strict, complete error reports with file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config import Endpoint, parse_endpoint, system_resolvers
from filterd.config.load import load_config, parse_config
from filterd.errors import ConfigError
from filterd.model.rules import Action, Scope


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml", Path("/etc/filterd"))
    return caught.value.problems


def test_defaults() -> None:
    config = parse_config("upstream: {servers: ['192.0.2.53']}")
    assert config.server.listen == (Endpoint("127.0.0.1", 5353),)
    assert config.upstream.servers == (Endpoint("192.0.2.53", 53),)
    assert config.blocking.default_action is Action.NXDOMAIN
    assert config.blocking.ttl == 5
    assert config.cache.max_bytes == 512 * 1024 * 1024
    assert config.admin.listen == Endpoint("127.0.0.1", 9553)
    assert any(str(net) == "10.0.0.0/8" for net in config.access.allow)


def test_every_problem_is_reported_with_line_and_path() -> None:
    found = problems(
        "server:\n"
        "  listen: ['127.0.0.1:99999']\n"
        "  workrs: 2\n"
        "upstream:\n"
        "  servers: ['192.0.2.1']\n"
        "  timeout: fast\n"
        "cache: {max_bytes: -1}\n"
        "lists:\n"
        "  - name: national\n"
        "    path: n.txt\n"
        "    format: csv\n"
    )
    assert found == [
        "f.yaml:2: server.listen: item 1: port '99999' is not a number from 0 to 65535",
        "f.yaml:3: server.workrs: unknown key",
        "f.yaml:6: upstream.timeout: must be a number of seconds, got str 'fast'",
        "f.yaml:7: cache.max_bytes: must be between 0 and 1099511627776, got -1",
        "f.yaml:11: lists[0].format: must be one of auto, domains, hosts, adblock, rpz, native,"
        " got 'csv'",
    ]


def test_the_old_count_bound_of_the_cache_points_to_its_replacement() -> None:
    found = problems("upstream: {servers: ['192.0.2.1']}\ncache: {max_entries: 100000}\n")
    assert found == ["f.yaml:2: cache.max_entries: replaced by cache.max_bytes (a bound in bytes)"]


def test_duplicate_keys_and_list_names() -> None:
    found = problems(
        "upstream: {servers: ['192.0.2.1']}\n"
        "cache: {max_bytes: 1}\n"
        "cache: {max_bytes: 2}\n"
        "lists:\n"
        "  - {name: a, path: a.txt}\n"
        "  - {name: a, path: b.txt}\n"
    )
    assert "f.yaml:3: cache: duplicate key" in found
    assert "f.yaml:6: lists[1].name: duplicate list name 'a'" in found


def test_sinkhole_needs_an_address() -> None:
    found = problems("upstream: {servers: ['192.0.2.1']}\nblocking: {default_action: sinkhole}\n")
    assert found == [
        "f.yaml:2: blocking.default_action: sinkhole needs blocking.sinkhole.ipv4 and/or ipv6"
    ]


def test_invalid_yaml_is_one_line() -> None:
    assert problems("server: [unclosed\n")[0].startswith("f.yaml:2: invalid YAML")


def test_list_settings_and_relative_paths() -> None:
    config = parse_config(
        "upstream: {servers: ['[2001:db8::53]:5300']}\n"
        "blocking:\n"
        "  sinkhole: {ipv4: 192.0.2.80}\n"
        "  category_actions: {Gambling: sinkhole}\n"
        "lists:\n"
        "  - {name: National, path: lists/n.txt, mandatory: true, mode: exact, ede: filtered}\n",
        "f.yaml",
        Path("/etc/filterd"),
    )
    (lst,) = config.lists
    assert lst.name == "national" and lst.path == Path("/etc/filterd/lists/n.txt")
    assert lst.mode is Scope.EXACT and lst.mandatory and lst.ede_code == 17
    assert config.blocking.category_actions == (("gambling", Action.SINKHOLE),)
    assert config.upstream.servers == (Endpoint("2001:db8::53", 5300),)


def test_ede_defaults_follow_the_list_kind() -> None:
    config = parse_config(
        "upstream: {servers: ['192.0.2.1']}\n"
        "lists: [{name: a, path: a, mandatory: true}, {name: b, path: b}]\n"
    )
    assert [lst.ede_code for lst in config.lists] == [16, 15]


def test_endpoints() -> None:
    assert parse_endpoint("192.0.2.1", 53) == Endpoint("192.0.2.1", 53)
    assert parse_endpoint("[::1]:5353", 53) == Endpoint("::1", 5353)
    assert parse_endpoint("::1", 53) == Endpoint("::1", 53)
    assert str(Endpoint("::1", 53)) == "[::1]:53"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_endpoint("resolver.example:53", 53)


def test_system_resolvers(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# c\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\n")
    assert system_resolvers(resolv) == (Endpoint("192.0.2.53", 53), Endpoint("fe80::1", 53))
    assert system_resolvers(tmp_path / "missing") == ()


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes: the form of a public key


def test_lists_from_further_authorities() -> None:
    config = parse_config(
        "sync: {url: 'https://mic.example/v1/', token_file: t, public_key: "
        f"'{KEY}', operator: vnpt, lag_sla: 600}}\n"
        "authorities:\n"
        "  so-tttt-hn: {url: 'https://hn.example/v1/', token_file: u, "
        f"public_key: '{KEY}', operator: vnpt-hn}}\n"
        "lists:\n"
        "  - {name: national, sync: national}\n"
        "  - {name: province-hn, sync: province-hn, authority: so-tttt-hn}\n"
    )
    national, province = config.lists
    assert config.authority(national.authority) is config.sync
    hanoi = config.authority(province.authority)
    assert hanoi.url == "https://hn.example/v1/" and hanoi.operator == "vnpt-hn"
    assert hanoi.lag_sla == 600 and hanoi.node == config.sync.node  # shared keys


def test_authority_problems() -> None:
    found = problems(
        "authorities:\n"
        f"  hn: {{token_file: u, public_key: '{KEY}', operator: o, node: n2}}\n"
        "lists:\n"
        "  - {name: a, sync: national, authority: nowhere}\n"
        "  - {name: b, sync: national, authority: hn}\n"
        "  - {name: c, path: c.txt, authority: hn}\n"
    )
    assert "f.yaml:2: authorities.hn.node: set it in sync: it holds for every authority" in found
    assert "f.yaml:2: authorities.hn.url: required" in found
    assert "f.yaml:4: lists[0].authority: no authority 'nowhere' in authorities" in found
    assert "f.yaml:5: lists[1].sync: list 'national' is already synced by another entry" in found
    assert "f.yaml:6: lists[2].authority: only for a list with sync (an authority list)" in found


def test_a_bad_value_is_one_problem_not_two() -> None:
    found = problems(
        "sync: {url: 'https://a/v1/', token_file: t, public_key: 'short', operator: o}\n"
    )
    assert found == ["f.yaml:1: sync.public_key: not a base64 Ed25519 public key (32 bytes)"]
