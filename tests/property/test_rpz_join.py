"""Joining adjacent RPZ pairs into one subtree entry changes no decision.

The compiler parses policy zones with ``join_rpz_pairs``: ``x CNAME t`` next
to ``*.x CNAME t`` becomes one entry for ``x`` and below instead of two. For
generated zones (pairs in either order, lone records, repeated names, all four
targets) every decision of the joined index equals that of the index built
from the records apart, except for the deciding rule's scope.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.formats import Format, ParseOptions, parse
from filterd.matching.build import IndexBuilder
from filterd.matching.index import CompiledIndex
from filterd.matching.matcher import Decision, Matcher
from filterd.model.rules import Rule

labels = st.sampled_from(["a", "b", "c"])
names = st.lists(labels, min_size=2, max_size=3).map(".".join)
targets = st.sampled_from([".", "*.", "rpz-passthru.", "rpz-drop."])
shapes = st.sampled_from(["exact", "below", "pair", "pair-below-first"])
records = st.lists(st.tuples(names, targets, shapes), max_size=15)


def zone(items: list[tuple[str, str, str]]) -> bytes:
    lines = []
    for name, target, shape in items:
        exact, below = f"{name} CNAME {target}", f"*.{name} CNAME {target}"
        lines += {
            "exact": [exact],
            "below": [below],
            "pair": [exact, below],
            "pair-below-first": [below, exact],
        }[shape]
    return ("\n".join(lines) + "\n").encode()


def index_of(data: bytes, join: bool, directory: Path) -> CompiledIndex:
    parsed = parse(data, Format.RPZ, ParseOptions("zone.rpz", join_rpz_pairs=join))
    builder = IndexBuilder()
    for kind, group in parsed.groups.items():
        builder.add(group, Rule(0, kind.scope, kind.allow, kind.category or "", kind.action))
    path = directory / f"{join}.fidx"
    builder.write(path, {})
    return CompiledIndex(path)


def outcome(decision: Decision) -> tuple[object, ...]:
    rule = decision.rule
    what = None if rule is None else (rule.allow, rule.action, rule.category)
    return decision.blocked, decision.entry, decision.offset, what


@settings(max_examples=300, deadline=None)
@given(items=records)
def test_joined_pairs_decide_like_the_records_apart(items: list[tuple[str, str, str]]) -> None:
    data = zone(items)
    queries = {f"{prefix}{name}".encode() for name, _, _ in items for prefix in ("", "x.", "y.x.")}
    with tempfile.TemporaryDirectory() as scratch:
        apart = index_of(data, False, Path(scratch))
        joined = index_of(data, True, Path(scratch))
        try:
            for query in sorted(queries | {b"a.b", b"c.a.b"}):
                expected = outcome(Matcher(apart, frozenset()).decide(query))
                assert outcome(Matcher(joined, frozenset()).decide(query)) == expected, query
        finally:
            apart.close()
            joined.close()
