"""Small authority deltas applied without recompiling the whole index.

Recompiling a million-name index takes seconds; an authority's typical
update changes a few hundred names and should be enforced in well under a
second. So a delta becomes an *overlay*: for each name it changes, the name's
complete new rules (every list's, not only the synced one's, since the index
merges lists per name), or no rules at all. Workers consult the overlay
before the index (``Matcher.rules_of``). The overlay grows with each delta
until ``OVERLAY_LIMIT`` names; the next change then takes a full compile,
which starts from the persisted snapshots and leaves no overlay.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from filterd.config import ListConfig
from filterd.formats import NATIVE_KINDS
from filterd.matching.matcher import Matcher, Overlaid
from filterd.model.rules import Rule
from filterd.model.sources import SourceInfo
from filterd.sync.snapshot import Delta

OVERLAY_LIMIT: Final = 100_000


def extend_overlay(
    current: Matcher, source: int, lst: ListConfig, delta: Delta
) -> dict[bytes, Overlaid]:
    """The overlay after ``delta`` to list ``lst`` (source number ``source``),
    given the rules ``current`` serves now (its index and overlay)."""
    overlay = dict(current.overlay)
    adds = {entry.name: entry for entry in delta.adds}
    for name in (*delta.removes, *adds):
        stored = current.rules_of(name)
        rules, ref = stored if stored is not None else ((), "")
        kept = tuple(rule for rule in rules if rule.source != source)
        entry = adds.get(name)
        if entry is not None:
            scope, allow = NATIVE_KINDS[entry.kind]
            category = lst.category if entry.category == b"-" else entry.category.decode()
            rule = Rule(source, scope, allow or lst.kind == "allow", category, None)
            kept = tuple(sorted((*kept, rule)))
            ref = "" if entry.reference == b"-" else entry.reference.decode("utf-8", "replace")
        overlay[name] = (kept, ref)
    return overlay


def with_version(
    sources: tuple[SourceInfo, ...], source: int, version: str, entries: int, sha256: str
) -> tuple[SourceInfo, ...]:
    """Sources with list ``source`` now at ``version`` (EDE text, metrics)."""
    changed = replace(
        sources[source], version=version, entries=entries, accepted=entries, sha256=sha256
    )
    return (*sources[:source], changed, *sources[source + 1 :])
