"""The supervisor: composition root of a running filterd.

It owns everything that is not the query path, in this start-up order:

1. configuration (a bad file stops start-up with exit status 2);
2. list compilation, in a child process (the parse's CPU and memory peak
   never land on a serving process; the result is a memory-mapped index);
3. listening sockets, bound once here (privileged ports, SO_REUSEPORT);
4. worker processes, which inherit the sockets and serve DNS;
5. the admin HTTP server (health, readiness, metrics);
6. readiness: ``READY=1`` to systemd once every worker serves the lists.

Beside them, the audit trail (filterd/audit/): the supervisor records its
start and stop, every list installation, reload and authority update, and
the summed worker counters every ``audit.stats_interval`` and at stop.

Signals: SIGHUP reloads configuration and lists (built off the serving
path, swapped in one step per worker; anything invalid is rejected and the
running state keeps serving); SIGTERM/SIGINT drain the workers (in-flight
queries are answered, up to ``server.drain_timeout``) and exit 0. A worker
that dies unexpectedly is restarted with the current configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from filterd import control
from filterd.admin.server import AdminServer
from filterd.audit.anchor import load_node_key, signed_receipt
from filterd.audit.events import lists_fields, next_boundary, start_fields, stats_fields
from filterd.audit.recorder import AuditRecorder
from filterd.config import Config, Endpoint, ListConfig
from filterd.config.load import load_config, parse_config
from filterd.errors import ConfigError, FilterdError, ListError, StartupError
from filterd.files import DirectoryInUse, lock_directory
from filterd.listeners.tcp import BACKLOG as TCP_BACKLOG
from filterd.lists import guard
from filterd.lists.compile import CompileReport, compile_in_child, remove_stale_indexes
from filterd.lists.overlay import OVERLAY_LIMIT, extend_overlay, with_version
from filterd.lists.sources import open_matcher
from filterd.matching.matcher import Matcher
from filterd.metrics import SupervisorState, build_registry, merge_stats
from filterd.model.sources import SourceInfo
from filterd.profiles.explain import Explanation, explain
from filterd.profiles.profileset import ProfileSet
from filterd.sync import store
from filterd.sync.client import Change, ListStatus, SyncClient
from filterd.sync.fetch import Settings
from filterd.sync.model import Receipt, SyncError

log = logging.getLogger("filterd")

INSTALL_TIMEOUT: Final = 30.0
Compiled = tuple[CompileReport, dict[str, store.Pin]]
"""A compiled index and the pinned synced snapshots it was compiled from."""
STATS_TIMEOUT: Final = 2.0
RESTART_BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER: Final = 60.0
"""Seconds a worker must serve before its restart backoff starts over."""


class RestartBackoff:
    """Delays between restarts of one worker: growing while it keeps dying
    (``RESTART_BACKOFF``), from the first step again once it has run for
    ``STABLE_AFTER`` seconds (a crash after hours of service is not a loop)."""

    def __init__(self) -> None:
        self._step = 0
        self._started = 0.0

    def started(self, now: float) -> None:
        self._started = now

    def next_delay(self, now: float) -> float:
        if self._started and now - self._started >= STABLE_AFTER:
            self._step = 0
        delay = RESTART_BACKOFF[min(self._step, len(RESTART_BACKOFF) - 1)]
        self._step += 1
        self._started = 0.0
        return delay


UDP_RECEIVE_BUFFER: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line settings that replace the configuration's (``filterd run``)."""

    listen: tuple[Endpoint, ...] = ()
    upstream: tuple[Endpoint, ...] = ()
    blocklists: tuple[Path, ...] = ()
    admin: Endpoint | str | None = None
    """An endpoint, "off", or None to keep the configuration's."""

    def apply(self, config: Config) -> Config:
        if self.admin is not None:
            admin = None if self.admin == "off" else self.admin
            assert admin is None or isinstance(admin, Endpoint)
            config = replace(config, admin=replace(config.admin, listen=admin))
        if self.listen:
            config = replace(config, server=replace(config.server, listen=self.listen))
        if self.upstream:
            config = replace(config, upstream=replace(config.upstream, servers=self.upstream))
        if self.blocklists:
            lists = tuple(
                ListConfig(name=f"cli-{i + 1}", path=path.resolve())
                for i, path in enumerate(self.blocklists)
            )
            config = replace(config, lists=lists)
        return config


def load(path: Path | None, overrides: Overrides, *, need_upstream: bool = True) -> Config:
    """The effective configuration: the file (or defaults) with overrides applied."""
    if path is not None:
        config = load_config(path)
    elif need_upstream and not overrides.upstream:
        config = parse_config("", "<defaults>")
    else:
        # No file and upstreams given (or not needed): resolv.conf is not consulted.
        config = parse_config("upstream: {servers: ['127.0.0.1']}", "<defaults>")
        config = replace(config, upstream=replace(config.upstream, servers=()))
    config = overrides.apply(config)
    if need_upstream and not config.upstream.servers:
        raise ConfigError(["upstream.servers: no upstream resolver (none in /etc/resolv.conf?)"])
    return config


# ------------------------------------------------------------------ sockets


@dataclass(slots=True)
class WorkerSockets:
    udp: list[socket.socket]
    tcp: list[socket.socket]

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.udp + self.tcp]


def bind_sockets(config: Config) -> list[WorkerSockets]:
    """One UDP and one TCP socket per listen address per worker, sharing the
    port with SO_REUSEPORT so the kernel spreads clients over workers."""
    workers = [WorkerSockets([], []) for _ in range(config.server.workers)]
    for endpoint in config.server.listen:
        for attempt in range(20):
            try:
                _bind_endpoint(config, endpoint, workers)
                break
            except OSError as exc:
                if endpoint.port == 0 and attempt < 19:
                    continue  # port 0: the UDP pick was taken for TCP; pick again
                for worker in workers:
                    for sock in worker.udp + worker.tcp:
                        sock.close()
                raise StartupError(f"cannot listen on {endpoint}: {exc.strerror}") from None
    return workers


def _bind_endpoint(config: Config, endpoint: Endpoint, workers: list[WorkerSockets]) -> None:
    family = socket.AF_INET6 if endpoint.family_v6 else socket.AF_INET
    port = endpoint.port
    if port != 0:
        _check_port_free(config, family, endpoint)
    made: list[tuple[WorkerSockets, socket.socket, bool]] = []
    try:
        for worker in workers:
            if config.server.udp:
                udp = _socket(family, socket.SOCK_DGRAM)
                made.append((worker, udp, True))
                with contextlib.suppress(OSError):  # best effort: capped by net.core.rmem_max
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
                udp.bind((endpoint.host, port))
                port = udp.getsockname()[1]
            if config.server.tcp:
                tcp = _socket(family, socket.SOCK_STREAM)
                made.append((worker, tcp, False))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((endpoint.host, port))
                tcp.listen(TCP_BACKLOG)
                port = tcp.getsockname()[1]
    except OSError:
        for _, sock, _ in made:
            sock.close()
        raise
    for worker, sock, is_udp in made:
        (worker.udp if is_udp else worker.tcp).append(sock)


def _check_port_free(config: Config, family: socket.AddressFamily, endpoint: Endpoint) -> None:
    """Fail if another process holds the port: SO_REUSEPORT would otherwise let a
    second instance (same user) silently share the traffic of the first."""
    kinds = [socket.SOCK_DGRAM] if config.server.udp else []
    kinds += [socket.SOCK_STREAM] if config.server.tcp else []
    for kind in kinds:
        with socket.socket(family, kind) as probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # SO_REUSEADDR lets TCP bind over TIME_WAIT leftovers of a restart,
            # never over a listening socket.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((endpoint.host, endpoint.port))


def _socket(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


# ------------------------------------------------------------------ workers


class WorkerHandle:
    """One worker process and its end of the control channel."""

    def __init__(self, index: int, sockets: WorkerSockets) -> None:
        self.index = index
        self.sockets = sockets
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.generation = 0
        self.last_stats: dict[str, Any] = {}
        self.lock = asyncio.Lock()
        self.backoff = RestartBackoff()

    async def start(self, log_level: str) -> None:
        parent, child = socket.socketpair()
        fds = self.sockets
        args = [
            sys.executable, "-m", "filterd.worker",
            "--control", str(child.fileno()),
            "--udp", ",".join(str(s.fileno()) for s in fds.udp),
            "--tcp", ",".join(str(s.fileno()) for s in fds.tcp),
            "--index", str(self.index),
            "--log-level", log_level,
        ]  # fmt: skip
        try:
            # Own session: only the supervisor receives the daemon's signals and
            # decides what workers do (drain on stop, nothing on reload).
            self.process = await asyncio.create_subprocess_exec(
                *args,
                pass_fds=[child.fileno(), *fds.fds()],
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.backoff.started(time.monotonic())
        self.reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        self.generation = 0

    async def request(self, message: control.Message, timeout: float) -> control.Message:
        """Send ``message`` and wait for the worker's reply (one at a time)."""
        async with self.lock:
            if self.writer is None or self.reader is None:
                raise control.ChannelClosed("worker not running")
            await control.send(self.writer, message)
            async with asyncio.timeout(timeout):
                return await control.receive(self.reader)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def close_channel(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --------------------------------------------------------------- supervisor


class Supervisor:
    def __init__(self, config_path: Path | None, overrides: Overrides, config: Config) -> None:
        self._config_path = config_path
        self._overrides = overrides
        self.config = config
        self.state = SupervisorState(workers_configured=config.server.workers)
        self._workers: list[WorkerHandle] = []
        self._stats: dict[str, Any] = {}
        self._retired: list[dict[str, Any]] = []
        self._index_path: Path | None = None
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._request_ids = itertools.count(1)
        self._admin: AdminServer | None = None
        self._installed = False
        self._installed_once = asyncio.Event()
        self._serving: Matcher | None = None
        self._sources: tuple[SourceInfo, ...] = ()
        self._explaining: tuple[Config, ProfileSet] | None = None
        self.audit = AuditRecorder(config.audit, config.state_dir)
        """The audit trail; its counters (``write_failures``...) are for the metrics."""
        self._audit_stats: asyncio.Task[None] | None = None
        self._syncs = {
            name: SyncClient(
                config.authority(name),
                config.state_dir,
                list_ids,
                self._install_sync,
                on_event=self.audit.emit,
                sign=self._sign_receipt,
            )
            for name, list_ids in synced_lists(config).items()
        }
        self._sync_of = {
            list_id: client for client in self._syncs.values() for list_id in client.status
        }

    # -------------------------------------------------------------- start-up

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            # One instance per state directory: two would overwrite each other's
            # indexes, snapshots and audit trail.
            lock_directory(self.config.state_dir)
        except DirectoryInUse as exc:
            raise StartupError(f"state directory {exc}; not starting") from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise StartupError(f"state directory: {where}{exc.strerror}") from None
        self.state.fd_limit = raise_fd_limit()
        if self._syncs:
            # The node key signs receipts: made at the first start, so that
            # `filterd node-key show` has it for the authority to register.
            try:
                load_node_key(self.config.state_dir)
            except (FilterdError, OSError) as exc:
                raise StartupError(f"node key in {self.config.state_dir}: {exc}") from None
        sockets = bind_sockets(self.config)
        self._log_listening(sockets)
        self._workers = [WorkerHandle(i, s) for i, s in enumerate(sockets)]
        compiling: asyncio.Task[Compiled] | None = None
        config_path = self._config_path.resolve() if self._config_path is not None else None
        self.audit.open()
        self.audit.emit("start", start_fields(config_path, self.config.sync.node))
        error: BaseException | None = None
        try:
            if self.config.admin.listen is not None:
                await self._start_admin(self.config.admin.listen)
            for client in self._syncs.values():
                client.start()
            # The compile (the slow part of start-up) runs while workers start;
            # nothing is served before the lists are installed.
            compiling = loop.create_task(self._compile_when_lists_ready())
            for worker in self._workers:
                await worker.start(self.config.logging.level)
            self.state.workers_running = len(self._workers)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._stopping.set)
            compiled = await self._unless_stopping(compiling)
            if compiled is not None:
                await self._install_everywhere(self.config, *compiled, "start")
                self._installed_once.set()
                for worker in self._workers:
                    self._supervise(worker)
                self._audit_stats = loop.create_task(self._record_stats_periodically())
                loop.add_signal_handler(signal.SIGHUP, self._schedule_reload)
                log.info(
                    "ready: generation %d, %d names enforced",
                    self.state.generation,
                    self.state.index_names,
                )
                notify_systemd("READY=1")
                await self._stopping.wait()
            notify_systemd("STOPPING=1")
        except BaseException as exc:
            error = exc
            raise
        finally:
            if compiling is not None and not compiling.done():
                compiling.cancel()
            self._stopping.set()
            await self._shutdown(error)
        return 0

    async def _unless_stopping(self, task: asyncio.Task[Compiled]) -> Compiled | None:
        """``task``'s result, or None if a stop signal comes first (start-up may
        wait for the authority: SIGTERM must still end it promptly)."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopping.cancel()
            return task.result()
        return None

    async def _compile_when_lists_ready(self) -> Compiled:
        """Compile once every synced list is available, or per ``sync.on_missing``."""
        if self.config.sync.on_missing == "not-ready":
            for lst in self.config.lists:
                if lst.sync and self._not_obtained(lst.sync):
                    log.warning(
                        "list %s: no snapshot of authority list %r yet; not ready "
                        "until the first sync succeeds",
                        lst.name,
                        lst.sync,
                    )
                    await self._sync_of[lst.sync].wait_first(lst.sync)
        return await self._compile(self.config)

    def effective(self, config: Config) -> Config:
        """``config`` without the synced lists never obtained (``on_missing: local-only``)."""
        lists = tuple(
            lst for lst in config.lists if not lst.sync or not self._not_obtained(lst.sync)
        )
        return replace(config, lists=lists)

    def _not_obtained(self, list_id: str) -> bool:
        """A synced list whose authority is configured but that has no snapshot yet."""
        client = self._sync_of.get(list_id)
        return client is not None and client.obtained(list_id) is None

    def _pins(self, config: Config) -> dict[str, store.Pin]:
        """The obtained snapshot of every synced list in ``config``, pinned for
        a compile. No await in here: the sync clients, on this event loop, are
        the only writers of what is pinned."""
        pins = {}
        for lst in config.lists:
            client = self._sync_of.get(lst.sync) if lst.sync else None
            obtained = client.obtained(lst.sync) if client is not None and lst.sync else None
            if lst.sync and obtained is not None:
                pins[lst.sync] = store.pin(config.state_dir, lst.sync, obtained)
        return pins

    def _log_listening(self, sockets: list[WorkerSockets]) -> None:
        first = sockets[0]
        for sock in first.udp:
            log.info("listening udp %s", _sockname(sock))
        for sock in first.tcp:
            log.info("listening tcp %s", _sockname(sock))
        log.info("%d worker(s)", len(sockets))

    async def _start_admin(self, endpoint: Endpoint) -> None:
        registry = build_registry(self.state, lambda: self._stats, self.sync_status, self.audit)
        self._admin = AdminServer(self.config.admin, registry, self)
        try:
            await self._admin.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on admin {endpoint}: {exc.strerror}") from None
        log.info("admin http://%s/ (healthz, readyz, metrics)", endpoint)

    async def _compile(self, config: Config) -> Compiled:
        """Compile ``config``'s lists as obtained now: the report, and the
        synced snapshots it holds (to be reported once installed)."""
        effective = self.effective(config)
        pins = self._pins(effective)
        try:
            report = await compile_in_child(effective, pins, guard.load_baseline(config.state_dir))
        except guard.ListRefused as exc:
            key = (exc.list_name, exc.reason)
            self.state.list_refusals[key] = self.state.list_refusals.get(key, 0) + 1
            raise
        finally:
            for list_id in pins:
                store.unpin(config.state_dir, list_id)
        for source in report.sources:
            level = logging.WARNING if source.invalid else logging.INFO
            log.log(
                level,
                "list %s (%s, %s): %d entries: %d accepted, %d invalid, %d ignored",
                source.name,
                source.format,
                source.version,
                source.entries,
                source.accepted,
                source.invalid,
                source.ignored,
            )
            for problem in source.problems[:10]:
                log.log(level, "  %s", problem)
            if len(source.problems) > 10:
                log.log(level, "  ... %d more problem lines", source.invalid + source.ignored - 10)
        log.info(
            "index: %d distinct names, %s in %.2fs",
            report.distinct_names,
            "reused" if report.reused else "compiled",
            report.seconds,
        )
        return report, pins

    # -------------------------------------------------------------- install

    async def _install_everywhere(
        self, config: Config, report: CompileReport, pins: dict[str, store.Pin], cause: str
    ) -> None:
        """Install a compiled index in every worker (``cause``, for the audit
        trail: ``start``, ``reload`` or ``sync``), then report the synced
        snapshots it holds as enforced."""
        generation = self.state.generation + 1
        await self._send_install(control.Prepare(generation, config, str(report.index_path)))
        if self._serving is not None:
            self._serving.index.close()
        # The supervisor's own mapping of what workers serve: the base for overlays.
        self._serving, self._sources = open_matcher(report.index_path)
        self.config = config
        self._index_path = report.index_path
        self.state.generation = generation
        if self._syncs:
            self.state.sync_limits = (config.sync.stale_after, config.sync.lag_sla)
        self.state.index_names = report.distinct_names
        self.state.compile_seconds = report.seconds
        self.state.sources = [asdict(source) for source in report.sources]
        self.state.last_reload_success = time.time()
        self._installed = True
        files = {lst.name for lst in config.lists if not lst.sync}
        guard.save_baseline(
            config.state_dir,
            {s.name: (s.accepted, s.sha256) for s in report.sources if s.name in files},
        )
        for list_id, pin in pins.items():
            self._sync_of[list_id].enforced(list_id, pin.state, "snapshot")
        self._record_lists(cause)
        remove_stale_indexes(config, {report.index_path})

    async def _send_install(self, message: control.Prepare) -> None:
        """All or nothing: every worker prepares ``message``'s generation, and
        only then does any switch to it. If one cannot prepare (or does not
        answer), every worker drops it and the old generation serves on.

        A worker that fails between its ``Prepare`` and its ``Commit`` dies
        or is killed: it is restarted with the committed generation."""
        results = await asyncio.gather(
            *(self._request(worker, message) for worker in self._workers)
        )
        failures = [error for error in results if error]
        if failures:
            abort = control.Abort(message.generation)
            await asyncio.gather(*(self._request(worker, abort) for worker in self._workers))
            self.state.install_failures += 1
            raise StartupError(
                f"workers could not prepare generation {message.generation}: {failures[0]}; "
                "no worker switched"
            )
        commit = control.Commit(message.generation)
        results = await asyncio.gather(*(self._request(worker, commit) for worker in self._workers))
        for worker, error in zip(self._workers, results, strict=True):
            if error:
                log.error("%s; restarting it", error)
                if worker.process is not None and worker.running:
                    worker.process.kill()  # _watch restarts it with the committed generation
            else:
                worker.generation = message.generation

    async def _request(self, worker: WorkerHandle, message: control.Message) -> str:
        """One control exchange with ``worker``: "" if it worked, else why not."""
        try:
            reply = await worker.request(message, INSTALL_TIMEOUT)
        except (control.ChannelClosed, TimeoutError, OSError) as exc:
            return f"worker {worker.index}: {exc or type(exc).__name__}"
        if not isinstance(reply, control.Installed) or reply.error:
            return f"worker {worker.index}: {getattr(reply, 'error', reply)}"
        return ""

    async def _install_fresh(self, worker: WorkerHandle) -> str:
        """Install the committed generation in a (re)started worker."""
        if self._index_path is None or self._serving is None:
            return ""
        generation = self.state.generation
        prepare = control.Prepare(
            generation,
            self.config,
            str(self._index_path),
            overlay=dict(self._serving.overlay) or None,
            sources=self._sources,
        )
        error = await self._request(worker, prepare)
        if not error:
            error = await self._request(worker, control.Commit(generation))
        if not error:
            worker.generation = generation
        return error

    async def _install_sync(self, change: Change) -> None:
        """A synced list was obtained: install it (SyncClient's hook), or raise
        ``SyncError('apply')``. A small delta whose base is what the workers
        serve becomes an overlay on the installed index; anything else, or an
        overlay grown too large, takes a full compile of every list."""
        await self._installed_once.wait()  # start-up installs first, then this
        source = self._served_source(change.list_id)
        if source is not None and self._sources[source].sha256 == change.state.sha256:
            return  # already served (start-up compiled it): reported by that install
        delta, base = change.delta, change.base
        if delta is not None and base is not None:
            async with self._reload_lock:
                source = self._served_source(change.list_id)
                serving = self._serving
                if (
                    source is not None
                    and serving is not None
                    and self._sources[source].sha256 == base.sha256
                    and len(serving.overlay) + len(delta.removes) + len(delta.adds) <= OVERLAY_LIMIT
                ):
                    try:
                        await self._install_overlay(change, source)
                        return
                    except StartupError as exc:
                        log.error("overlay for %s not installed (%s)", change.list_id, exc)
                        raise SyncError("apply", str(exc)) from None
        if not await self.reload(read_config=False):
            raise SyncError(
                "apply", f"serial {change.state.serial} could not be compiled or installed"
            )

    def _served_source(self, list_id: str) -> int | None:
        """The number of the source that serves synced list ``list_id``, if any."""
        names = {lst.name for lst in self.config.lists if lst.sync == list_id}
        for number, source in enumerate(self._sources):
            if source.name in names:
                return number
        return None

    async def _install_overlay(self, change: Change, source: int) -> None:
        serving = self._serving
        assert serving is not None and self._index_path is not None and change.delta is not None
        delta, state = change.delta, change.state
        lst = next(lst for lst in self.config.lists if lst.sync == change.list_id)
        overlay = extend_overlay(serving, source, lst, delta)
        sources = with_version(
            self._sources, source, str(state.serial), state.entries, state.sha256
        )
        generation = self.state.generation + 1
        message = control.Prepare(
            generation, self.config, str(self._index_path), overlay=overlay, sources=sources
        )
        await self._send_install(message)
        self._serving = serving.with_overlay(overlay)
        self._sources = sources
        self.state.generation = generation
        self.state.sources = [asdict(source) for source in sources]
        self.state.last_reload_success = time.time()
        self._sync_of[change.list_id].enforced(change.list_id, state, "delta")
        self._record_lists("sync")
        log.info(
            "list %s: serial %d applied as an overlay (%d names changed; %d in the overlay)",
            change.list_id,
            state.serial,
            len(delta.removes) + len(delta.adds),
            len(overlay),
        )

    def explain(self, name: bytes, client: str | None, at: float) -> Explanation | None:
        """Why canonical ``name`` gets its answer for ``client`` at Unix time
        ``at``, decided on the index the workers serve (docs/profiles.md; for
        the block page); ``None`` before the first install."""
        if self._serving is None:
            return None
        if self._explaining is None or self._explaining[0] is not self.config:
            self._explaining = (self.config, ProfileSet(self.config))
        profiles = self._explaining[1]
        return explain(name, client, at, self._serving, self._sources, self.config, profiles)

    def notify(self, raw: bytes) -> tuple[str, bool]:
        """A push notification from an authority (admin HTTP); see SyncClient.notify.

        Each authority's client tries it with that authority's key; a client
        whose key did not sign it passes (``key``) to the next."""
        try:
            refusal = SyncError("manifest", "no list is synced from an authority")
            for client in self._syncs.values():
                try:
                    return client.notify(raw)
                except SyncError as exc:
                    if exc.reason != "key":
                        raise
                    refusal = exc
            raise refusal
        except SyncError:
            self.notify_refused()
            raise

    def _sign_receipt(self, receipt: Receipt) -> dict[str, Any]:
        """A receipt signed with the node key, carrying the audit head (the
        authority keeps the heads: anchors of the trail off this machine)."""
        return signed_receipt(self.config.state_dir, self.audit.anchor(), receipt)

    def notify_refused(self) -> None:
        """Count a notification refused before or after it was read."""
        self.state.notifies_refused += 1

    def admin_refused(self) -> None:
        """Count an admin connection closed at accept (``admin.max_connections``)."""
        self.state.admin_refused += 1

    def sync_status(self) -> list[ListStatus]:
        return [status for client in self._syncs.values() for status in client.status.values()]

    def is_ready(self) -> bool:
        return self._installed and all(
            w.running and w.generation == self.state.generation for w in self._workers
        )

    def health(self) -> tuple[bool, str]:
        """``/healthz``: healthy while every configured worker runs and (once
        the lists are installed) serves the current generation."""
        configured = len(self._workers)
        serving = sum(
            w.running and (not self._installed or w.generation == self.state.generation)
            for w in self._workers
        )
        detail = f"workers {serving} of {configured} serving\n"
        return serving == configured, detail

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: ready or not, and what is served (read from the
        generation every worker committed, as the metrics are)."""
        lines = [f"generation {self.state.generation}"]
        lines += [
            f"list {s.name} version {s.version} sha256 {s.sha256 or '-'}" for s in self._sources
        ]
        return self.is_ready(), "".join(f"{line}\n" for line in lines)

    # --------------------------------------------------------------- reload

    def _schedule_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_from_signal())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_from_signal(self) -> None:
        await self.reload()

    async def reload(self, *, read_config: bool = True) -> bool:
        """SIGHUP (``read_config``): load, compile and install a new configuration,
        or keep the old. Without ``read_config`` (a synced list changed): compile
        and install the same configuration with the lists as they now are."""
        async with self._reload_lock:
            log.info("reload requested" if read_config else "lists changed: recompiling")
            try:
                config = self.config
                settings: dict[str, Settings] = {}
                if read_config:
                    config = self._keep_restart_only_settings(
                        load(self._config_path, self._overrides)
                    )
                    settings = self._sync_settings(config)
                compiled = await self._compile(config)
                await self._install_everywhere(
                    config, *compiled, "reload" if read_config else "sync"
                )
                for name, new in settings.items():
                    self._syncs[name].reconfigure(new)
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
                self.state.reloads["success"] += 1
                log.info(
                    "reload done: generation %d, %d names enforced",
                    self.state.generation,
                    self.state.index_names,
                )
                if read_config:
                    self._record_reload("success", None)
                return True
            self.state.reloads["failure"] += 1
            log.error("still serving generation %d", self.state.generation)
            if read_config:
                self._record_reload("failure", error)
            return False

    def _sync_settings(self, config: Config) -> dict[str, Settings]:
        """Every authority's new sync settings, read and checked (key, token,
        certificates), applied only if the whole reload succeeds. Which lists
        are synced from which authority is fixed at start-up: a change is
        refused, naming the key."""
        new = synced_lists(config)
        old = {name: list(client.status) for name, client in self._syncs.items()}
        if new != old:
            pairs_new = {f"{i} from {a or 'sync'}" for a, ids in new.items() for i in ids}
            pairs_old = {f"{i} from {a or 'sync'}" for a, ids in old.items() for i in ids}
            raise ConfigError(
                [
                    "lists[].sync, sync.url, authorities: the synced lists changed (added: "
                    f"{', '.join(sorted(pairs_new - pairs_old)) or 'none'}; removed: "
                    f"{', '.join(sorted(pairs_old - pairs_new)) or 'none'}); "
                    "restart filterd to apply that"
                ]
            )
        return {name: Settings.load(config.authority(name)) for name in new}

    def _record_reload(self, result: str, error: str | None) -> None:
        fields = {"result": result, "generation": self.state.generation, "error": error}
        self.audit.emit("reload", fields)

    def _keep_restart_only_settings(self, config: Config) -> Config:
        """Listening sockets, the worker count, the admin listeners and the
        audit trail only change on restart."""
        if config.audit != self.config.audit:
            log.warning("audit settings changed: take effect on restart")
            config = replace(config, audit=self.config.audit)
        if config.admin != self.config.admin:
            log.warning("admin settings changed: take effect on restart")
            config = replace(config, admin=self.config.admin)
        if config.state_dir != self.config.state_dir:
            log.warning("state_dir changed: takes effect on restart")
            config = replace(config, state_dir=self.config.state_dir)
        old = self.config.server
        new = config.server
        if (old.listen, old.udp, old.tcp, old.workers) != (
            new.listen,
            new.udp,
            new.tcp,
            new.workers,
        ):
            log.warning("server.listen/udp/tcp/workers changed: takes effect on restart")
            config = replace(
                config,
                server=replace(
                    new, listen=old.listen, udp=old.udp, tcp=old.tcp, workers=old.workers
                ),
            )
        return config

    # ------------------------------------------------------------ supervise

    def _supervise(self, worker: WorkerHandle) -> None:
        task = asyncio.get_running_loop().create_task(self._watch(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, worker: WorkerHandle) -> None:
        """Restart a worker whenever it exits while the supervisor is not
        stopping. It never gives up: a failure of its own (no file descriptor
        left to start a process, an index that cannot be mapped) is logged,
        counted and retried after the next backoff step, and the backoff
        starts again from its first step once a worker has served for
        ``STABLE_AFTER`` seconds."""
        while not self._stopping.is_set():
            try:
                await self._restart_when_it_exits(worker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state.supervision_errors += 1
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
            self.state.worker_restarts += 1
            self._retired.append(worker.last_stats)
            worker.close_channel()
            delay = worker.backoff.next_delay(time.monotonic())
            log.error(
                "worker %d exited with status %s; restarting in %.1fs", worker.index, code, delay
            )
            await asyncio.sleep(delay)
        if self._stopping.is_set():
            return
        worker.close_channel()
        await worker.start(self.config.logging.level)
        error = await self._install_fresh(worker)
        if error and self._index_path is not None and not self._index_path.exists():
            # The index file went away (removed by hand, a full disk cleaned
            # up): compile it again, which installs it in every worker.
            log.error("restarted %s; the index is missing, compiling it again", error)
            if await self.reload(read_config=False):
                return
        if error:
            raise StartupError(f"restarted {error}")

    # ---------------------------------------------------------------- stats

    async def refresh_stats(self) -> None:
        """Ask every worker for its counters and merge them (once per scrape)."""
        reports = await asyncio.gather(*(self._worker_stats(w) for w in self._workers))
        self._stats = merge_stats([*self._retired, *reports])
        # Each worker keeps its own top N; their sum is cut to N again.
        top = self._stats.get("blocked_top", [])
        self._stats["blocked_top"] = top[: self.config.statistics.blocked_names]
        self.state.workers_running = sum(w.running for w in self._workers)
        self.state.ready = self.is_ready()

    async def blocked_names(self) -> list[dict[str, Any]] | None:
        """The most blocked list entries now (``None``: not kept)."""
        if not self.config.statistics.blocked_names:
            return None
        await self.refresh_stats()
        rows: list[dict[str, Any]] = self._stats["blocked_top"]
        return rows

    async def _worker_stats(self, worker: WorkerHandle) -> dict[str, Any]:
        request_id = next(self._request_ids)
        try:
            reply = await worker.request(control.StatsRequest(request_id), STATS_TIMEOUT)
        except (control.ChannelClosed, TimeoutError, OSError):
            return worker.last_stats
        if isinstance(reply, control.StatsReply) and reply.request_id == request_id:
            worker.last_stats = reply.stats
        return worker.last_stats

    # ---------------------------------------------------------------- audit

    def _record_lists(self, cause: str) -> None:
        """A ``lists`` record: every source the workers now serve, with the
        full SHA-256 of the bytes each was compiled from."""
        self.audit.emit("lists", lists_fields(self.state.generation, cause, self._sources))

    async def _record_stats_periodically(self) -> None:
        """A ``stats`` record on every wall-clock multiple of ``audit.stats_interval``,
        until stopping. Never cancelled in the middle of asking the workers (a
        reply left unread on a control channel would be taken for the next one):
        it ends at its next wait once ``_stopping`` is set."""
        interval = self.config.audit.stats_interval
        boundary = 0.0
        while not self._stopping.is_set():
            boundary = next_boundary(max(time.time(), boundary), interval)
            try:
                async with asyncio.timeout(max(0.0, boundary - time.time())):
                    await self._stopping.wait()
                return
            except TimeoutError:
                pass
            await self.refresh_stats()
            self.audit.emit("stats", stats_fields(self._stats, boundary))

    async def _record_final_stats(self) -> None:
        """Counters at stop, while the workers can still be asked: the last
        record a report reconciles with ``/metrics`` against."""
        if self._audit_stats is not None:
            await asyncio.gather(self._audit_stats, return_exceptions=True)
        if self._installed:
            await self.refresh_stats()
            self.audit.emit("stats", stats_fields(self._stats, None))

    # -------------------------------------------------------------- shutdown

    async def _shutdown(self, error: BaseException | None = None) -> None:
        for client in self._syncs.values():
            await client.close()
        await self._record_final_stats()
        log.info("stopping: draining workers (up to %.1fs)", self.config.server.drain_timeout)
        timeout = self.config.server.drain_timeout
        await asyncio.gather(*(self._drain(worker, timeout) for worker in self._workers))
        for task in list(self._tasks):
            task.cancel()
        if self._admin is not None:
            await self._admin.stop()
        for worker in self._workers:
            for sock in worker.sockets.udp + worker.sockets.tcp:
                sock.close()
        self.audit.emit("stop", _stop_fields(error))
        await self.audit.close()
        log.info("stopped")

    async def _drain(self, worker: WorkerHandle, timeout: float) -> None:
        process = worker.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(control.ChannelClosed, TimeoutError, OSError):
            await worker.request(control.Drain(timeout), timeout + 2.0)
        try:
            async with asyncio.timeout(2.0):
                await process.wait()
        except TimeoutError:
            log.warning("worker %d did not exit; killing it", worker.index)
            process.kill()
            await process.wait()
        worker.close_channel()


def raise_fd_limit() -> int:
    """Raise the open-file limit to the hard limit (workers inherit it): each
    TCP connection and upstream query in flight holds one. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    log.info("open-file limit %d", soft)
    return soft


def synced_lists(config: Config) -> dict[str, list[str]]:
    """The synced list ids of each authority with a URL ("" is ``sync``); a
    list id belongs to exactly one (config validation)."""
    by_authority: dict[str, list[str]] = {}
    for lst in config.lists:
        if lst.sync and config.authority(lst.authority).url:
            by_authority.setdefault(lst.authority, []).append(lst.sync)
    return by_authority


def _stop_fields(error: BaseException | None) -> dict[str, Any]:
    """``clean``: stopped by a signal (or never got going); else the error that ended it."""
    if error is None or isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
        return {"clean": error is None, "error": None if error is None else type(error).__name__}
    return {"clean": False, "error": f"{type(error).__name__}: {error}"}


def _sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.send(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)


async def run_daemon(config_path: Path | None, overrides: Overrides, config: Config) -> int:
    supervisor = Supervisor(config_path, overrides, config)
    return await supervisor.run()
