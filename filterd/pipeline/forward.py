"""Forward: cache misses go upstream, once per distinct question in flight.

Identical questions that arrive while one is already being resolved wait
for that exchange instead of starting their own (the coalescing Unbound
calls its "mesh"): a burst for one popular name costs one upstream query.
The number of exchanges in flight is bounded by ``max_inflight``; beyond it
a query is answered SERVFAIL at once rather than queued (a bounded queue
that grows under attack only delays the same failure).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from filterd.config import CacheConfig, UpstreamConfig
from filterd.pipeline.cache import Answer, ResponseCache, build_answer
from filterd.pipeline.clients import prefix_of
from filterd.upstream.exchange import Exchange, UpstreamIO
from filterd.upstream.pool import UpstreamPool
from filterd.wire.answer import ResponseInfo
from filterd.wire.query import VARIANT_CD, Query


class Reply(Protocol):
    """Where a later answer goes: one client over one transport."""

    @property
    def udp(self) -> bool: ...

    @property
    def received(self) -> float:
        """Monotonic time the query was read (for the answer-latency histogram)."""
        ...

    @property
    def address(self) -> bytes:
        """The client's packed IP address (for the UDP response rate limit)."""
        ...

    def send(self, answer: bytes) -> None: ...


Waiter = tuple[Query, Reply]
Resume = Callable[[Query, Reply, Answer | None, str], None]
"""Back into the pipeline: (query, reply, answer or None, failure reason)."""


class Forwarding(Protocol):
    """What the pipeline and the worker use of a ``Forwarder``.

    The pipeline holds its forwarder by this protocol, not by the class:
    compiled (``filterd/compiled.py``), an attribute typed with a class
    accepts only instances of it, and the pipeline's unit tests hand it a
    stand-in that records cache misses instead of sending them upstream."""

    io: UpstreamIO
    pool: UpstreamPool
    coalesced: int
    overloaded: int
    client_overloaded: int

    @property
    def deadline(self) -> float: ...

    @property
    def inflight(self) -> int: ...

    def forward(self, query: Query, reply: Reply) -> None: ...

    def close(self) -> None: ...


class Forwarder:
    """Cache misses to the upstream pool: coalesced by question, bounded in
    total (``max_inflight``) and per client prefix (``max_per_client``), so
    that one source flooding uncached names at a slow zone takes at most its
    share of the exchanges, never every other subscriber's. A query over
    either bound is answered SERVFAIL at once (outcome ``servfail``, reason
    ``overload``)."""

    __slots__ = (
        "_by_prefix",
        "_cache",
        "_cache_config",
        "_max_inflight",
        "_max_per_client",
        "_max_udp_size",
        "_pending",
        "_resume",
        "_upstream_config",
        "client_overloaded",
        "coalesced",
        "io",
        "overloaded",
        "pool",
    )

    def __init__(
        self,
        io: UpstreamIO,
        pool: UpstreamPool,
        cache: ResponseCache,
        cache_config: CacheConfig,
        upstream_config: UpstreamConfig,
        max_udp_size: int,
        max_inflight: int,
        resume: Resume,
        max_per_client: int = 0,
    ) -> None:
        """``max_per_client`` 0: no per-prefix bound."""
        self.io = io
        self.pool = pool
        self._cache = cache
        self._cache_config = cache_config
        self._upstream_config = upstream_config
        self._max_udp_size = max_udp_size
        self._max_inflight = max_inflight
        self._resume = resume
        self._max_per_client = max_per_client or max_inflight
        self._pending: dict[bytes, tuple[Exchange, list[Waiter]]] = {}
        self._by_prefix: dict[bytes, int] = {}
        """Exchanges in flight by the prefix of the client that started them."""
        self.coalesced = 0
        self.overloaded = 0
        self.client_overloaded = 0

    @property
    def deadline(self) -> float:
        """Longest time an exchange started now can stay in flight."""
        return self._upstream_config.deadline

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def forward(self, query: Query, reply: Reply) -> None:
        key = query.key
        pending = self._pending.get(key)
        if pending is not None:
            pending[1].append((query, reply))
            self.coalesced += 1
            return
        if len(self._pending) >= self._max_inflight:
            self.overloaded += 1
            self._resume(query, reply, None, "overload")
            return
        prefix = prefix_of(reply.address)
        started = self._by_prefix.get(prefix, 0)
        if started >= self._max_per_client:
            self.client_overloaded += 1
            self._resume(query, reply, None, "overload")
            return
        self._by_prefix[prefix] = started + 1
        waiters: list[Waiter] = [(query, reply)]

        def done(message: bytes | None, info: ResponseInfo | None, reason: str) -> None:
            left = self._by_prefix.get(prefix, 1) - 1
            if left:
                self._by_prefix[prefix] = left
            else:
                self._by_prefix.pop(prefix, None)
            self._completed(key, waiters, message, info, reason)

        exchange = Exchange(
            self.io,
            self.pool,
            self._upstream_config,
            key[:-1],
            do=query.do,
            cd=bool(query.variant & VARIANT_CD),
            done=done,
        )
        self._pending[key] = (exchange, waiters)
        exchange.start()

    def _completed(
        self,
        key: bytes,
        waiters: list[Waiter],
        message: bytes | None,
        info: ResponseInfo | None,
        reason: str,
    ) -> None:
        self._pending.pop(key, None)
        answer: Answer | None = None
        if message is not None and info is not None:
            first = waiters[0][0]
            now = time.monotonic()
            answer, lifetime = build_answer(
                message, info, first, self._cache_config, self._max_udp_size, now
            )
            if lifetime:
                self._cache.put(key, answer)
        resume = self._resume
        for query, reply in waiters:
            resume(query, reply, answer, reason)

    def close(self) -> None:
        """Abort every exchange in flight (shutdown after the drain period)."""
        for exchange, _ in list(self._pending.values()):
            exchange.abort()
        self._pending.clear()
        self._by_prefix.clear()
        self.io.close()
