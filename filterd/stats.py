"""Worker statistics: the typed report a worker sends its supervisor, and their sum.

Contract: a worker answers each ``StatsRequest`` (filterd/control.py) with
one ``WorkerStats``, read from the plain-integer tallies of its query path
and cumulative since the process started. The supervisor sums the reports
of its workers, and the last report of every worker that died (so that no
counter goes backwards when a worker is replaced), with
``WorkerStats.merge``; /metrics (filterd/metrics.py), ``/stats/blocked``
and the audit trail's ``stats`` records read the typed fields of that sum.

Why a module of its own, at the bottom: the report is written on the query
path, crosses the process boundary (pickled on the control channel) and is
read by metrics and audit; here each of them can import it without
importing another. It does no I/O and imports no room.

How two reports add: counters and per-process amounts (cache entries,
exchanges in flight, open connections) add; histograms add bucket by
bucket; an upstream is up only if every report finds it up; blocked-name
candidates add by (wire name, category).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

QueryKey = tuple[str, str, str]
"""(protocol, qtype, outcome): the labels of ``filterd_queries_total``."""
LatencyKey = tuple[str, str]
"""(protocol, path): the labels of ``filterd_query_duration_seconds``."""
BlockKey = tuple[str, str, str]
"""(list, category, action): the labels of ``filterd_blocked_total``."""
Candidate = tuple[bytes, str, int]
"""(wire name, category, count): one entry of a worker's most blocked names,
undecoded (``filterd.pipeline.tally.blocked_rows`` decodes them)."""

# Seconds. A fast-path answer takes tens of microseconds, a cache miss the
# upstream's round trip (a millisecond on a LAN, up to the deadline).
LATENCY_BOUNDS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
"""The upper bounds of the latency buckets (``filterd.histogram.Histogram``).
Typed as a tuple of any length: compiled code holds a fixed-length tuple
unboxed and would build a new one (15 floats) for every ``bisect``."""


@dataclass(frozen=True, slots=True)
class Buckets:
    """A latency histogram read at one moment: per-bucket counts
    (non-cumulative, one more than ``LATENCY_BOUNDS`` for +Inf) and the sum of
    the observations. Snapshots of several processes add bucket by bucket."""

    counts: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS) + 1)
    total: float = 0.0

    def __add__(self, other: Buckets) -> Buckets:
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Buckets(counts, self.total + other.total)


_Counts = TypeVar("_Counts", bound="DataclassInstance")
_Key = TypeVar("_Key")
_Value = TypeVar("_Value", int, Buckets, "UpstreamStats", "GroupStats")


def _add_fields(a: _Counts, b: _Counts) -> _Counts:
    """``a`` and ``b`` (records of numbers) added field by field."""
    return replace(a, **{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(a)})


def _add_mappings(a: Mapping[_Key, _Value], b: Mapping[_Key, _Value]) -> dict[_Key, _Value]:
    """Values of the same key added; a key of one side only kept as it is."""
    total = dict(a)
    for key, value in b.items():
        mine = total.get(key)
        total[key] = value if mine is None else mine + value
    return total


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    expired: int = 0
    evictions: int = 0


@dataclass(frozen=True, slots=True)
class ForwardStats:
    inflight: int = 0
    coalesced: int = 0
    overloaded: int = 0
    client_overloaded: int = 0


@dataclass(frozen=True, slots=True)
class RateLimitStats:
    dropped: int = 0
    slipped: int = 0


@dataclass(frozen=True, slots=True)
class UdpStats:
    recv_errors: int = 0
    send_errors: int = 0


@dataclass(frozen=True, slots=True)
class TcpStats:
    connections: int = 0
    accepted: int = 0
    rejected: int = 0
    client_rejected: int = 0
    denied: int = 0
    idle_closed: int = 0
    slow_closed: int = 0


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One client group's counters (docs/profiles.md)."""

    queries: int = 0
    blocked: int = 0
    rewritten: int = 0
    """Safe-search rewrites."""

    def __add__(self, other: GroupStats) -> GroupStats:
        return _add_fields(self, other)


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    up: bool = True
    queries: int = 0
    answers: int = 0
    rtt: Buckets = field(default_factory=Buckets)
    errors: Mapping[str, int] = field(default_factory=dict)
    """Failed attempts by reason."""

    def __add__(self, other: UpstreamStats) -> UpstreamStats:
        return UpstreamStats(
            self.up and other.up,
            self.queries + other.queries,
            self.answers + other.answers,
            self.rtt + other.rtt,
            _add_mappings(self.errors, other.errors),
        )


def _add_candidates(a: Iterable[Candidate], b: Iterable[Candidate]) -> tuple[Candidate, ...]:
    counts: dict[tuple[bytes, str], int] = {}
    for name, category, count in (*a, *b):
        counts[name, category] = counts.get((name, category), 0) + count
    return tuple((name, category, count) for (name, category), count in counts.items())


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker's counters, or the sum of several (``merge``)."""

    queries: Mapping[QueryKey, int] = field(default_factory=dict)
    """Every outcome of each (protocol, qtype) seen at least once; qtypes never
    seen are left out."""
    latency: Mapping[LatencyKey, Buckets] = field(default_factory=dict)
    blocked: Mapping[BlockKey, int] = field(default_factory=dict)
    blocked_top: tuple[Candidate, ...] = ()
    """The most blocked list entries (``statistics.blocked_names``), empty if not kept."""
    cache: CacheStats = field(default_factory=CacheStats)
    forward: ForwardStats = field(default_factory=ForwardStats)
    rate_limit: RateLimitStats = field(default_factory=RateLimitStats)
    upstreams: Mapping[str, UpstreamStats] = field(default_factory=dict)
    """By upstream name (its configured address)."""
    udp: UdpStats = field(default_factory=UdpStats)
    tcp: TcpStats = field(default_factory=TcpStats)
    groups: Mapping[str, GroupStats] = field(default_factory=dict)
    """By client group name (from the configuration)."""
    gc_pauses: Mapping[str, Buckets] = field(default_factory=dict)
    """Pauses of the cyclic garbage collector, by generation ("0", "1", "2")."""

    def __add__(self, other: WorkerStats) -> WorkerStats:
        return WorkerStats(
            queries=_add_mappings(self.queries, other.queries),
            latency=_add_mappings(self.latency, other.latency),
            blocked=_add_mappings(self.blocked, other.blocked),
            blocked_top=_add_candidates(self.blocked_top, other.blocked_top),
            cache=_add_fields(self.cache, other.cache),
            forward=_add_fields(self.forward, other.forward),
            rate_limit=_add_fields(self.rate_limit, other.rate_limit),
            upstreams=_add_mappings(self.upstreams, other.upstreams),
            udp=_add_fields(self.udp, other.udp),
            tcp=_add_fields(self.tcp, other.tcp),
            groups=_add_mappings(self.groups, other.groups),
            gc_pauses=_add_mappings(self.gc_pauses, other.gc_pauses),
        )

    @classmethod
    def merge(cls, reports: Iterable[WorkerStats]) -> WorkerStats:
        """The sum of ``reports`` (an empty one for none)."""
        add: Callable[[WorkerStats, WorkerStats], WorkerStats] = cls.__add__
        return functools.reduce(add, reports, cls())
