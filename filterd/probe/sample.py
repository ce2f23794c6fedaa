"""Which names a probe asks about: block rules from a list, sampled, turned into names.

Pure code. A list is read with filterd's own parsers (``detect_format`` and
``parse``), so the probe sees exactly the rules filterd would enforce from
the same file; a gzip file (an authority's snapshot, ``S.gz``) is inflated
first. Only block rules are sampled; allow and RPZ passthru rules are kept
aside to tell which sampled names the list itself exempts.

The sample is drawn with ``random.Random(seed)`` over the block rules in a
fixed order (groups sorted by meaning, names in file order), without
replacement, so the same file, options and seed always give the same names.
A drawn rule is passed over, and the next one drawn, when:

- an allow rule of the same list covers its name at the same or a more
  specific level (at equal level an allow beats a block, as in
  docs/list-formats.md §7), so the resolver is right not to block it;
- it would probe a name already in the sample (a name listed twice);
- a made-up label would not fit below the name (253 characters).

Names probed for a rule (docs/probe.md): the rule's own name for an exact or
subtree rule; for a rule that reaches only the names below (RPZ
``*.example.com``, native ``block-below``) a made-up name
``probe-<8 hex digits>.example.com``; with ``subdomains`` a subtree rule gets
such a made-up name as well.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from filterd.formats import (
    NATIVE_HEADER,
    EntryKind,
    Format,
    ParsedList,
    ParseOptions,
    parse,
)
from filterd.model.rules import Action, Scope
from filterd.wire.names import MAX_NAME_LENGTH

GZIP_MAGIC: Final = b"\x1f\x8b"
MAX_LIST_BYTES: Final = 1 << 30
"""Largest list read, inflated or not (the compiler's limit too)."""
FULL_SHUFFLE_LIMIT: Final = 100_000
"""Up to this many rules the draw order is one shuffled range; above it,
indices are drawn one at a time (a sample is usually far smaller than the list)."""
PROBE_LABEL_PREFIX: Final = "probe-"


class ListInputError(ValueError):
    """The list cannot be probed (not gzip it claims to be, or no block rule)."""


@dataclass(frozen=True, slots=True)
class ListRule:
    """One block rule of the list: what a failure report names."""

    name: bytes
    scope: Scope
    action: Action | None = None

    @property
    def kind(self) -> str:
        """The rule in filterd's native vocabulary (docs/list-formats.md)."""
        return {Scope.EXACT: "block-exact", Scope.SUBTREE: "block", Scope.BELOW: "block-below"}[
            self.scope
        ]

    def describe(self) -> str:
        name = self.name.decode()
        reach = {
            Scope.EXACT: name,
            Scope.SUBTREE: f"{name} and its subdomains",
            Scope.BELOW: f"subdomains of {name}",
        }[self.scope]
        return f"block {reach}"


@dataclass(frozen=True, slots=True)
class Target:
    """One name to ask the resolver about, and why."""

    qname: str
    rule: ListRule | None = None
    """The list rule that must block it; ``None`` for a control."""
    made_up: bool = False
    """A name invented below the rule's name: it very likely does not exist, so a
    resolver that does not filter answers NXDOMAIN as well (docs/probe.md)."""


@dataclass(slots=True)
class ListRules:
    """The block rules of one list, in sampling order, and its allow rules."""

    format: Format
    groups: list[tuple[ListRule, list[bytes]]]
    """(rule template, names): the rule for each name is the template with that name."""
    allows: dict[bytes, set[Scope]] = field(default_factory=dict)
    invalid: int = 0
    ignored: int = 0

    @property
    def total(self) -> int:
        return sum(len(names) for _, names in self.groups)

    def rule_at(self, index: int) -> ListRule:
        for template, names in self.groups:
            if index < len(names):
                return ListRule(names[index], template.scope, template.action)
            index -= len(names)
        raise IndexError(index)


def inflate(raw: bytes, path: str, limit: int = MAX_LIST_BYTES) -> bytes:
    """The list text of ``raw``: inflated if it is gzip (an authority's snapshot),
    and never more than ``limit`` bytes (a small file may inflate enormously)."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise ListInputError(f"{path}: not a valid gzip file ({exc})") from None
    if len(data) > limit:
        raise ListInputError(f"{path}: inflates to more than {limit} bytes")
    return data


def _group_order(kind: EntryKind) -> tuple[int, str, str, str]:
    # EntryKind's own ordering compares ``None`` with ``str``: sort on plain values.
    return (int(kind.scope), kind.action or "", kind.category or "", kind.ref)


def rules_of(parsed: ParsedList) -> ListRules:
    """Split a parsed list into block rules (sampling order) and allow rules.

    Blocks are grouped by what the probe needs (scope and RPZ action), not
    by category or reference: a native list whose every entry has its own
    reference would otherwise make one group per entry."""
    blocks: dict[tuple[Scope, Action | None], list[bytes]] = {}
    allows: dict[bytes, set[Scope]] = {}
    for kind in sorted(parsed.groups, key=_group_order):
        names = parsed.groups[kind]
        if kind.allow:
            for name in names:
                allows.setdefault(name, set()).add(kind.scope)
        elif names:
            blocks.setdefault((kind.scope, kind.action), []).extend(names)
    groups = [(ListRule(b"", scope, action), names) for (scope, action), names in blocks.items()]
    return ListRules(parsed.format, groups, allows, parsed.invalid, parsed.ignored)


def _allow_reaches(scopes: set[Scope], at_name: bool) -> bool:
    """Does an allow with one of ``scopes`` apply at this level (cf. ``Rule.reaches``)?"""
    return Scope.SUBTREE in scopes or (Scope.EXACT if at_name else Scope.BELOW) in scopes


def exempted(qname: bytes, rule: ListRule, allows: dict[bytes, set[Scope]]) -> bool:
    """Is ``qname`` allowed by the list at a level at least as specific as ``rule``?"""
    if not allows:
        return False
    level = qname
    while True:
        scopes = allows.get(level)
        if scopes is not None and _allow_reaches(scopes, level == qname):
            return True
        if level == rule.name or b"." not in level:
            return False
        level = level.partition(b".")[2]


def made_up_name(name: bytes, rng: random.Random) -> str | None:
    """``probe-<8 hex digits>.name``, or ``None`` if that is longer than a name may be."""
    label = f"{PROBE_LABEL_PREFIX}{rng.getrandbits(32):08x}"
    if len(label) + 1 + len(name) > MAX_NAME_LENGTH:
        return None
    return f"{label}.{name.decode()}"


def targets_for(rule: ListRule, rng: random.Random, *, subdomains: bool) -> list[Target] | None:
    """The names that probe ``rule``; ``None`` if a needed made-up name does not fit."""
    if rule.scope is Scope.BELOW:
        below = made_up_name(rule.name, rng)
        return None if below is None else [Target(below, rule, made_up=True)]
    targets = [Target(rule.name.decode(), rule)]
    if subdomains and rule.scope is Scope.SUBTREE:
        below = made_up_name(rule.name, rng)
        if below is not None:
            targets.append(Target(below, rule, made_up=True))
    return targets


def _draw_order(total: int, rng: random.Random) -> Iterator[int]:
    """Every index below ``total`` once, in random order, produced lazily."""
    if total <= FULL_SHUFFLE_LIMIT:
        yield from rng.sample(range(total), total)
        return
    seen: set[int] = set()
    while len(seen) < total:
        index = rng.randrange(total)
        if index not in seen:
            seen.add(index)
            yield index


@dataclass(frozen=True, slots=True)
class Sample:
    """The drawn rules and the names that probe them."""

    rules: tuple[ListRule, ...]
    targets: tuple[Target, ...]
    exempted: int
    """Drawn rules passed over because an allow rule of the list covers them."""


def draw(rules: ListRules, size: int, seed: int, *, subdomains: bool = False) -> Sample:
    """Up to ``size`` distinct block rules of ``rules`` and their target names."""
    rng = random.Random(seed)
    chosen: list[ListRule] = []
    targets: list[Target] = []
    seen: set[tuple[bytes, bool]] = set()
    passed_over = 0
    for index in _draw_order(rules.total, rng):
        if len(chosen) >= size:
            break
        rule = rules.rule_at(index)
        key = (rule.name, rule.scope is Scope.BELOW)
        if key in seen:
            continue
        names = targets_for(rule, rng, subdomains=subdomains)
        if names is None:
            continue
        if any(exempted(t.qname.encode(), rule, rules.allows) for t in names):
            passed_over += 1
            continue
        seen.add(key)
        chosen.append(rule)
        targets.extend(names)
    return Sample(tuple(chosen), tuple(targets), passed_over)


# ---------------------------------------------------------------- list lines


@dataclass(frozen=True, slots=True)
class ListLine:
    """Where a rule's name is declared in the list file (1-based line number)."""

    number: int
    text: str


_TOKEN: Final = re.compile(rb"[a-z0-9_*.-]+")


def locate(
    data: bytes, fmt: Format, options: ParseOptions, rules: set[ListRule]
) -> dict[ListRule, ListLine]:
    """The first line of ``data`` that declares each of ``rules``.

    Only called for the few rules worth reporting (failures and errors), so
    one pass over the file suffices: a line is a candidate when one of its
    tokens is a rule's name (``*.``, ``.``, trailing ``.`` and adblock anchors
    aside), and is confirmed by parsing that line alone with the list's
    parser and finding the rule there (same name, scope and action). RPZ
    owners written as absolute names (``name.zone.``) and records continued
    over several lines are not found; their line is reported as unknown.
    """
    wanted: dict[bytes, set[ListRule]] = {}
    for rule in rules:
        wanted.setdefault(rule.name, set()).add(rule)
    text = data.lower()
    found: dict[ListRule, ListLine] = {}
    line_number, counted_to = 1, 0
    for match in _TOKEN.finditer(text):
        token = match.group().lstrip(b"*.").rstrip(b".")
        if token not in wanted:
            continue
        start = text.rfind(b"\n", 0, match.start()) + 1
        end = text.find(b"\n", match.end())
        raw = data[start : len(data) if end < 0 else end].rstrip(b"\r")
        declared = _declared_blocks(raw, token, fmt, options) & wanted[token]
        if not declared:
            continue
        line_number += text.count(b"\n", counted_to, start)
        counted_to = start
        for rule in declared:
            found[rule] = ListLine(line_number, raw.decode("utf-8", "replace").strip())
        wanted[token] -= declared
        if not wanted[token]:
            del wanted[token]
            if not wanted:
                break
    return found


def _declared_blocks(line: bytes, name: bytes, fmt: Format, options: ParseOptions) -> set[ListRule]:
    data = NATIVE_HEADER + b"\n" + line if fmt is Format.NATIVE else line
    parsed = parse(data, fmt, options)
    return {
        ListRule(name, kind.scope, kind.action)
        for kind, names in parsed.groups.items()
        if not kind.allow and name in names
    }
