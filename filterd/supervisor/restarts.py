"""Supervision: a worker that exits while the daemon is not stopping is restarted.

One watch task per worker, started once the first generation is installed.
It never gives up: a failure of its own (no file descriptor left to start
a process, an index that cannot be mapped) is logged, counted
(``filterd_worker_restart_failures_total``) and tried again after the next
backoff step (workers.py); a restarted worker gets the committed
generation before it counts as serving. If the index file went away, the
lists are compiled again, which installs them in every worker.
"""

from __future__ import annotations

import asyncio
import logging
import time

from filterd.errors import StartupError
from filterd.metrics import SupervisorState
from filterd.supervisor.installs import Installs
from filterd.supervisor.stats import Stats
from filterd.supervisor.updates import Updates
from filterd.supervisor.workers import WorkerHandle

log = logging.getLogger("filterd")


class Restarts:
    def __init__(
        self,
        installs: Installs,
        updates: Updates,
        stats: Stats,
        state: SupervisorState,
        stopping: asyncio.Event,
    ) -> None:
        self._installs = installs
        self._updates = updates
        self._stats = stats
        self._state = state
        self._stopping = stopping
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, worker: WorkerHandle) -> None:
        task = asyncio.get_running_loop().create_task(self._watch(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Stop watching (at stop, once the workers are drained)."""
        for task in list(self._tasks):
            task.cancel()

    async def _watch(self, worker: WorkerHandle) -> None:
        """Restart ``worker`` whenever it exits while the supervisor is not
        stopping; the backoff starts again from its first step once a worker
        has served for ``STABLE_AFTER`` seconds."""
        while not self._stopping.is_set():
            try:
                await self._restart_when_it_exits(worker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._state.supervision_errors += 1
                delay = worker.backoff.next_delay(time.monotonic())
                log.error(
                    "worker %d could not be restarted (%s: %s); trying again in %.1fs",
                    worker.index,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if worker.running and worker.process is not None:
                    worker.process.kill()  # half started: start again from scratch
                await asyncio.sleep(delay)

    async def _restart_when_it_exits(self, worker: WorkerHandle) -> None:
        if worker.running and worker.process is not None:
            code = await worker.process.wait()
            if self._stopping.is_set():
                return
            self._state.worker_restarts += 1
            self._stats.retire(worker)
            worker.close_channel()
            delay = worker.backoff.next_delay(time.monotonic())
            log.error(
                "worker %d exited with status %s; restarting in %.1fs", worker.index, code, delay
            )
            await asyncio.sleep(delay)
        if self._stopping.is_set():
            return
        worker.close_channel()
        await worker.start(self._installs.config.logging.level)
        error = await self._installs.install_fresh(worker)
        if error and self._installs.index_missing():
            # The index file went away (removed by hand, a full disk cleaned
            # up): compile it again, which installs it in every worker.
            log.error("restarted %s; the index is missing, compiling it again", error)
            if await self._updates.reload(read_config=False):
                return
        if error:
            raise StartupError(f"restarted {error}")
