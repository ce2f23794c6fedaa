"""Canonical names: one form for lists, queries and people."""

from __future__ import annotations

import pytest

from filterd.wire.names import InvalidName, normalise, normalise_text, text_to_wire, wire_to_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Example.COM", b"example.com"),
        (b"www.guruofporn.com.", b"www.guruofporn.com"),
        (b".afshin.ir", b"afshin.ir"),
        (b"_analytics.synonym.to", b"_analytics.synonym.to"),
        ("momovíđiệntửsố1.weebly.com".encode(), b"xn--momovints1-o8a64b3904adea8q.weebly.com"),
        (
            b"xn--momovints1-o8a64b3904adea8q.weebly.com",
            b"xn--momovints1-o8a64b3904adea8q.weebly.com",
        ),
        ("Bücher.DE".encode(), b"xn--bcher-kva.de"),
        (b"a" * 63 + b".com", b"a" * 63 + b".com"),
    ],
)
def test_normalise(raw: bytes, expected: bytes) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1.0.209.238", "IP address"),
        (b"example.123", "numeric top-level"),
        (b"a" * 64 + b".com", "longer than 63"),
        (b"a..b", "empty label"),
        (b"", "empty"),
        (b"exa mple.com", "not allowed"),
        (b"=" * 100, "longer than 63"),
        (b"===.com", "not allowed"),
        (b"\xff\xfe.com", "UTF-8"),
        (b".".join([b"a" * 60] * 5), "253"),
    ],
)
def test_invalid_names(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        normalise(raw)


def test_length_limit_is_253_characters() -> None:
    name = b".".join([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61])
    assert len(name) == 253 and normalise(name) == name
    with pytest.raises(InvalidName):
        normalise(name + b"e")


def test_text_and_wire_round_trip() -> None:
    assert text_to_wire(b"www.example.com") == b"\x03www\x07example\x03com\x00"
    assert wire_to_text(b"\x03www\x07example\x03com\x00") == b"www.example.com"
    assert wire_to_text(b"\x00") == b""
    # A dot inside a label has no text form; it must match nothing.
    assert wire_to_text(b"\x07exa.mpl\x03com\x00") is None


def test_normalise_text_strips_blanks() -> None:
    assert normalise_text("  Example.org. ") == b"example.org"
