"""The workers' counters, summed for /metrics, ``/stats/blocked`` and the audit trail.

Workers count with plain integers and report a ``WorkerStats``
(filterd/stats.py) when asked: once per scrape, and for the audit trail's
``stats`` records on every wall-clock multiple of ``audit.stats_interval``
and once at stop (the record a report reconciles with ``/metrics``). A
worker that does not answer in ``STATS_TIMEOUT`` counts with its last
report; a worker that exited keeps its last report in the sum (``retire``),
so no counter goes backwards.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Final

from filterd import control
from filterd.audit.events import next_boundary, stats_fields
from filterd.audit.recorder import AuditRecorder
from filterd.metrics import SupervisorState
from filterd.pipeline.tally import blocked_rows
from filterd.stats import WorkerStats
from filterd.supervisor.installs import Installs
from filterd.supervisor.workers import WorkerHandle

STATS_TIMEOUT: Final = 2.0


class Stats:
    def __init__(
        self,
        workers: list[WorkerHandle],
        installs: Installs,
        state: SupervisorState,
        audit: AuditRecorder,
        stopping: asyncio.Event,
    ) -> None:
        self._workers = workers
        self._installs = installs
        self._state = state
        self._audit = audit
        self._stopping = stopping
        self.merged = WorkerStats()
        """The sum at the last refresh (what /metrics renders)."""
        self._blocked_top: list[dict[str, Any]] = []
        self._retired = WorkerStats()
        """The last counters of every worker that exited: they stay in the sums."""
        self._request_ids = itertools.count(1)
        self._recording: asyncio.Task[None] | None = None

    def retire(self, worker: WorkerHandle) -> None:
        """``worker`` exited: keep its last counters in the sums."""
        self._retired += worker.last_stats

    async def refresh(self) -> None:
        """Ask every worker for its counters and merge them (once per scrape)."""
        reports = await asyncio.gather(*(self._ask(worker) for worker in self._workers))
        self.merged = WorkerStats.merge([self._retired, *reports])
        # Each worker keeps its own top N; their sum is cut to N again.
        top = blocked_rows(self.merged.blocked_top)
        self._blocked_top = top[: self._installs.config.statistics.blocked_names]
        self._state.workers_running = sum(w.running for w in self._workers)
        self._state.ready = self._installs.is_ready()

    async def blocked_names(self) -> list[dict[str, Any]] | None:
        """The most blocked list entries now (``None``: not kept)."""
        if not self._installs.config.statistics.blocked_names:
            return None
        await self.refresh()
        return self._blocked_top

    async def _ask(self, worker: WorkerHandle) -> WorkerStats:
        request_id = next(self._request_ids)
        try:
            reply = await worker.request(control.StatsRequest(request_id), STATS_TIMEOUT)
        except (control.ChannelClosed, TimeoutError, OSError):
            return worker.last_stats
        if isinstance(reply, control.StatsReply) and reply.request_id == request_id:
            worker.last_stats = reply.stats
        return worker.last_stats

    # ----------------------------------------------------------- audit trail

    def start_recording(self) -> None:
        """Write a ``stats`` record on every multiple of ``audit.stats_interval``."""
        loop = asyncio.get_running_loop()
        self._recording = loop.create_task(self._record_periodically())

    async def _record_periodically(self) -> None:
        """A ``stats`` record on every wall-clock multiple of ``audit.stats_interval``,
        until stopping. Never cancelled in the middle of asking the workers (a
        reply left unread on a control channel would be taken for the next one):
        it ends at its next wait once ``stopping`` is set."""
        interval = self._installs.config.audit.stats_interval
        boundary = 0.0
        while not self._stopping.is_set():
            boundary = next_boundary(max(time.time(), boundary), interval)
            try:
                async with asyncio.timeout(max(0.0, boundary - time.time())):
                    await self._stopping.wait()
                return
            except TimeoutError:
                pass
            await self.refresh()
            self._audit.emit("stats", stats_fields(self.merged, self._blocked_top, boundary))

    async def record_final(self) -> None:
        """Counters at stop, while the workers can still be asked: the last
        record a report reconciles with ``/metrics`` against."""
        if self._recording is not None:
            await asyncio.gather(self._recording, return_exceptions=True)
        if self._installs.installed:
            await self.refresh()
            self._audit.emit("stats", stats_fields(self.merged, self._blocked_top, None))
