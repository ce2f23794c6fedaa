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
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from filterd import control
from filterd.admin.server import AdminServer
from filterd.audit.events import lists_fields, next_boundary, start_fields, stats_fields
from filterd.audit.recorder import AuditRecorder
from filterd.config import Config, Endpoint, ListConfig, load_config, parse_config
from filterd.errors import ConfigError, ListError, StartupError
from filterd.lists.compile import CompileReport, compile_in_child, remove_stale_indexes
from filterd.lists.overlay import OVERLAY_LIMIT, extend_overlay, with_version
from filterd.lists.sources import SourceInfo, open_matcher
from filterd.matching.matcher import Matcher
from filterd.metrics import SupervisorState, build_registry, merge_stats
from filterd.sync.client import ListStatus, SyncClient
from filterd.sync.model import Delta, SyncError
from filterd.sync.store import load_state

log = logging.getLogger("filterd")

INSTALL_TIMEOUT: Final = 30.0
STATS_TIMEOUT: Final = 2.0
RESTART_BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
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
                tcp.listen(1024)
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
        self.restarts = 0

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
        finally:
            child.close()
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
        self._serving: Matcher | None = None
        self._sources: tuple[SourceInfo, ...] = ()
        self.audit = AuditRecorder(config.audit, config.state_dir)
        """The audit trail; its counters (``write_failures``...) are for the metrics."""
        self._audit_stats: asyncio.Task[None] | None = None
        # One client per authority that publishes a list enforced here; a
        # list id belongs to exactly one (config validation).
        by_authority: dict[str, list[str]] = {}
        for lst in config.lists:
            if lst.sync:
                by_authority.setdefault(lst.authority, []).append(lst.sync)
        self._syncs = {
            name: SyncClient(
                config.authority(name),
                config.state_dir,
                list_ids,
                self._apply_sync,
                on_event=self.audit.emit,
            )
            for name, list_ids in by_authority.items()
            if config.authority(name).url
        }
        self._sync_of = {
            list_id: client for client in self._syncs.values() for list_id in client.status
        }

    # -------------------------------------------------------------- start-up

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        sockets = bind_sockets(self.config)
        self._log_listening(sockets)
        self._workers = [WorkerHandle(i, s) for i, s in enumerate(sockets)]
        compiling: asyncio.Task[CompileReport] | None = None
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
            report = await self._unless_stopping(compiling)
            if report is not None:
                await self._install_everywhere(self.config, report, "start")
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

    async def _unless_stopping(self, task: asyncio.Task[CompileReport]) -> CompileReport | None:
        """``task``'s result, or None if a stop signal comes first (start-up may
        wait for the authority: SIGTERM must still end it promptly)."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopping.cancel()
            return task.result()
        return None

    async def _compile_when_lists_ready(self) -> CompileReport:
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
        return client is not None and not client.has_snapshot(list_id)

    def _log_listening(self, sockets: list[WorkerSockets]) -> None:
        first = sockets[0]
        for sock in first.udp:
            log.info("listening udp %s", _sockname(sock))
        for sock in first.tcp:
            log.info("listening tcp %s", _sockname(sock))
        log.info("%d worker(s)", len(sockets))

    async def _start_admin(self, endpoint: Endpoint) -> None:
        registry = build_registry(self.state, lambda: self._stats, self.sync_status, self.audit)
        self._admin = AdminServer(
            endpoint, registry, self.is_ready, self.refresh_stats, self.notify, self.blocked_names
        )
        try:
            await self._admin.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on admin {endpoint}: {exc.strerror}") from None
        log.info("admin http://%s/ (healthz, readyz, metrics)", endpoint)

    async def _compile(self, config: Config) -> CompileReport:
        report = await compile_in_child(self.effective(config))
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
        return report

    # -------------------------------------------------------------- install

    async def _install_everywhere(self, config: Config, report: CompileReport, cause: str) -> None:
        """Install a compiled index in every worker (``cause``, for the audit
        trail: ``start``, ``reload`` or ``sync``)."""
        generation = self.state.generation + 1
        await self._send_install(control.Install(generation, config, str(report.index_path)))
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
        self._record_lists(cause)
        remove_stale_indexes(config, {report.index_path})

    async def _send_install(self, message: control.Install) -> None:
        results = await asyncio.gather(
            *(self._install(worker, message) for worker in self._workers)
        )
        failures = [error for error in results if error]
        if failures:
            raise StartupError(
                f"workers could not install generation {message.generation}: {failures[0]}"
            )

    async def _install(self, worker: WorkerHandle, message: control.Install) -> str:
        try:
            reply = await worker.request(message, INSTALL_TIMEOUT)
        except (control.ChannelClosed, TimeoutError, OSError) as exc:
            return f"worker {worker.index}: {exc or type(exc).__name__}"
        if not isinstance(reply, control.Installed) or reply.error:
            return f"worker {worker.index}: {getattr(reply, 'error', reply)}"
        worker.generation = reply.generation
        return ""

    async def _apply_sync(self, list_id: str, delta: Delta | None) -> bool:
        """A synced list was persisted: swap it in (SyncClient's hook). A small
        delta becomes an overlay on the installed index; anything else, or an
        overlay grown too large, takes a full compile."""
        if not self._installed:
            return True  # start-up is waiting for it and compiles next
        if delta is not None and self._serving is not None:
            size = len(self._serving.overlay) + len(delta.removes) + len(delta.adds)
            if size <= OVERLAY_LIMIT:
                async with self._reload_lock:
                    try:
                        await self._install_overlay(list_id, delta)
                        return True
                    except StartupError as exc:
                        log.error("overlay for %s not installed (%s); recompiling", list_id, exc)
        return await self.reload(read_config=False)

    async def _install_overlay(self, list_id: str, delta: Delta) -> None:
        serving = self._serving
        assert serving is not None and self._index_path is not None
        lists = self.effective(self.config).lists
        source = next(i for i, lst in enumerate(lists) if lst.sync == list_id)
        overlay = extend_overlay(serving, source, lists[source], delta)
        persisted = load_state(self.config.state_dir, list_id)
        assert persisted is not None
        sources = with_version(self._sources, source, str(persisted.serial), persisted.entries)
        generation = self.state.generation + 1
        message = control.Install(
            generation, self.config, str(self._index_path), overlay=overlay, sources=sources
        )
        await self._send_install(message)
        self._serving = Matcher(serving.index, serving.mandatory, overlay)
        self._sources = sources
        self.state.generation = generation
        self.state.sources = [asdict(source) for source in sources]
        self.state.last_reload_success = time.time()
        self._record_lists("sync")
        log.info(
            "list %s: serial %d applied as an overlay (%d names changed; %d in the overlay)",
            list_id,
            persisted.serial,
            len(delta.removes) + len(delta.adds),
            len(overlay),
        )

    def notify(self, raw: bytes) -> str:
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
            self.state.notifies_refused += 1
            raise

    def sync_status(self) -> list[ListStatus]:
        return [status for client in self._syncs.values() for status in client.status.values()]

    def is_ready(self) -> bool:
        return self._installed and all(
            w.running and w.generation == self.state.generation for w in self._workers
        )

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
                if read_config:
                    config = self._keep_restart_only_settings(
                        load(self._config_path, self._overrides)
                    )
                report = await self._compile(config)
                await self._install_everywhere(config, report, "reload" if read_config else "sync")
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

    def _record_reload(self, result: str, error: str | None) -> None:
        fields = {"result": result, "generation": self.state.generation, "error": error}
        self.audit.emit("reload", fields)

    def _keep_restart_only_settings(self, config: Config) -> Config:
        """Listening sockets, the worker count and the audit trail only change on restart."""
        if config.audit != self.config.audit:
            log.warning("audit settings changed: take effect on restart")
            config = replace(config, audit=self.config.audit)
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
        """Restart a worker that exits while the supervisor is not stopping."""
        while not self._stopping.is_set():
            assert worker.process is not None
            code = await worker.process.wait()
            if self._stopping.is_set():
                return
            self.state.worker_restarts += 1
            self._retired.append(worker.last_stats)
            worker.close_channel()
            delay = RESTART_BACKOFF[min(worker.restarts, len(RESTART_BACKOFF) - 1)]
            worker.restarts += 1
            log.error(
                "worker %d exited with status %s; restarting in %.1fs", worker.index, code, delay
            )
            await asyncio.sleep(delay)
            if self._stopping.is_set():
                return
            await worker.start(self.config.logging.level)
            if self._index_path is not None and self._serving is not None:
                message = control.Install(
                    self.state.generation,
                    self.config,
                    str(self._index_path),
                    overlay=dict(self._serving.overlay) or None,
                    sources=self._sources,
                )
                error = await self._install(worker, message)
                if error:
                    log.error("restarted %s", error)

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
        """A ``lists`` record: every source now enforced, with the full SHA-256
        of each synced list whose persisted serial is the one installed."""
        hashes = {}
        for lst in self.config.lists:
            state = load_state(self.config.state_dir, lst.sync) if lst.sync else None
            if state is not None:
                hashes[(lst.name, str(state.serial))] = state.sha256
        sha256 = {
            source.name: hashes[(source.name, source.version)]
            for source in self._sources
            if (source.name, source.version) in hashes
        }
        fields = lists_fields(self.state.generation, cause, self._sources, sha256)
        self.audit.emit("lists", fields)

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
