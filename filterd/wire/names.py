"""Domain-name normalisation: one canonical form for lists, queries and the CLI.

The canonical form is the name in ASCII, lower-case, labels joined by dots,
without the trailing root dot: ``b"www.example.com"``. Lists are normalised
into it once, at compile time; queries reach it from wire format by
``wire_to_text``. Rules applied:

- ASCII case is folded (RFC 4343); non-ASCII names are mapped with UTS #46
  (non-transitional) and each non-ASCII label encoded as an IDNA 2008 A-label,
  so ``momovíđiệntửsố1.weebly.com`` and its ``xn--`` twin are one name;
- one trailing dot (absolute name) and one leading dot are removed;
- each label is 1-63 octets from ``[a-z0-9_-]`` and the whole name at most
  253 characters (RFC 1035 §2.3.4, 255 octets on the wire); underscores are
  legal in DNS (RFC 2181 §11) and appear in real lists, so they are kept;
- the last label must not be all digits: no top-level domain is numeric
  (RFC 3696 §2), which also rejects IPv4 addresses written as names.
"""

from __future__ import annotations

import re
from typing import Final

import idna

MAX_NAME_LENGTH: Final = 253
_NAME_RE: Final = re.compile(rb"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
_DIGITS: Final = frozenset(b"0123456789")


class InvalidName(ValueError):
    """A string that is not a usable domain name; the message says why."""


def normalise(raw: bytes) -> bytes:
    """Return the canonical form of ``raw`` or raise ``InvalidName``.

    ``raw`` is what a list or a person wrote; ASCII input is expected to be
    lower-cased by the caller already when it comes from a bulk-lowered file,
    but is lowered again here for direct callers (it is cheap for ASCII).
    """
    if raw.endswith(b"."):
        raw = raw[:-1]
    if raw.startswith(b"."):
        raw = raw[1:]
    # UTS #46 maps full stops such as U+3002 to ".": trim dots again after mapping.
    raw = raw.lower() if raw.isascii() else _idna(raw).strip(b".")
    if len(raw) > MAX_NAME_LENGTH:
        raise InvalidName("name longer than 253 characters")
    if _NAME_RE.fullmatch(raw) is None:
        raise InvalidName(_why_invalid(raw))
    last = raw.rpartition(b".")[2]
    if _DIGITS.issuperset(last):
        raise InvalidName("IP address or numeric top-level label")
    return raw


def normalise_text(name: str) -> bytes:
    """``normalise`` for text a person typed (CLI, config)."""
    return normalise(name.strip().encode("utf-8"))


def _idna(raw: bytes) -> bytes:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName("not valid UTF-8") from None
    try:
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
        labels = [
            label.encode("ascii") if label.isascii() else idna.alabel(label)
            for label in mapped.split(".")
        ]
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise InvalidName(f"invalid internationalised name: {exc}") from None
    return b".".join(labels).lower()


def _why_invalid(raw: bytes) -> str:
    if not raw:
        return "empty name"
    for label in raw.split(b"."):
        if not label:
            return "empty label"
        if len(label) > 63:
            return "label longer than 63 characters"
    return "character not allowed in a domain name"


def wire_to_text(wire: bytes) -> bytes | None:
    """Canonical text form of a lower-cased wire name, or ``None`` if ambiguous.

    A wire label may legally contain a ``.`` octet; such a name has no unique
    text form, and since no list entry can contain one, the caller treats it
    as matching no rule. The walk stops at the root label; the input is a
    question name already validated by ``parse_query``.
    """
    labels = []
    pos = 0
    length = wire[0]
    while length:
        labels.append(wire[pos + 1 : pos + 1 + length])
        pos += length + 1
        length = wire[pos]
    text = b".".join(labels)
    if text.count(b".") != len(labels) - 1 and labels:
        return None
    return text


def text_to_wire(name: bytes) -> bytes:
    """Wire form of a canonical text name (used off the hot path only)."""
    if not name:
        return b"\x00"
    return b"".join(bytes((len(label),)) + label for label in name.split(b".")) + b"\x00"
