"""A list file in any supported format, turned into canonical entries for staging.

The parsers (``filterd.formats``) say what each name means as an
``EntryKind``: a scope (exact, subtree, below), block or allow, an optional
category and reference. The native format has one entry per name and five
kinds, so two things need care:

- *Several rules on one name merge* the way filterd would enforce them: the
  reaches of the blocks (the name itself, the names below it) are united,
  likewise for the allows, and at each reach an allow beats a block
  (docs/list-formats.md). RPZ's usual pair ``x CNAME .`` and ``*.x CNAME .``
  thus becomes one ``block``, and a block with an allow on the name itself
  becomes ``block-below``.
- *What the native format cannot say is reported, never guessed*: an allow
  of the names below a name (RPZ ``*.x CNAME rpz-passthru.``) has no native
  kind and is skipped; when a name mixes that with a block, the block part
  is kept (an authority list errs on enforcing its decisions) and the rest
  reported. Rules for one name with different categories or references
  keep one of them (the same one whatever the order of the file's lines)
  and are counted. RPZ actions (NXDOMAIN, NODATA, DROP) are not carried:
  each operator's configured action for the category applies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from filterd.formats import (
    EntryKind,
    Format,
    ParseOptions,
    Problem,
    detect_format,
    parse,
)
from filterd.model.rules import Scope
from filterd.sync.snapshot import Entry, make_entry

_AT_NAME: Final = 1
_BELOW: Final = 2
_REACH: Final = {Scope.EXACT: _AT_NAME, Scope.BELOW: _BELOW, Scope.SUBTREE: _AT_NAME | _BELOW}
_BLOCK_KIND: Final = {_AT_NAME | _BELOW: "block", _AT_NAME: "block-exact", _BELOW: "block-below"}


@dataclass(slots=True)
class Imported:
    """Entries from one file and the account of every line that did not become one."""

    format: Format
    entries: list[Entry] = field(default_factory=list)
    lines_accepted: int = 0
    lines_invalid: int = 0
    lines_ignored: int = 0
    parse_problems: list[Problem] = field(default_factory=list)
    merged: int = 0
    """Rules folded into another rule's entry for the same name."""
    actions_dropped: int = 0
    """RPZ rules whose own action is not carried by the native format."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Names that could not be imported (or only in part), by reason."""
    examples: list[str] = field(default_factory=list)
    """The first few skipped names, with their reason."""


@dataclass(slots=True)
class _Rules:
    """What the rules of one name say so far: reach bits and the first labels seen."""

    block: int = 0
    allow: int = 0
    block_label: tuple[str, str] = ("-", "-")
    allow_label: tuple[str, str] = ("-", "-")


MAX_EXAMPLES: Final = 20
LABEL_CONFLICT: Final = "another category or reference for the same name: one kept"


def import_list(data: bytes, fmt: Format | None, path: str) -> Imported:
    """The canonical entries of list file ``data`` (format detected when ``fmt`` is None)."""
    chosen = fmt or detect_format(data)
    parsed = parse(data, chosen, ParseOptions(path=path))
    result = Imported(
        chosen,
        lines_accepted=parsed.accepted,
        lines_invalid=parsed.invalid,
        lines_ignored=parsed.ignored,
        parse_problems=parsed.problems,
    )
    rules: dict[bytes, _Rules] = {}
    for kind in sorted(parsed.groups, key=_kind_order):
        label = (kind.category or "-", _reference(kind.ref))
        reach = _REACH[kind.scope]
        for name in parsed.groups[kind]:
            seen = rules.get(name)
            if seen is None:
                seen = rules[name] = _Rules()
            else:
                result.merged += 1
            if kind.action is not None:
                result.actions_dropped += 1
            if kind.allow:
                if seen.allow and seen.allow_label != label:
                    _skip(name, LABEL_CONFLICT, result)
                elif not seen.allow:
                    seen.allow_label = label
                seen.allow |= reach
            else:
                if seen.block and seen.block_label != label:
                    _skip(name, LABEL_CONFLICT, result)
                elif not seen.block:
                    seen.block_label = label
                seen.block |= reach
    for name in sorted(rules):
        entry = _resolve(name, rules[name], result)
        if entry is not None:
            result.entries.append(entry)
    return result


def _kind_order(kind: EntryKind) -> tuple[int, bool, str, str, str]:
    """A total order of kinds (``EntryKind``'s own cannot compare a category
    with None): the groups' order, hence which label wins a conflict, must
    not depend on how the parser happened to fill its dictionary."""
    return (kind.scope, kind.allow, kind.category or "", kind.action or "", kind.ref)


def _resolve(name: bytes, rules: _Rules, result: Imported) -> Entry | None:
    """One native entry for everything said about ``name`` (see the module docstring)."""
    block = rules.block & ~rules.allow
    if rules.allow == _AT_NAME | _BELOW:
        kind, label = "allow", rules.allow_label
    elif rules.allow == _AT_NAME and not block:
        kind, label = "allow-exact", rules.allow_label
    elif block:
        kind, label = _BLOCK_KIND[block], rules.block_label
        if rules.allow:
            _skip(name, "allow rule dropped: no native kind alongside the block", result)
    else:
        _skip(name, "allow of the names below a name has no native kind", result)
        return None
    return make_entry(name.decode(), kind, label[0], label[1])


def _reference(ref: str) -> str:
    """A reference in canonical form: runs of white space as one space. (The
    parser already refused lines whose reference is over 200 bytes.)"""
    return " ".join(ref.split()) or "-"


def _skip(name: bytes, reason: str, result: Imported) -> None:
    result.skipped[reason] += 1
    if len(result.examples) < MAX_EXAMPLES:
        result.examples.append(f"{name.decode()}: {reason}")
