"""``block_page``: strict settings, each problem with its line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config import BlockPageConfig, Endpoint
from filterd.config.load import parse_config
from filterd.errors import ConfigError

UPSTREAM = "upstream: {servers: ['192.0.2.53']}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(UPSTREAM + text, "f.yaml", Path("/etc/filterd"))
    return caught.value.problems


def test_off_by_default() -> None:
    assert parse_config(UPSTREAM).block_page == BlockPageConfig()
    assert BlockPageConfig().enabled is False
    assert BlockPageConfig().languages == ("vi", "en")


def test_every_key() -> None:
    page = parse_config(
        UPSTREAM + "block_page:\n"
        "  enabled: true\n"
        "  listen: ['192.0.2.1', '[2001:db8::1]:8080']\n"
        "  languages: [en, vi]\n"
        "  operator: '  Nhà mạng Ví Dụ '\n"
        "  contact_text: Tổng đài 1800 0000\n"
        "  contact_link: 'tel:+84-1800-0000'\n"
        "  max_connections: 32\n"
        "  connection_lifetime: 5\n"
    ).block_page
    assert page == BlockPageConfig(
        enabled=True,
        listen=(Endpoint("192.0.2.1", 80), Endpoint("2001:db8::1", 8080)),
        languages=("en", "vi"),
        operator="Nhà mạng Ví Dụ",
        contact_text="Tổng đài 1800 0000",
        contact_link="tel:+84-1800-0000",
        max_connections=32,
        connection_lifetime=5.0,
    )


def test_bad_values_are_reported_with_their_paths() -> None:
    found = problems(
        "block_page:\n"
        "  enabled: true\n"
        "  languages: [vi, fr]\n"
        '  operator: "two\\nlines"\n'
        "  contact_link: 'javascript:alert(1)'\n"
        "  max_connections: 0\n"
        "  colour: red\n"
    )
    assert found == [
        "f.yaml:4: block_page.languages: item 2: must be one of vi, en, got 'fr'",
        "f.yaml:5: block_page.operator: must be one line of printable characters",
        "f.yaml:6: block_page.contact_link: must be an https://, http://, mailto: or tel: link,"
        " got 'javascript:alert(1)'",
        "f.yaml:7: block_page.max_connections: must be between 1 and 100000, got 0",
        "f.yaml:2: block_page.listen: required when block_page.enabled is true",
        "f.yaml:8: block_page.colour: unknown key",
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("languages", "[]", "must not be empty"),
        ("languages", "[vi, vi]", "a language is listed twice"),
        ("contact_link", "'mailto:'", "must be an https://, http://, mailto: or tel: link"),
        ("contact_link", "'https://x.example/a b'", "holds a space"),
        ("contact_link", "'https://x.example/\"'", "holds a space or a character"),
        ("operator", "'" + "x" * 101 + "'", "at most 100 characters"),
        ("listen", "['example.com:80']", "is not an IP address"),
    ],
)
def test_refused_values(key: str, value: str, message: str) -> None:
    (found,) = problems(f"block_page:\n  {key}: {value}\n")
    assert f"block_page.{key}: " in found and message in found, found
