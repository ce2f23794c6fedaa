"""Hot-path tallies: outcome counters per transport and qtype, latency histograms.

Everything here is a plain integer increment or a ``bisect`` into a short
tuple, so the query path pays a few tens of nanoseconds for its metrics;
the supervisor sums the workers' tallies and renders Prometheus families
only when /metrics is scraped (filterd/metrics.py).

The qtype label is bounded: the types a resolver of subscribers actually
sees are named, every other type counts as ``other``, and a packet refused
or rejected before its question was read counts as ``none``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any, Final

from filterd.histogram import Histogram
from filterd.stats import Buckets, Candidate, LatencyKey, QueryKey
from filterd.wire.names import text_to_wire, wire_to_text

QTYPE_NAMES: Final = (
    "none", "other", "A", "AAAA", "HTTPS", "SVCB", "MX", "TXT",
    "CNAME", "NS", "PTR", "SRV", "SOA", "ANY",
)  # fmt: skip
NO_QTYPE: Final = 0
OTHER_QTYPE: Final = 1
QTYPE_SLOT: Final = {
    1: 2, 28: 3, 65: 4, 64: 5, 15: 6, 16: 7, 5: 8, 2: 9, 12: 10, 33: 11, 6: 12, 255: 13,
}  # fmt: skip


@dataclass(slots=True)
class Outcomes:
    """How queries of one transport and qtype ended; plain ints (hot-path increments)."""

    cached: int = 0
    blocked: int = 0
    forwarded: int = 0
    servfail: int = 0
    refused: int = 0
    formerr: int = 0
    notimp: int = 0
    badvers: int = 0
    dropped: int = 0
    truncated: int = 0
    stale: int = 0
    minimal: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _by_qtype() -> list[Outcomes]:
    return [Outcomes() for _ in QTYPE_NAMES]


@dataclass(slots=True)
class Counters:
    """One worker's tallies: ``udp[slot]`` / ``tcp[slot]`` by ``QTYPE_SLOT``, and
    answer latency by transport and path (``fast``: answered inside the read
    callback; ``upstream``: answered after an upstream exchange)."""

    udp: list[Outcomes] = field(default_factory=_by_qtype)
    tcp: list[Outcomes] = field(default_factory=_by_qtype)
    udp_fast: Histogram = field(default_factory=Histogram)
    udp_upstream: Histogram = field(default_factory=Histogram)
    tcp_fast: Histogram = field(default_factory=Histogram)
    tcp_upstream: Histogram = field(default_factory=Histogram)
    rate_dropped: int = 0
    """UDP answers the response rate limit dropped, and sent truncated instead."""
    rate_slipped: int = 0

    def queries(self) -> dict[QueryKey, int]:
        """Every outcome of each (protocol, qtype) seen at least once, for the
        supervisor (qtypes never seen are left out)."""
        counts: dict[QueryKey, int] = {}
        for protocol, table in (("udp", self.udp), ("tcp", self.tcp)):
            for name, outcomes in zip(QTYPE_NAMES, table, strict=True):
                row = outcomes.as_dict()
                if any(row.values()):
                    counts.update({(protocol, name, outcome): n for outcome, n in row.items()})
        return counts

    def latency(self) -> dict[LatencyKey, Buckets]:
        return {
            ("udp", "fast"): self.udp_fast.snapshot(),
            ("udp", "upstream"): self.udp_upstream.snapshot(),
            ("tcp", "fast"): self.tcp_fast.snapshot(),
            ("tcp", "upstream"): self.tcp_upstream.snapshot(),
        }


class BlockedNames:
    """Blocked answers per list entry and category: the optional top-N statistics.

    Counted by the *list entry* that matched (``casino.example`` for a query
    of ``www.casino.example``), never by the queried name and never with a
    client address: the names are already on a published list, so the
    statistics say how often a listed site was asked for, not who asked for
    what. On the hot path a count is one slice and one dict update; names
    stay in wire form until the supervisor decodes them (``blocked_rows``).
    Memory is bounded: past ``10 * top`` distinct names (at least 1,000) the
    least counted half is dropped, so the counts of rarely blocked names are
    approximate (a name dropped and blocked again starts from zero); the top
    of the table is what survives.
    """

    __slots__ = ("_limit", "_text", "_wire", "top")

    def __init__(self, top: int) -> None:
        self.top = top
        self._limit = max(1000, 10 * top)
        self._wire: dict[tuple[bytes, str], int] = {}
        self._text: dict[tuple[bytes, str], int] = {}

    def count_wire(self, name: bytes, category: str) -> None:
        """One block of the lower-cased wire name ``name`` (the matched entry)."""
        self._add(self._wire, (name, category))

    def count_text(self, name: bytes, category: str) -> None:
        """One block decided on a CNAME target (canonical text form)."""
        self._add(self._text, (name, category))

    def _add(self, counts: dict[tuple[bytes, str], int], key: tuple[bytes, str]) -> None:
        counts[key] = counts.get(key, 0) + 1
        if len(counts) > self._limit:
            kept = heapq.nlargest(self._limit // 2, counts.items(), key=lambda item: item[1])
            counts.clear()
            counts.update(kept)

    def candidates(self) -> list[Candidate]:
        """This process's ``top`` most blocked (wire name, category) pairs,
        undecoded: the supervisor decodes and merges them (``blocked_rows``),
        so a scrape costs the worker one ``nlargest`` and no conversion of
        the wire names. Counts kept by CNAME target (canonical text, rare)
        are added to their wire form first, so that a name's two counts
        compete as one."""
        merged = self._wire
        if self._text:
            merged = dict(merged)
            for (name, category), count in self._text.items():
                key = (text_to_wire(name), category)
                merged[key] = merged.get(key, 0) + count
        top = heapq.nlargest(self.top, merged.items(), key=itemgetter(1))
        return [(name, category, count) for (name, category), count in top]


def blocked_rows(candidates: Iterable[Candidate]) -> list[dict[str, Any]]:
    """Candidates (of one or more workers) as rows ``{name, category,
    count}``, one per (name, category), most blocked first."""
    merged: dict[tuple[str, str], int] = {}
    for name, category, count in candidates:
        text = wire_to_text(name)
        if text is not None:
            key = (text.decode("ascii", "replace"), category)
            merged[key] = merged.get(key, 0) + count
    ordered = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    return [{"name": n, "category": c, "count": count} for (n, c), count in ordered]
