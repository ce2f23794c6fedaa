"""Listening sockets, bound once by the supervisor and inherited by workers.

One UDP and one TCP socket per listen address per worker, all on the same
port with SO_REUSEPORT, so the kernel spreads clients over the workers.
Binding here, before any worker starts, settles privileged ports and
address conflicts in one place: a port another process holds is a start-up
error, never a silent share of its traffic. Port 0 (tests) picks one free
port for UDP and TCP alike.

Each worker also gets a second UDP socket per listen address, bound to the
same address and port, that only *sends* its answers. Why: the receiving
socket sits in the worker's epoll set, so its wait queue is never empty,
and the kernel runs a write-space wake-up through that queue (two locks
taken with interrupts off, an epoll callback that finds nothing to do) for
every datagram the socket sends, when the datagram's buffer is released.
A socket nobody waits on skips it. Measured at 110k queries/s on one core
(``bench/ab``, bench/README.md, "Sixth round"): 6.2 % less CPU per query. The send
socket is in the SO_REUSEPORT group too, so a program on the group
(``filterd.listeners.steer``: the question's worker, or worker 0's socket
with one worker) picks a receiving socket for every datagram: the
receiving sockets are bound first and hold indexes 0 to workers - 1, the
program is attached before any send socket joins, and no datagram is ever
steered to a send socket. Where the kernel refuses the program there are
no send sockets (they would take a share of the queries) and each worker
answers from its receiving socket.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Final

from filterd.config import Config, Endpoint
from filterd.errors import StartupError
from filterd.listeners.steer import steer_by_question, steer_to_first
from filterd.listeners.tcp import BACKLOG as TCP_BACKLOG

log = logging.getLogger("filterd")

UDP_RECEIVE_BUFFER: Final = 4 * 1024 * 1024


@dataclass(slots=True)
class WorkerSockets:
    """The listening sockets of one worker: ``udp_send[i]`` sends the answers
    to what ``udp[i]`` receives (``None``: ``udp[i]`` sends them itself)."""

    udp: list[socket.socket]
    tcp: list[socket.socket]
    udp_send: list[socket.socket | None] = field(default_factory=list)

    def _all(self) -> list[socket.socket]:
        return self.udp + [s for s in self.udp_send if s is not None] + self.tcp

    def fds(self) -> list[int]:
        return [s.fileno() for s in self._all()]

    def close(self) -> None:
        for sock in self._all():
            sock.close()


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
                    worker.close()
                raise StartupError(f"cannot listen on {endpoint}: {exc.strerror}") from None
    return workers


def log_listening(sockets: list[WorkerSockets]) -> None:
    first = sockets[0]
    for sock in first.udp:
        log.info("listening udp %s", _sockname(sock))
    for sock in first.tcp:
        log.info("listening tcp %s", _sockname(sock))
    log.info("%d worker(s)", len(sockets))


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
    if config.server.udp:
        _add_send_sockets(endpoint, family, port, workers)


def _add_send_sockets(
    endpoint: Endpoint, family: socket.AddressFamily, port: int, workers: list[WorkerSockets]
) -> None:
    """Attach the group's program, then bind each worker's send socket for
    ``endpoint`` (see the module docstring). In that order, a send socket
    joins a group whose program already keeps queries from it; where the
    kernel refuses the program, there are no send sockets."""
    group = workers[0].udp[-1]
    sends: list[socket.socket] = []
    try:
        if len(workers) > 1:  # one worker per question: one cache per host
            steer_by_question(group, len(workers))
        else:
            steer_to_first(group)
    except OSError as exc:
        unsteered = "questions not steered to workers, " if len(workers) > 1 else ""
        log.warning(
            "%s: %sanswers sent from the receiving sockets (%s)", endpoint, unsteered, exc.strerror
        )
    else:
        try:
            for _ in workers:
                send = _socket(family, socket.SOCK_DGRAM)
                sends.append(send)
                send.bind((endpoint.host, port))
        except OSError as exc:
            for send in sends:
                send.close()
            sends = []
            log.warning("%s: answers sent from the receiving sockets (%s)", endpoint, exc.strerror)
    for index, worker in enumerate(workers):
        worker.udp_send.append(sends[index] if sends else None)


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


def _sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
