"""What one synced list's state is, as the metrics, the log and ``/readyz`` read it.

A plain value kept by ``SyncClient`` and read by the supervisor and
``filterd.metrics``, which so need not import the client's HTTP machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ListStatus:
    """What the metrics and the log say about one synced list: every field
    but the counters and ``authority_serial`` describes the enforced serial."""

    list_id: str
    serial: int = 0
    sha256: str = ""
    authority_serial: int = 0
    entries: int = 0
    published_at: float = 0.0
    applied_at: float = 0.0
    expires_at: float = 0.0
    last_success: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0})
    notifies: int = 0

    @property
    def lag(self) -> float:
        """Seconds from publication to enforcement of the serial in force."""
        return self.applied_at - self.published_at if self.applied_at else 0.0
