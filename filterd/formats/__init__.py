"""Blocklist formats: bytes in, canonical names grouped by meaning out.

One function per format, all with the same contract: ``parse(data, options)``
returns a ``ParsedList`` whose ``groups`` map an ``EntryKind`` (scope,
allow/block, category, action, reference) to the canonical names carrying
it. Nothing here raises on bad content: every data line is either accepted,
*invalid* (malformed, reported with its line number and reason) or *ignored*
(valid syntax of that format that filterd does not enforce at the DNS level,
reported the same way). ``accepted + invalid + ignored`` equals the number of
data lines, so a list's accounting can always be checked.

The common case is made fast: a whole line that already is a canonical name
(or a ``0.0.0.0 name`` hosts line, or a ``||name^`` rule) is recognised by one
compiled regular expression applied to a whole chunk
(``filterd.formats.common``); only the remaining lines
take the per-line path. Semantics of each format are documented in
``docs/list-formats.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from filterd.formats.common import (
    FORMAT_HEAD,
    NATIVE_HEADER,
    EntryKind,
    Format,
    ListInput,
    ParsedList,
    ParseOptions,
    Problem,
    detect_format,
)
from filterd.formats.native import NATIVE_KINDS, parse_native
from filterd.formats.plain import parse_adblock, parse_domains, parse_hosts
from filterd.formats.rpz import parse_rpz

__all__ = [
    "FORMAT_HEAD",
    "NATIVE_HEADER",
    "NATIVE_KINDS",
    "EntryKind",
    "Format",
    "ListInput",
    "ParseOptions",
    "ParsedList",
    "Problem",
    "detect_format",
    "parse",
    "parse_adblock",
    "parse_domains",
    "parse_hosts",
    "parse_native",
    "parse_rpz",
]

_PARSERS: Final[dict[Format, Callable[[ListInput, ParseOptions], ParsedList]]] = {
    Format.DOMAINS: parse_domains,
    Format.HOSTS: parse_hosts,
    Format.ADBLOCK: parse_adblock,
    Format.RPZ: parse_rpz,
    Format.NATIVE: parse_native,
}


def parse(data: ListInput, fmt: Format, options: ParseOptions) -> ParsedList:
    """Parse ``data`` (a whole list file) in format ``fmt``."""
    return _PARSERS[fmt](data, options)
