"""The block page's HTML: the visited name, the language, the status, and a
document that parses as HTML5 without an error and has the structure an
assistive technology needs (the browser check is tests/integration/
test_block_page.py: axe-core in Chromium)."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import xml.etree.ElementTree as ET
from itertools import product

import html5lib  # type: ignore[import-untyped]
import pytest

from filterd.blockpage.reason import BlockedBy, BlockReason
from filterd.blockpage.render import (
    CSS,
    PALETTE,
    choose_language,
    display_name,
    render,
    status_of,
    visited_host,
)
from filterd.blockpage.texts import TEXTS
from filterd.config import BlockPageConfig

CONFIG = BlockPageConfig(
    operator="Nhà mạng Ví Dụ",
    contact_text="Tổng đài 1800 0000",
    contact_link="mailto:hotro@example.vn",
)
STATE = BlockReason("gambling", BlockedBy.STATE, "Danh sách quốc gia")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("casino.example", "casino.example"),
        ("CASINO.Example.:8080", "casino.example"),
        ("casino.example:80", "casino.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("_dmarc.example", "_dmarc.example"),
        (None, None),
        ("", None),
        ("127.0.0.1", None),
        ("127.0.0.1:80", None),
        ("[::1]:80", None),
        ("::1", None),
        ("casino.example:http", None),
        ("a..example", None),
        ("bad host.example", None),
        ("<script>.example", None),
        ("x" * 64 + ".example", None),
        ("a." * 200 + "example", None),
    ],
)
def test_visited_host(header: str | None, name: str | None) -> None:
    assert visited_host(header) == name


def test_display_name_shows_the_real_name_of_an_idn() -> None:
    assert display_name("xn--bcher-kva.example") == "bücher.example (xn--bcher-kva.example)"
    assert display_name("casino.example") == "casino.example"
    assert display_name("_dmarc.example") == "_dmarc.example"
    assert display_name("xn--zz.example") == "xn--zz.example"  # not valid punycode


@pytest.mark.parametrize(
    ("asked", "accept", "offered", "chosen"),
    [
        (None, None, ("vi", "en"), "vi"),
        ("en", None, ("vi", "en"), "en"),
        ("en", "vi", ("vi", "en"), "en"),  # the link the visitor followed wins
        ("fr", "en", ("vi", "en"), "en"),
        (None, "en-US,en;q=0.9", ("vi", "en"), "en"),
        (None, "vi-VN,vi;q=0.9,en-US;q=0.8,en;q=0.7", ("vi", "en"), "vi"),
        (None, "fr-FR, en;q=0.5", ("vi", "en"), "en"),
        (None, "fr", ("vi", "en"), "vi"),
        (None, "en;q=0", ("vi", "en"), "vi"),
        (None, "en;q=bad, vi;q=0.1", ("vi", "en"), "vi"),
        (None, "en;q=0.5, vi;q=0.5", ("vi", "en"), "en"),  # a tie: the header's order
        (None, "*", ("vi", "en"), "vi"),
        ("en", "en", ("vi",), "vi"),
        (None, None, ("en", "vi"), "en"),
    ],
)
def test_choose_language(
    asked: str | None, accept: str | None, offered: tuple[str, ...], chosen: str
) -> None:
    assert choose_language(asked, accept, offered) == chosen


def test_status_is_451_only_for_what_a_state_authority_requires() -> None:
    assert status_of(STATE) == 451
    assert status_of(BlockReason("games", BlockedBy.PROFILE)) == 403
    assert status_of(BlockReason("ads", BlockedBy.OPERATOR)) == 403
    assert status_of(None) == 403


def parse(page: str) -> ET.Element:
    """The document as an HTML5 parser builds it; any parse error fails."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    root: ET.Element = parser.parse(page)
    return root


def text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


VARIANTS = [
    (language, host, reason, config)
    for language, (host, reason), config in product(
        ("vi", "en"),
        [
            ("casino.example", STATE),
            ("game.example", BlockReason("games", BlockedBy.PROFILE, "school-primary")),
            ("ads.example", BlockReason("new-label", BlockedBy.OPERATOR)),
            (None, None),
        ],
        (CONFIG, BlockPageConfig(languages=("vi",)), BlockPageConfig(contact_link="tel:111")),
    )
    if language in config.languages
]


@pytest.mark.parametrize(("language", "host", "reason", "config"), VARIANTS)
def test_page_structure(
    language: str, host: str | None, reason: BlockReason | None, config: BlockPageConfig
) -> None:
    page = render(config, language, host, reason)
    root = parse(page)
    assert root.get("lang") == language
    assert len(list(root.iter("h1"))) == 1 and len(list(root.iter("main"))) == 1
    assert root.find("head/meta[@name='viewport']") is not None
    ids = {element.get("id") for element in root.iter()}
    for section in root.iter("section"):
        assert section.get("aria-labelledby") in ids
    for nav in root.iter("nav"):
        assert nav.get("aria-label")
    links = list(root.iter("a"))
    assert all(text(a) for a in links), "every link has a name"
    assert any(a.get("href") == "tel:111" and "111" in text(a) for a in links)
    # Self-contained: nothing to fetch, nothing to run.
    assert not [e.tag for e in root.iter() if e.tag in ("script", "img", "link", "iframe")]
    assert "url(" not in CSS and "@import" not in CSS
    others = [code for code in config.languages if code != language]
    assert [a.get("hreflang") for a in root.iter("a") if a.get("hreflang")] == others
    body = text(root)
    if reason is None or host is None:
        assert TEXTS[language].lead_generic in body and ".example" not in body
    else:
        assert host in body and TEXTS[language].categories.get(reason.category, "new-label") in body


def test_the_page_names_its_operator_or_says_whose_policy() -> None:
    page = render(CONFIG, "vi", "ads.example", BlockReason("ads", BlockedBy.OPERATOR))
    assert "<dd>Chính sách của Nhà mạng Ví Dụ</dd>" in page
    assert "Hãy liên hệ Nhà mạng Ví Dụ để đề nghị xem xét lại." in page
    assert (
        '<p>Tổng đài 1800 0000 <a href="mailto:hotro@example.vn">hotro@example.vn</a></p>' in page
    )
    anonymous = render(
        BlockPageConfig(), "en", "ads.example", BlockReason("ads", BlockedBy.OPERATOR)
    )
    assert "<dd>The policy of your network operator</dd>" in anonymous
    assert "Contact your network operator to ask for a review." in anonymous


def test_every_outside_value_is_escaped() -> None:
    config = BlockPageConfig(
        operator="<b>A&B</b>", contact_text="<i>", contact_link="https://x/?a=1&b=<"
    )
    reason = BlockReason("<script>", BlockedBy.PROFILE, '"><img src=x>')
    page = render(config, "en", "casino.example", reason)
    parse(page)
    assert "<b>" not in page and "<i>" not in page and "<script>" not in page
    assert "<img" not in page and "&lt;b&gt;A&amp;B&lt;/b&gt;" in page
    assert 'href="https://x/?a=1&amp;b=&lt;"' in page


def test_an_idn_is_shown_as_people_write_it() -> None:
    page = render(CONFIG, "vi", "xn--bcher-kva.example", STATE)
    assert "<strong>bücher.example (xn--bcher-kva.example)</strong>" in page


def test_texts_are_complete_and_composed() -> None:
    """Every field in every language, the same categories, and Vietnamese
    in composed form (NFC: one code point per letter with its marks, as
    fonts and screen readers expect)."""
    vi, en = TEXTS["vi"], TEXTS["en"]
    assert vi.categories.keys() == en.categories.keys()
    for texts in (vi, en):
        for field in dataclasses.fields(texts):
            value = getattr(texts, field.name)
            values = value.values() if isinstance(value, dict) else [value]
            for item in values:
                assert item and unicodedata.is_normalized("NFC", item), (field.name, item)
    assert "Tổng đài quốc gia bảo vệ trẻ em" in vi.help


def luminance(colour: str) -> float:
    """Relative luminance, WCAG 2.1 (sRGB)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: str, background: str) -> float:
    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_colours_meet_wcag_aa_contrast() -> None:
    """Every colour pair has a contrast of at least 4.5:1 (WCAG 2.1 AA for
    body text; the hotline and headings are larger still), and the CSS uses
    no colour outside the palette."""
    for where, (foreground, background) in PALETTE.items():
        assert contrast(foreground, background) >= 4.5, where
    used = set(re.findall(r"#[0-9a-f]{6}", CSS))
    assert used == {colour for pair in PALETTE.values() for colour in pair}
    assert not re.findall(r"#[0-9a-fA-F]{3}\b|rgb\(|hsl\(", CSS)
