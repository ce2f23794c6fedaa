"""What every worker serves, and the all-or-nothing install that changes it.

A generation is one compiled index (plus, for small authority deltas, an
overlay of changed names) with the configuration that goes with it. It is
installed in two phases over the control channel (filterd/control.py):
every worker first prepares it (maps and prefaults the index, builds its
policy, serves nothing of it yet); only when all have prepared does any
commit (one reference swap). If one cannot prepare or does not answer in
``INSTALL_TIMEOUT``, every worker aborts and the old generation keeps
serving everywhere: the failure is logged by the caller, counted
(``filterd_install_failures_total``) and, for a SIGHUP, written to the
audit trail. A worker that fails between its prepare and its commit is
killed and restarted with the committed generation (restarts.py).

What leaves the process afterwards (metrics, ``/readyz``, receipts, the
audit trail's ``lists`` record) is read from here, after the commit: what
is reported is what is served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Final

from filterd import control
from filterd.audit.events import lists_fields
from filterd.audit.recorder import AuditRecorder
from filterd.config import Config
from filterd.errors import StartupError
from filterd.lists import guard
from filterd.lists.compile import CompileReport, remove_stale_indexes
from filterd.lists.overlay import OVERLAY_LIMIT, extend_overlay, with_version
from filterd.lists.sources import open_matcher
from filterd.matching.matcher import Matcher
from filterd.metrics import SupervisorState
from filterd.model.sources import SourceInfo
from filterd.supervisor.syncing import Syncing
from filterd.supervisor.workers import WorkerHandle
from filterd.sync import store
from filterd.sync.client import Change

log = logging.getLogger("filterd")

INSTALL_TIMEOUT: Final = 30.0


class Installs:
    """The committed generation (``config``, index, sources) and its installs."""

    def __init__(
        self,
        config: Config,
        workers: list[WorkerHandle],
        state: SupervisorState,
        syncing: Syncing,
        audit: AuditRecorder,
    ) -> None:
        self.config = config
        """The configuration the workers serve (restart-only settings as at start)."""
        self.installed = False
        """True once a generation was installed everywhere."""
        self._workers = workers
        self._state = state
        self._syncing = syncing
        self._audit = audit
        self._index_path: Path | None = None
        self._serving: Matcher | None = None
        """The supervisor's own mapping of what workers serve: the base for overlays."""
        self._sources: tuple[SourceInfo, ...] = ()

    @property
    def sources(self) -> tuple[SourceInfo, ...]:
        return self._sources

    @property
    def serving(self) -> Matcher | None:
        """The matcher of the generation every worker committed (None before
        the first install): what ``lookup``-style questions are answered from."""
        return self._serving

    def is_ready(self) -> bool:
        """Installed, and every worker runs and serves the committed generation."""
        return self.installed and all(
            w.running and w.generation == self._state.generation for w in self._workers
        )

    def index_missing(self) -> bool:
        """The committed index file went away (removed by hand, a disk cleaned up)."""
        return self._index_path is not None and not self._index_path.exists()

    # ------------------------------------------------------------ full index

    async def install(
        self, config: Config, report: CompileReport, pins: dict[str, store.Pin], cause: str
    ) -> None:
        """Install a compiled index in every worker (``cause``, for the audit
        trail: ``start``, ``reload`` or ``sync``), then report the synced
        snapshots it holds as enforced."""
        generation = self._state.generation + 1
        await self._everywhere(control.Prepare(generation, config, str(report.index_path)))
        if self._serving is not None:
            self._serving.index.close()
        self._serving, self._sources = open_matcher(report.index_path)
        self.config = config
        self._index_path = report.index_path
        state = self._state
        state.generation = generation
        if self._syncing.active:
            state.sync_limits = (config.sync.stale_after, config.sync.lag_sla)
        state.index_names = report.distinct_names
        state.compile_seconds = report.seconds
        state.sources = [asdict(source) for source in report.sources]
        state.last_reload_success = time.time()
        self.installed = True
        files = {lst.name for lst in config.lists if not lst.sync}
        guard.save_baseline(
            config.state_dir,
            {s.name: (s.accepted, s.sha256) for s in report.sources if s.name in files},
        )
        for list_id, pin in pins.items():
            self._syncing.enforced(list_id, pin.state, "snapshot")
        self._record_lists(cause)
        remove_stale_indexes(config, {report.index_path})

    # --------------------------------------------------------------- overlay

    def served_source(self, list_id: str) -> int | None:
        """The number of the source that serves synced list ``list_id``, if any."""
        names = {lst.name for lst in self.config.lists if lst.sync == list_id}
        for number, source in enumerate(self._sources):
            if source.name in names:
                return number
        return None

    def overlay_base(self, change: Change) -> int | None:
        """The source ``change``'s delta can be laid over, if the workers serve
        its base and the overlay stays within ``OVERLAY_LIMIT`` names."""
        delta, base = change.delta, change.base
        source = self.served_source(change.list_id)
        serving = self._serving
        if delta is None or base is None or source is None or serving is None:
            return None
        if self._sources[source].sha256 != base.sha256:
            return None
        if len(serving.overlay) + len(delta.removes) + len(delta.adds) > OVERLAY_LIMIT:
            return None
        return source

    async def install_overlay(self, change: Change, source: int) -> None:
        """Install ``change`` as an overlay on the served index (``overlay_base``)."""
        serving = self._serving
        assert serving is not None and self._index_path is not None and change.delta is not None
        delta, synced = change.delta, change.state
        lst = next(lst for lst in self.config.lists if lst.sync == change.list_id)
        overlay = extend_overlay(serving, source, lst, delta)
        sources = with_version(
            self._sources, source, str(synced.serial), synced.entries, synced.sha256
        )
        generation = self._state.generation + 1
        message = control.Prepare(
            generation, self.config, str(self._index_path), overlay=overlay, sources=sources
        )
        await self._everywhere(message)
        self._serving = serving.with_overlay(overlay)
        self._sources = sources
        self._state.generation = generation
        self._state.sources = [asdict(source) for source in sources]
        self._state.last_reload_success = time.time()
        self._syncing.enforced(change.list_id, synced, "delta")
        self._record_lists("sync")
        log.info(
            "list %s: serial %d applied as an overlay (%d names changed; %d in the overlay)",
            change.list_id,
            synced.serial,
            len(delta.removes) + len(delta.adds),
            len(overlay),
        )

    # ------------------------------------------------------- one new worker

    async def install_fresh(self, worker: WorkerHandle) -> str:
        """Install the committed generation in a (re)started worker: "" if it
        worked, else why not."""
        if self._index_path is None or self._serving is None:
            return ""
        generation = self._state.generation
        prepare = control.Prepare(
            generation,
            self.config,
            str(self._index_path),
            overlay=dict(self._serving.overlay) or None,
            sources=self._sources,
        )
        error = await _request(worker, prepare)
        if not error:
            error = await _request(worker, control.Commit(generation))
        if not error:
            worker.generation = generation
        return error

    # ------------------------------------------------------------- protocol

    async def _everywhere(self, message: control.Prepare) -> None:
        """All or nothing: every worker prepares ``message``'s generation, and
        only then does any switch to it. If one cannot prepare (or does not
        answer), every worker drops it and the old generation serves on.

        A worker that fails between its ``Prepare`` and its ``Commit`` dies
        or is killed: it is restarted with the committed generation."""
        workers = self._workers
        results = await asyncio.gather(*(_request(worker, message) for worker in workers))
        failures = [error for error in results if error]
        if failures:
            abort = control.Abort(message.generation)
            await asyncio.gather(*(_request(worker, abort) for worker in workers))
            self._state.install_failures += 1
            raise StartupError(
                f"workers could not prepare generation {message.generation}: {failures[0]}; "
                "no worker switched"
            )
        commit = control.Commit(message.generation)
        results = await asyncio.gather(*(_request(worker, commit) for worker in workers))
        for worker, error in zip(workers, results, strict=True):
            if error:
                log.error("%s; restarting it", error)
                if worker.process is not None and worker.running:
                    worker.process.kill()  # restarts.py starts it with the committed generation
            else:
                worker.generation = message.generation

    def _record_lists(self, cause: str) -> None:
        """A ``lists`` record: every source the workers now serve, with the
        full SHA-256 of the bytes each was compiled from."""
        self._audit.emit("lists", lists_fields(self._state.generation, cause, self._sources))


async def _request(worker: WorkerHandle, message: control.Message) -> str:
    """One control exchange with ``worker``: "" if it worked, else why not."""
    try:
        reply = await worker.request(message, INSTALL_TIMEOUT)
    except (control.ChannelClosed, TimeoutError, OSError) as exc:
        return f"worker {worker.index}: {exc or type(exc).__name__}"
    if not isinstance(reply, control.Installed) or reply.error:
        return f"worker {worker.index}: {getattr(reply, 'error', reply)}"
    return ""
