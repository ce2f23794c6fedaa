"""The composition root of a running filterd: ``run_daemon``.

``run_daemon`` builds the supervisor's parts and runs them, start-up and
stop in one function, top to bottom, so that the order is read in one
place (why it lives here and not in a top-level ``app.py``: every part it
wires is in this package, and this package is the top layer of the daemon
under ``cli``; nothing else imports it). Start-up:

1. the state directory, locked for this process (one instance per directory);
2. the open-file limit, raised (workers inherit it), and the node key;
3. listening sockets, bound once here (privileged ports, SO_REUSEPORT);
4. the audit trail, opened with a ``start`` record;
5. the admin HTTP server (health, readiness, metrics, push notifications)
   and, if enabled, the block page;
6. the authority sync clients;
7. list compilation, in a child process, while the worker processes start
   (nothing is served before the lists are installed);
8. the first install on every worker; then the sync clients' changes are
   accepted, worker restarts supervised, periodic ``stats`` records written
   and SIGHUP reloads taken; ``READY=1`` to systemd.

Stop (SIGTERM or SIGINT, or an error): the sync clients close, the last
``stats`` record is written while workers can still be asked, workers
drain (in-flight queries are answered, up to ``server.drain_timeout``), the
admin server stops, sockets close, and the trail ends with a ``stop``
record. The exit status is 0 after a signal; an error propagates (the CLI
maps it to its exit status).
The block page stops with the admin server.

The parts (one owner each): settings.py (configuration and overrides),
host.py (state lock, fd limit, systemd), sockets.py, workers.py (processes,
control channel, backoff), syncing.py (authority sync clients),
compiling.py (what is compiled), installs.py (what is served, the
all-or-nothing install), updates.py (SIGHUP, synced changes), restarts.py
(supervision), stats.py (counters, audit ``stats`` records), status.py
(the admin server's questions).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from filterd.admin.server import AdminServer
from filterd.audit.events import start_fields
from filterd.audit.recorder import AuditRecorder
from filterd.blockpage.server import BlockPage
from filterd.compiled import query_path_compiled
from filterd.config import Config
from filterd.metrics import SupervisorState, build_registry
from filterd.supervisor.blockpage import Explainer, start_block_page
from filterd.supervisor.compiling import Compiled, ListCompiler
from filterd.supervisor.host import lock_state_dir, notify_systemd, raise_fd_limit
from filterd.supervisor.installs import Installs
from filterd.supervisor.restarts import Restarts
from filterd.supervisor.settings import Overrides
from filterd.supervisor.sockets import bind_sockets, log_listening
from filterd.supervisor.stats import Stats
from filterd.supervisor.status import AdminView, start_admin
from filterd.supervisor.syncing import Syncing
from filterd.supervisor.updates import Updates
from filterd.supervisor.workers import WorkerHandle

log = logging.getLogger("filterd")


async def run_daemon(config_path: Path | None, overrides: Overrides, config: Config) -> int:
    """Run filterd with ``config`` (read from ``config_path``, with ``overrides``)
    until SIGTERM or SIGINT; 0 once stopped. See the module docstring."""
    loop = asyncio.get_running_loop()
    lock_state_dir(config.state_dir)
    state = SupervisorState(workers_configured=config.server.workers)
    state.fd_limit = raise_fd_limit()
    audit = AuditRecorder(config.audit, config.state_dir)
    syncing = Syncing(config, state, audit)
    syncing.check_node_key()
    sockets = bind_sockets(config)
    log_listening(sockets)
    if query_path_compiled():
        log.info("query path: compiled")
    else:
        log.warning(
            "query path: not compiled (installed without a C compiler and the Python "
            "headers); it serves the same answers with more CPU per query (docs/operations.md)"
        )
    workers = [WorkerHandle(index, worker_sockets) for index, worker_sockets in enumerate(sockets)]
    installs = Installs(config, workers, state, syncing, audit)
    compiler = ListCompiler(syncing, state)
    updates = Updates(config_path, overrides, installs, compiler, syncing, state, audit)
    stopping = asyncio.Event()
    stats = Stats(workers, installs, state, audit, stopping)
    restarts = Restarts(installs, updates, stats, state, stopping)
    admin: AdminServer | None = None
    page: BlockPage | None = None
    compiling: asyncio.Task[Compiled] | None = None
    audit.open()
    resolved = config_path.resolve() if config_path else None  # noqa: ASYNC240 - once, at start
    audit.emit("start", start_fields(resolved, config.sync.node))
    error: BaseException | None = None
    try:
        registry = build_registry(state, lambda: stats.merged, syncing.statuses, audit)
        if config.admin.listen is not None:
            view = AdminView(workers, installs, stats, syncing, state)
            admin = await start_admin(config, registry, view)
        if config.block_page.enabled:
            page = await start_block_page(config, registry, Explainer(installs))
        syncing.start()
        # The compile (the slow part of start-up) runs while workers start.
        compiling = loop.create_task(compiler.when_lists_ready(config))
        for worker in workers:
            await worker.start(config.logging.level)
        state.workers_running = len(workers)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        compiled = await _unless_stopping(compiling, stopping)
        if compiled is not None:
            await installs.install(config, *compiled, "start")
            syncing.accept_changes(updates.apply_sync)
            for worker in workers:
                restarts.watch(worker)
            stats.start_recording()
            loop.add_signal_handler(signal.SIGHUP, updates.schedule_reload)
            log.info("ready: generation %d, %d names enforced", state.generation, state.index_names)
            notify_systemd("READY=1")
            await stopping.wait()
        notify_systemd("STOPPING=1")
    except BaseException as exc:
        error = exc
        raise
    finally:
        if compiling is not None and not compiling.done():
            compiling.cancel()
        stopping.set()
        await syncing.close()
        await stats.record_final()
        drain_timeout = installs.config.server.drain_timeout
        log.info("stopping: draining workers (up to %.1fs)", drain_timeout)
        await asyncio.gather(*(worker.drain(drain_timeout) for worker in workers))
        restarts.cancel()
        updates.cancel()
        if admin is not None:
            await admin.stop()
        if page is not None:
            await page.stop()
        for worker_sockets in sockets:
            worker_sockets.close()
        audit.emit("stop", _stop_fields(error))
        await audit.close()
        log.info("stopped")
    return 0


async def _unless_stopping(
    task: asyncio.Task[Compiled], stopping: asyncio.Event
) -> Compiled | None:
    """``task``'s result, or None if a stop signal comes first (start-up may
    wait for the authority: SIGTERM must still end it promptly)."""
    stopped = asyncio.ensure_future(stopping.wait())
    done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stopped.cancel()
        return task.result()
    return None


def _stop_fields(error: BaseException | None) -> dict[str, Any]:
    """``clean``: stopped by a signal (or never got going); else the error that ended it."""
    if error is None or isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
        return {"clean": error is None, "error": None if error is None else type(error).__name__}
    return {"clean": False, "error": f"{type(error).__name__}: {error}"}
