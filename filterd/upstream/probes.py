"""Health probes of the upstream resolvers that are down.

Contract: while started, ``UpstreamProbes`` wakes every ``PROBE_TICK``
seconds, asks the pool which down resolvers are due a probe
(``UpstreamPool.due_probes``: one every ``upstream.probe_interval``), and
sends each of them the classic liveness question, the root's NS set
(". IN NS", what a resolver asks at priming, RFC 8109 §3), through the same
``Exchange`` as a client's cache miss, restricted to that one resolver. A
resolver that answers is up again from that answer on (the exchange reports
it to the pool); the probe's only other effect is one log line. Probes
never answer a client and are not counted as client queries.

Why here: the pool decides who is down and when a probe is due, the
exchange knows how to ask, and both live in this room; the worker only
starts the probes with each pipeline it builds and stops them when it
drains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from filterd.config import UpstreamConfig
from filterd.upstream.exchange import Exchange, UpstreamIO
from filterd.upstream.pool import UpstreamPool
from filterd.wire.answer import ResponseInfo

log = logging.getLogger("filterd.upstream")

PROBE_TICK: Final = 1.0
"""Seconds between two looks for due probes (the resolution of ``probe_interval``)."""
ROOT_NS_QUESTION: Final = b"\x00\x00\x02\x00\x01"
"""". IN NS" in wire form: root name, type NS (2), class IN (1)."""


class UpstreamProbes:
    """Probes of one pool's down resolvers, sent over ``io`` (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        io: UpstreamIO,
        pool: UpstreamPool,
        config: UpstreamConfig,
        tick: float = PROBE_TICK,
    ) -> None:
        self._loop = loop
        self._tick_seconds = tick
        self._io = io
        self._pool = pool
        self._config = config
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_later(self._tick_seconds, self._tick)

    def stop(self) -> None:
        """No probe is sent after this; one in flight finishes by its deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = self._loop.call_later(self._tick_seconds, self._tick)
        for upstream in self._pool.due_probes(time.monotonic()):

            def probed(
                message: bytes | None,
                info: ResponseInfo | None,
                reason: str,
                name: str = upstream.name,
            ) -> None:
                log.info("upstream %s probe: %s", name, "answered" if message else reason)

            Exchange(
                self._io,
                self._pool,
                self._config,
                ROOT_NS_QUESTION,
                do=False,
                cd=False,
                done=probed,
                only=upstream,
            ).start()
