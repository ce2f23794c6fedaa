"""One source of rules as compiled into an index: which list, which version, how it parsed.

Shared by the compiler (which writes it into the index's metadata), the
workers (which label blocks with it), metrics, the audit trail and the sync
report, so it sits at the bottom, below every room.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """SHA-256 of the list file as compiled (hex); "" for built-in rules."""
    opt_in: bool = False
    """The list blocks only for clients whose profile applies its category
    (docs/profiles.md); otherwise for every client."""
    https_only: bool = False
    """Its sites are served over HTTPS only: a profile's ``https_action``
    replaces a sinkhole for its blocks (a block page would be a certificate error)."""
