"""Upstream health: which resolver to ask next, and which are down.

A resolver is marked down after ``down_after`` consecutive failures that
say it is unreachable or not answering (timeouts, ICMP refusals, broken
TCP). Answers it gives, even SERVFAIL, prove it is alive and do not count:
a stream of broken domains must not take a healthy resolver out. A down
resolver is probed every ``probe_interval`` seconds (``filterd.upstream.probes``)
and comes back on its first good answer. When every resolver is down
queries still go out, to the least recently failed first: refusing to try
would turn a partial outage into a total one.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field

from filterd.config import Endpoint, UpstreamConfig
from filterd.histogram import Histogram


@dataclass(slots=True)
class Upstream:
    endpoint: Endpoint
    family: socket.AddressFamily
    sockaddr: tuple[str, int]
    up: bool = True
    failures: int = 0
    down_since: float = 0.0
    next_probe: float = 0.0
    queries: int = 0
    answers: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rtt: Histogram = field(default_factory=Histogram)

    @property
    def name(self) -> str:
        return str(self.endpoint)


class UpstreamPool:
    __slots__ = ("_config", "_order", "upstreams")

    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config
        self.upstreams = [
            Upstream(
                endpoint,
                socket.AF_INET6 if endpoint.family_v6 else socket.AF_INET,
                (endpoint.host, endpoint.port),
            )
            for endpoint in config.servers
        ]
        self._order: list[Upstream] | None = None

    def candidates(self) -> list[Upstream]:
        """Resolvers in the order one query should try them: healthy ones in
        configured order, then down ones, least recently failed first.
        Computed again only when a resolver goes down or comes back."""
        order = self._order
        if order is None:
            healthy = [u for u in self.upstreams if u.up]
            down = sorted((u for u in self.upstreams if not u.up), key=lambda u: u.down_since)
            order = self._order = healthy + down
        return order

    def succeeded(self, upstream: Upstream, rtt: float) -> None:
        upstream.answers += 1
        upstream.rtt.observe(rtt)
        upstream.failures = 0
        if not upstream.up:
            upstream.up = True
            self._order = None

    def failed(self, upstream: Upstream, reason: str, now: float, *, health: bool = True) -> None:
        """Record a failed attempt; ``health`` False for failures that prove liveness."""
        upstream.errors[reason] += 1
        if not health:
            return
        upstream.failures += 1
        if upstream.up and upstream.failures >= self._config.down_after:
            upstream.up = False
            upstream.down_since = now
            self._order = None
            upstream.next_probe = now + self._config.probe_interval

    def due_probes(self, now: float) -> list[Upstream]:
        """Down resolvers whose next probe is due; schedules the one after."""
        due = [u for u in self.upstreams if not u.up and u.next_probe <= now]
        for upstream in due:
            upstream.next_probe = now + self._config.probe_interval
        return due
