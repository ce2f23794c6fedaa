"""Latency histograms counted with integers, for the query path and the upstream pool.

``observe`` is one ``bisect`` into a short tuple and two additions, cheap
enough for every answer; buckets are stored non-cumulative and turned into
Prometheus' cumulative ``le`` buckets only at scrape time (filterd/metrics.py).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Final

# Seconds. A fast-path answer takes tens of microseconds, a cache miss the
# upstream's round trip (a millisecond on a LAN, up to the deadline).
LATENCY_BOUNDS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Histogram:
    """Counts per ``LATENCY_BOUNDS`` bucket (non-cumulative) plus the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        """Record ``times`` answers that each took ``seconds`` (a batch shares one reading)."""
        self.counts[bisect_left(LATENCY_BOUNDS, seconds)] += times
        self.total += seconds * times

    def snapshot(self) -> Buckets:
        """The observations so far, as a value that can leave the process."""
        return Buckets(tuple(self.counts), self.total)

    def add(self, other: Histogram) -> None:
        """Fold ``other``'s observations into this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total


@dataclass(frozen=True, slots=True)
class Buckets:
    """A ``Histogram`` read at one moment: per-bucket counts (non-cumulative,
    one more than ``LATENCY_BOUNDS`` for +Inf) and the sum of the observations.
    Snapshots of several processes add bucket by bucket."""

    counts: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS) + 1)
    total: float = 0.0

    def __add__(self, other: Buckets) -> Buckets:
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Buckets(counts, self.total + other.total)
