"""Changes to what is served after start-up, one at a time.

Three things change the served generation once the daemon runs, all under
one lock so that they never interleave:

- SIGHUP (``reload``): read the configuration again, compile and install it
  (settings only a restart changes keep their running values); anything
  invalid is rejected with the reason logged, and the running generation
  keeps serving. Each SIGHUP is a ``reload`` record in the audit trail.
- an authority list obtained by a sync client (``apply_sync``): a small
  delta whose base is what the workers serve becomes an overlay on the
  installed index; anything else, or an overlay grown too large, takes a
  full compile of every list with the running configuration;
- a restarted worker that finds the index file gone (restarts.py): the
  same full compile with the running configuration.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from filterd.audit.recorder import AuditRecorder
from filterd.errors import ConfigError, ListError, StartupError
from filterd.metrics import SupervisorState
from filterd.supervisor.compiling import ListCompiler
from filterd.supervisor.installs import Installs
from filterd.supervisor.settings import Overrides, keep_restart_only_settings, load
from filterd.supervisor.syncing import Syncing
from filterd.sync.client import Change
from filterd.sync.fetch import Settings
from filterd.sync.model import SyncError

log = logging.getLogger("filterd")


class Updates:
    def __init__(
        self,
        config_path: Path | None,
        overrides: Overrides,
        installs: Installs,
        compiler: ListCompiler,
        syncing: Syncing,
        state: SupervisorState,
        audit: AuditRecorder,
    ) -> None:
        self._config_path = config_path
        self._overrides = overrides
        self._installs = installs
        self._compiler = compiler
        self._syncing = syncing
        self._state = state
        self._audit = audit
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()

    def schedule_reload(self) -> None:
        """SIGHUP's handler: a reload, run as a task kept until it ends."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Stop a reload still running (at stop, once the workers are drained)."""
        for task in list(self._tasks):
            task.cancel()

    async def reload(self, *, read_config: bool = True) -> bool:
        """SIGHUP (``read_config``): load, compile and install a new configuration,
        or keep the old. Without ``read_config`` (a synced list changed): compile
        and install the same configuration with the lists as they now are."""
        async with self._lock:
            log.info("reload requested" if read_config else "lists changed: recompiling")
            try:
                config = self._installs.config
                settings: dict[str, Settings] = {}
                if read_config:
                    config = keep_restart_only_settings(
                        config, load(self._config_path, self._overrides)
                    )
                    settings = self._syncing.settings(config)
                compiled = await self._compiler.compile(config)
                await self._installs.install(config, *compiled, "reload" if read_config else "sync")
                self._syncing.reconfigure(settings)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload rejected: %s", problem)
                error = "; ".join(exc.problems)
            except (ListError, StartupError) as exc:
                log.error("reload rejected: %s", exc)
                error = str(exc)
            except Exception as exc:
                log.exception("reload failed")
                error = f"{type(exc).__name__}: {exc}"
            else:
                self._state.reloads["success"] += 1
                log.info(
                    "reload done: generation %d, %d names enforced",
                    self._state.generation,
                    self._state.index_names,
                )
                if read_config:
                    self._record("success", None)
                return True
            self._state.reloads["failure"] += 1
            log.error("still serving generation %d", self._state.generation)
            if read_config:
                self._record("failure", error)
            return False

    async def apply_sync(self, change: Change) -> None:
        """A synced list was obtained: install it (the sync client's hook), or
        raise ``SyncError('apply')``."""
        installs = self._installs
        source = installs.served_source(change.list_id)
        if source is not None and installs.sources[source].sha256 == change.state.sha256:
            return  # already served (start-up compiled it): reported by that install
        if change.delta is not None and change.base is not None:
            async with self._lock:
                source = installs.overlay_base(change)
                if source is not None:
                    try:
                        await installs.install_overlay(change, source)
                        return
                    except StartupError as exc:
                        log.error("overlay for %s not installed (%s)", change.list_id, exc)
                        raise SyncError("apply", str(exc)) from None
        if not await self.reload(read_config=False):
            raise SyncError(
                "apply", f"serial {change.state.serial} could not be compiled or installed"
            )

    def _record(self, result: str, error: str | None) -> None:
        fields = {"result": result, "generation": self._state.generation, "error": error}
        self._audit.emit("reload", fields)
