"""Latency histograms counted with integers, for the query path and the upstream pool.

``observe`` is a short scan of the bounds and two additions, cheap enough
for every answer; buckets are stored non-cumulative and turned into
Prometheus' cumulative ``le`` buckets only at scrape time (filterd/metrics.py).
The bounds and the value a histogram is read as (``Buckets``, which crosses
the process boundary) live in ``filterd.stats``; this module is compiled with
the query path (``filterd/compiled.py``), which a pickled value cannot be.
"""

from __future__ import annotations

from typing import Final

from filterd.stats import LATENCY_BOUNDS, Buckets

_BOUNDS: Final[tuple[float, ...]] = LATENCY_BOUNDS
"""The bounds as this module's constant (compiled: a C static, not a lookup)."""


class Histogram:
    """Counts per ``LATENCY_BOUNDS`` bucket (non-cumulative) plus the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        """Record ``times`` answers that each took ``seconds`` (a batch shares one reading).

        A scan from the first bound, not ``bisect``: almost every observation
        falls in the first buckets, and compiled, the scan costs a third of
        the call into ``bisect``. Same bucket as ``bisect_left``: the first
        bound not below ``seconds`` (Prometheus' ``le``)."""
        index = 0
        for bound in _BOUNDS:
            if seconds <= bound:
                break
            index += 1
        self.counts[index] += times
        self.total += seconds * times

    def snapshot(self) -> Buckets:
        """The observations so far, as a value that can leave the process."""
        return Buckets(tuple(self.counts), self.total)

    def add(self, other: Histogram) -> None:
        """Fold ``other``'s observations into this one."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
