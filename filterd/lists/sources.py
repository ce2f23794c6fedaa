"""The sources of rules in a compiled index, and opening an index to serve.

Kept apart from the compiler so that a worker, which only opens indexes,
never imports the compiler's dependencies (NumPy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from filterd.matching.index import CompiledIndex
from filterd.matching.matcher import Matcher


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the runtime needs to know about one source of rules."""

    name: str
    version: str
    mandatory: bool
    ede: int
    category: str
    action: str | None
    path: str
    format: str
    entries: int = 0
    accepted: int = 0
    invalid: int = 0
    ignored: int = 0
    names: int = 0
    problems: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    sha256: str = ""
    """SHA-256 of the list file as compiled ("" for built-in rules)."""


def sources_of(index: CompiledIndex) -> tuple[SourceInfo, ...]:
    return tuple(SourceInfo(**raw) for raw in index.meta["sources"])


def open_matcher(path: Path) -> tuple[Matcher, tuple[SourceInfo, ...]]:
    """Map a compiled index and wrap it in a ``Matcher`` with its sources."""
    index = CompiledIndex(path)
    sources = sources_of(index)
    mandatory = frozenset(i for i, source in enumerate(sources) if source.mandatory)
    return Matcher(index, mandatory), sources
