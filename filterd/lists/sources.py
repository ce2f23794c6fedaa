"""Opening a compiled index to serve, with the sources of its rules.

Kept apart from the compiler so that a worker, which only opens indexes,
never imports the compiler's dependencies (NumPy).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from filterd.matching.index import CompiledIndex
from filterd.matching.matcher import Matcher, Overlaid
from filterd.model.sources import SourceInfo


def sources_of(index: CompiledIndex) -> tuple[SourceInfo, ...]:
    return tuple(SourceInfo(**raw) for raw in index.meta["sources"])


def matcher_for(
    index: CompiledIndex,
    sources: tuple[SourceInfo, ...],
    overlay: Mapping[bytes, Overlaid] | None = None,
) -> Matcher:
    """A ``Matcher`` over ``index`` whose mandatory and opt-in sources are
    those ``sources`` say, with the index's opt-in categories as bits."""
    mandatory = frozenset(i for i, source in enumerate(sources) if source.mandatory)
    opt_in = frozenset(i for i, source in enumerate(sources) if source.opt_in)
    categories = index.meta.get("categories", ())
    return Matcher(index, mandatory, overlay, opt_in, categories)


def open_matcher(path: Path) -> tuple[Matcher, tuple[SourceInfo, ...]]:
    """Map a compiled index and wrap it in a ``Matcher`` with its sources."""
    index = CompiledIndex(path)
    sources = sources_of(index)
    return matcher_for(index, sources), sources
