"""The block page's HTML, from the visited name and the reason: pure, no I/O.

- ``visited_host`` turns the request's Host header into the canonical name
  (``wire.names.normalise``) or None: a missing or malformed header, an IP
  literal or a name no list could hold gets the generic page, and never
  reaches ``Explain``;
- ``choose_language``: ``?lang=`` when it names an offered language, else
  the offered language the Accept-Language header (RFC 9110 §12.5.4) gives
  the highest weight (ties: the header's order), else the first offered;
- ``status_of``: 451 Unavailable For Legal Reasons (RFC 7725) for a block a
  state authority requires, 403 Forbidden for every other (the operator's
  own policy, a profile, or no reason known): 451 says "a legal demand",
  which is true only of the authority's lists;
- ``render``: one HTML5 document, self-contained (inline CSS, no script, no
  image, no font, nothing fetched), ``lang`` set, landmarks (``header`` with
  the language ``nav``, ``main``), one ``h1``, a ``tel:111`` link to the
  child-protection hotline and the operator's contact. Its colours
  (``PALETTE``) meet WCAG 2.1 AA contrast (tests/unit/blockpage computes
  the ratios). Every value from outside (the name, the operator's texts and
  link, a reason's labels) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Final

import idna

from filterd.blockpage.reason import BlockedBy, BlockReason
from filterd.blockpage.texts import HOTLINE, TEXTS, Texts
from filterd.config import BlockPageConfig
from filterd.wire.names import MAX_NAME_LENGTH, InvalidName, normalise_text

MAX_LANGUAGE_RANGES: Final = 16
"""Accept-Language entries looked at; the rest of a long header is ignored."""

PALETTE: Final = {
    "text": ("#1b1b1b", "#ffffff"),
    "heading": ("#9e0000", "#ffffff"),
    "link": ("#0a4f8a", "#ffffff"),
    "help text": ("#1b1b1b", "#eaf2fb"),
    "help link": ("#0a4f8a", "#eaf2fb"),
}
"""(foreground, background) pairs the CSS uses, by where they meet."""

_TEXT, _PAGE = PALETTE["text"]
_HELP = PALETTE["help text"][1]
CSS: Final = (
    f"html{{color:{_TEXT};background:{_PAGE};"
    'font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;'
    "font-size:100%;line-height:1.5}"
    "body{margin:0}"
    "header,main{max-width:40rem;margin:0 auto;padding:0 1rem}"
    "header{text-align:right;padding-top:.75rem}"
    f"h1{{color:{PALETTE['heading'][0]};font-size:1.75rem;line-height:1.25;margin:1rem 0}}"
    "h2{font-size:1.25rem;margin:0 0 .5rem}"
    f"a{{color:{PALETTE['link'][0]};text-decoration:underline}}"
    f"a:focus-visible{{outline:3px solid {_TEXT};outline-offset:2px}}"
    "strong{overflow-wrap:anywhere}"
    "dl{margin:1rem 0}dt{font-weight:700}dd{margin:0 0 .5rem}"
    f"section{{margin:1.5rem 0;padding:1rem;border-left:.375rem solid {PALETTE['link'][0]}}}"
    f".help{{background:{_HELP}}}"
    ".call{font-size:1.75rem;font-weight:700;margin:.5rem 0 0}"
    ".call a{display:inline-block;padding:.25rem 0}"
)


def visited_host(header: str | None) -> str | None:
    """The canonical name a Host header names (any port dropped), or None."""
    if not header or len(header) > MAX_NAME_LENGTH + 7:
        return None
    host = header.strip()
    if host.startswith("["):
        return None  # an IPv6 literal: no name
    name, colon, port = host.rpartition(":")
    if colon:
        if not port.isdigit() or ":" in name:
            return None
        host = name
    try:
        return normalise_text(host).decode("ascii")
    except InvalidName:
        return None


def display_name(name: str) -> str:
    """``name`` as a person reads it: U-labels, with the A-label form after
    it when they differ (so a look-alike name shows what it really is)."""
    try:
        unicode = idna.decode(name)
    except (idna.IDNAError, UnicodeError, ValueError):
        return name
    return name if unicode == name else f"{unicode} ({name})"


def choose_language(asked: str | None, accept: str | None, offered: tuple[str, ...]) -> str:
    if asked in offered:
        assert asked is not None
        return asked
    best, weight = offered[0], 0.0
    for entry in (accept or "").split(",")[:MAX_LANGUAGE_RANGES]:
        tag, _, params = entry.partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in offered:
            continue
        q = 1.0
        key, _, value = params.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                continue
        if q > weight:
            best, weight = primary, q
    return best


def status_of(reason: BlockReason | None) -> int:
    return 451 if reason is not None and reason.blocked_by is BlockedBy.STATE else 403


def render(
    config: BlockPageConfig, language: str, host: str | None, reason: BlockReason | None
) -> str:
    """The page in ``language`` for ``host`` (None: generic) blocked for ``reason``
    (None: no reason known, the generic wording without the name)."""
    t = TEXTS[language]
    operator = escape(config.operator) if config.operator else t.your_operator
    title = t.title
    if host is not None and reason is not None:
        shown = escape(display_name(host))
        title = f"{t.title}: {shown}"
        about = (
            f"<p>{t.lead.format(host=f'<strong>{shown}</strong>')}</p>\n"
            f"<dl>\n<dt>{t.category}</dt><dd>{_category(t, reason.category)}</dd>\n"
            f"<dt>{t.blocked_by}</dt><dd>{_blocked_by(t, reason, operator)}</dd>\n</dl>"
        )
    else:
        about = f"<p>{t.lead_generic}</p>"
    return (
        f'<!DOCTYPE html>\n<html lang="{language}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"{_languages(t, language, config.languages)}"
        f"<main>\n<h1>{t.heading}</h1>\n{about}\n"
        f'<section class="help" aria-labelledby="help">\n<h2 id="help">{t.help_heading}</h2>\n'
        f"<p>{t.help}</p>\n"
        f'<p class="call"><a href="tel:{HOTLINE}">{t.call.format(hotline=HOTLINE)}</a></p>\n'
        "</section>\n"
        f'<section aria-labelledby="review">\n<h2 id="review">{t.review_heading}</h2>\n'
        f"<p>{t.review.format(operator=operator)}</p>\n{_contact(config)}"
        "</section>\n</main>\n</body>\n</html>\n"
    )


def _category(t: Texts, category: str) -> str:
    return escape(t.categories.get(category, category))


def _blocked_by(t: Texts, reason: BlockReason, operator: str) -> str:
    base = {
        BlockedBy.STATE: t.by_state,
        BlockedBy.OPERATOR: t.by_operator.format(operator=operator),
        BlockedBy.PROFILE: t.by_profile,
    }[reason.blocked_by]
    return f"{base} — {escape(reason.label)}" if reason.label else base


def _languages(t: Texts, language: str, offered: tuple[str, ...]) -> str:
    """The links to the page in the other offered languages (none if one is offered)."""
    others = [code for code in offered if code != language]
    if not others:
        return ""
    links = " ".join(
        f'<a href="?lang={code}" hreflang="{code}" lang="{code}">{TEXTS[code].name}</a>'
        for code in others
    )
    return f'<header>\n<nav aria-label="{t.language_nav}">{links}</nav>\n</header>\n'


def _contact(config: BlockPageConfig) -> str:
    text = escape(config.contact_text)
    link = config.contact_link
    if link:
        shown = link.split(":", 1)[1] if link.startswith(("mailto:", "tel:")) else link
        anchor = f'<a href="{escape(link)}">{escape(shown)}</a>'
        text = f"{text} {anchor}" if text else anchor
    return f"<p>{text}</p>\n" if text else ""
