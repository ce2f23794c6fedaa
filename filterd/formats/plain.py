"""The plain formats: one domain per line, hosts files, and adblock-style ``||name^`` rules.

Semantics in ``docs/list-formats.md``; the shared contract in ``filterd.formats.common``.
"""

from __future__ import annotations

import re
from typing import Final

from filterd.formats.common import (
    ADBLOCK_LINE,
    DOMAIN_LINE,
    HOSTS_LINE,
    EntryKind,
    Format,
    ListInput,
    ParsedList,
    ParseOptions,
    Skip,
    entry_name,
    is_ip,
    parse_in_bulk,
    strip_comment,
)
from filterd.model.rules import Scope

# ---------------------------------------------------------------- domains


def parse_domains(data: ListInput, options: ParseOptions) -> ParsedList:
    """One name per line; ``*.name`` and ``.name`` mean the name and its subdomains."""
    plain = EntryKind(options.plain_scope)
    subtree = EntryKind(Scope.SUBTREE)

    def slow(line: bytes, result: ParsedList) -> None:
        tokens = strip_comment(line).split()
        if not tokens:
            return
        if len(tokens) != 1:
            raise Skip("more than one token on the line")
        token = tokens[0]
        kind = plain
        if token.startswith(b"*."):
            token, kind = token[2:], subtree
        elif token.startswith(b".") and not token.startswith(b".."):
            kind = subtree
        result.add(kind, entry_name(token, options))

    return parse_in_bulk(data, Format.DOMAINS, DOMAIN_LINE, plain, slow)


# ---------------------------------------------------------------- hosts

_HOSTS_PREAMBLE: Final = frozenset(
    {
        b"localhost",
        b"localhost.localdomain",
        b"local",
        b"broadcasthost",
        b"ip6-localhost",
        b"ip6-loopback",
        b"ip6-localnet",
        b"ip6-mcastprefix",
        b"ip6-allnodes",
        b"ip6-allrouters",
        b"ip6-allhosts",
        b"0.0.0.0",
    }
)


def parse_hosts(data: ListInput, options: ParseOptions) -> ParsedList:
    """``ADDRESS name [name ...]``: every name is blocked, whatever the address.

    The usual ``/etc/hosts`` preamble (``localhost``, ``broadcasthost``,
    ``ip6-*``, ``0.0.0.0 0.0.0.0``) is ignored, never turned into blocks.
    """
    plain = EntryKind(options.plain_scope)

    def slow(line: bytes, result: ParsedList) -> None:
        tokens = strip_comment(line).split()
        if not tokens:
            return
        if not is_ip(tokens[0]):
            raise Skip("first field is not an IP address")
        if len(tokens) < 2:
            raise Skip("address without a name")
        names = []
        for token in tokens[1:]:
            if token in _HOSTS_PREAMBLE:
                raise Skip("hosts-file preamble entry", ignored=True)
            names.append(entry_name(token, options))
        # Accounting is per line: extra names on the line join the same group.
        result.add(plain, names[0])
        result.group(plain).extend(names[1:])

    return parse_in_bulk(data, Format.HOSTS, HOSTS_LINE, plain, slow)


# ---------------------------------------------------------------- adblock

_ADBLOCK_RULE: Final = re.compile(rb"(@@)?\|\|([^\^$/:*|]+)\^?\|?(?:\$(.*))?")


def parse_adblock(data: ListInput, options: ParseOptions) -> ParsedList:
    """AdBlock/AdGuard DNS rules: ``||name^`` blocks, ``@@||name^`` allows (name and
    subdomains). Everything that needs more than a host name is ignored and
    reported: modifiers other than ``$important``, paths, ports, schemes,
    globs, regular expressions, cosmetic rules and bare names without ``||``.
    """
    block = EntryKind(Scope.SUBTREE)
    allow = EntryKind(Scope.SUBTREE, allow=True)

    def slow(line: bytes, result: ParsedList) -> None:
        if line.startswith((b"!", b"[")) or (
            line.startswith(b"#") and not line.startswith((b"##", b"#@#", b"#?#"))
        ):
            return
        if b"##" in line or b"#@#" in line or b"#?#" in line:
            raise Skip("cosmetic rule", ignored=True)
        match = _ADBLOCK_RULE.fullmatch(line)
        if match is None:
            raise Skip(_adblock_unsupported(line), ignored=True)
        exception, host, modifiers = match.groups()
        if modifiers is not None and modifiers != b"important":
            raise Skip("rule modifiers other than $important", ignored=True)
        if host.endswith(b"."):
            raise Skip("'||name.' (any top-level domain) rule", ignored=True)
        if is_ip(host):
            raise Skip("IP address rule", ignored=True)
        result.add(allow if exception else block, entry_name(host, options))

    return parse_in_bulk(data, Format.ADBLOCK, ADBLOCK_LINE, block, slow)


def _adblock_unsupported(line: bytes) -> str:
    if line.startswith(b"/") and line.endswith(b"/"):
        return "regular-expression rule"
    if line.startswith((b"|http", b"|https", b"http")) or b"://" in line:
        return "URL rule with a scheme"
    if b"*" in line:
        return "wildcard inside a rule"
    if b"/" in line:
        return "rule with a path"
    if b":" in line:
        return "rule with a port"
    if line.startswith(b"||") is False and line.startswith(b"@@") is False:
        return "rule without '||' anchor"
    return "unsupported rule syntax"
