"""Opening a compiled index to serve, with the sources of its rules.

Kept apart from the compiler so that a worker, which only opens indexes,
never imports the compiler's dependencies (NumPy).
"""

from __future__ import annotations

from pathlib import Path

from filterd.matching.index import CompiledIndex
from filterd.matching.matcher import Matcher
from filterd.model.sources import SourceInfo


def sources_of(index: CompiledIndex) -> tuple[SourceInfo, ...]:
    return tuple(SourceInfo(**raw) for raw in index.meta["sources"])


def open_matcher(path: Path) -> tuple[Matcher, tuple[SourceInfo, ...]]:
    """Map a compiled index and wrap it in a ``Matcher`` with its sources."""
    index = CompiledIndex(path)
    sources = sources_of(index)
    mandatory = frozenset(i for i, source in enumerate(sources) if source.mandatory)
    return Matcher(index, mandatory), sources
