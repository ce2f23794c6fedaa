"""The compiled index and matcher agree with a naive reference of the documented rules.

The reference below is written straight from the precedence in
docs/list-formats.md (two tiers, most specific level wins, allow wins a tie,
earlier list wins among blocks, a mandatory block is final) with lists and
loops, no hashing, no early exits. Names come from a tiny alphabet so that
generated rules and queries overlap often.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.matching.build import IndexBuilder
from filterd.matching.index import CompiledIndex
from filterd.matching.matcher import Matcher
from filterd.model.rules import Rule, Scope

labels = st.sampled_from(["a", "b", "c", "xn--d1a", "_e"])
names = st.lists(labels, min_size=1, max_size=4).map(lambda parts: ".".join(parts).encode())
rules = st.builds(
    Rule,
    source=st.integers(0, 3),
    scope=st.sampled_from(list(Scope)),
    allow=st.booleans(),
    category=st.sampled_from(["adult", "gambling"]),
)
entries = st.lists(st.tuples(names, rules), max_size=25)


def reference(
    entries: list[tuple[bytes, Rule]], mandatory: frozenset[int], name: bytes
) -> tuple[bool, Rule | None, int]:
    """(blocked, deciding rule, offset of the deciding entry in ``name``)."""
    parts = name.split(b".")
    levels = [
        (b".".join(parts[i:]), len(b".".join(parts[:i])) + (1 if i else 0))
        for i in range(len(parts))
    ]

    def tier(in_tier: bool) -> tuple[Rule, int] | None:
        for depth, (suffix, offset) in enumerate(levels):
            here = sorted(
                rule
                for entry, rule in entries
                if entry == suffix
                and (rule.source in mandatory) == in_tier
                and (
                    rule.scope is Scope.SUBTREE
                    or (rule.scope is Scope.EXACT and depth == 0)
                    or (rule.scope is Scope.BELOW and depth > 0)
                )
            )
            if here:
                allows = [rule for rule in here if rule.allow]
                return (allows[0] if allows else here[0]), offset
        return None

    first = tier(True)
    if first is not None and not first[0].allow:
        return True, first[0], first[1]
    second = tier(False)
    if second is not None:
        return not second[0].allow, second[0], second[1]
    if first is not None:
        return False, first[0], first[1]
    return False, None, 0


def build(entries: list[tuple[bytes, Rule]], directory: Path) -> CompiledIndex:
    builder = IndexBuilder()
    for name, rule in entries:
        builder.add([name], rule)
    path = directory / "index.fidx"
    builder.write(path, {})
    return CompiledIndex(path)


@settings(max_examples=300, deadline=None)
@given(
    entries=entries,
    mandatory=st.frozensets(st.integers(0, 3)),
    queries=st.lists(names, max_size=10),
)
def test_matcher_agrees_with_reference(
    entries: list[tuple[bytes, Rule]], mandatory: frozenset[int], queries: list[bytes]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        index = build(entries, Path(scratch))
        try:
            matcher = Matcher(index, mandatory)
            for query in queries + [name for name, _ in entries]:
                decision = matcher.decide(query)
                blocked, rule, offset = reference(entries, mandatory, query)
                assert decision.blocked == blocked, query
                assert decision.rule == rule, query
                if rule is not None:
                    assert decision.offset == offset
                    assert query[decision.offset :] == decision.entry
        finally:
            index.close()


@settings(max_examples=100, deadline=None)
@given(entries=entries)
def test_every_stored_name_is_found_and_nothing_else(entries: list[tuple[bytes, Rule]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        index = build(entries, Path(scratch))
        try:
            stored = {name for name, _ in entries}
            assert index.count == len(stored)
            for name in stored:
                entry = index.find(name)
                assert entry >= 0
                assert index.name_at(entry) == name
                expected = sorted({rule for n, rule in entries if n == name})
                assert list(index.rules_at(entry)) == expected
            assert index.find(b"not-there.example") == -1
        finally:
            index.close()
