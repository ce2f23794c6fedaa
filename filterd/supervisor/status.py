"""What the admin HTTP server (filterd/admin/server.py) asks of the supervisor.

``AdminView`` answers its ``Daemon`` protocol from the parts that own each
answer: health and readiness from the workers and the committed generation
(installs.py), counters from the stats (stats.py), push notifications from
the sync clients (syncing.py). ``start_admin`` starts the server.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from filterd.admin.server import AdminServer
from filterd.config import Config
from filterd.errors import StartupError
from filterd.metrics import SupervisorState
from filterd.supervisor.installs import Installs
from filterd.supervisor.stats import Stats
from filterd.supervisor.syncing import Syncing
from filterd.supervisor.workers import WorkerHandle

log = logging.getLogger("filterd")


class AdminView:
    def __init__(
        self,
        workers: list[WorkerHandle],
        installs: Installs,
        stats: Stats,
        syncing: Syncing,
        state: SupervisorState,
    ) -> None:
        self._workers = workers
        self._installs = installs
        self._stats = stats
        self._syncing = syncing
        self._state = state

    def health(self) -> tuple[bool, str]:
        """``/healthz``: healthy while every configured worker runs and (once
        the lists are installed) serves the current generation."""
        installed, generation = self._installs.installed, self._state.generation
        configured = len(self._workers)
        serving = sum(
            w.running and (not installed or w.generation == generation) for w in self._workers
        )
        detail = f"workers {serving} of {configured} serving\n"
        return serving == configured, detail

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: ready or not, and what is served (read from the
        generation every worker committed, as the metrics are)."""
        lines = [f"generation {self._state.generation}"]
        lines += [
            f"list {s.name} version {s.version} sha256 {s.sha256 or '-'}"
            for s in self._installs.sources
        ]
        return self._installs.is_ready(), "".join(f"{line}\n" for line in lines)

    async def refresh_stats(self) -> None:
        await self._stats.refresh()

    async def blocked_names(self) -> list[dict[str, Any]] | None:
        return await self._stats.blocked_names()

    def notify(self, raw: bytes) -> tuple[str, bool]:
        return self._syncing.notify(raw)

    def notify_refused(self) -> None:
        self._syncing.notify_refused()

    def admin_refused(self) -> None:
        """Count an admin connection closed at accept (``admin.max_connections``)."""
        self._state.admin_refused += 1


async def start_admin(config: Config, registry: CollectorRegistry, view: AdminView) -> AdminServer:
    """The admin server, listening on ``admin.listen`` (and ``admin.notify_listen``)."""
    admin = AdminServer(config.admin, registry, view)
    try:
        await admin.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on admin {config.admin.listen}: {exc.strerror}"
        ) from None
    log.info("admin http://%s/ (healthz, readyz, metrics)", config.admin.listen)
    return admin
