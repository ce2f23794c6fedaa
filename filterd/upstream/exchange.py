"""One question resolved upstream: UDP attempts with failover, TCP on truncation.

Anti-spoofing (the traps of small forwarders, RFC 5452): every attempt
uses a UDP socket connected to the resolver, taken at random from a pool of
sockets on random ephemeral ports that are closed after a few queries or at
the first sign of trouble (``filterd.upstream.sockets``), so the source
port is random per query and the kernel drops datagrams from any other
address; the query ID is drawn from the kernel's CSPRNG; a reply is
accepted only if its ID, QR bit and question all match
(``inspect_response``), anything else is counted and ignored while the
attempt keeps waiting (and the socket is not reused).

A cache miss is the common slow path, so its machinery is kept lean:
``UpstreamIO`` owns one epoll set for all upstream sockets of a worker
(registered once with the worker's hot path, ``filterd.listeners.hotloop``,
so upstream answers are read on the same bare epoll loop as queries, instead
of one ``add_reader`` per socket with the selector's bookkeeping), one heap of attempt deadlines
served by a single ticking timer (instead of a timer handle per attempt,
and with finished attempts removed at once rather than popped later),
and a buffer of random query IDs refilled by one ``os.urandom`` call per
thousand queries. With sockets reused, an attempt costs a send and a recv
(socket, connect, epoll add and close once per ``MAX_USES`` queries), and
the OPT record of the query is built once per (size, DO) pair. TCP (after
TC=1, RFC 7766 §6.2) is rare and runs as a supervised task.

The whole exchange is bounded by ``deadline``: whatever the upstreams do,
``done`` is called exactly once, by then.
"""

from __future__ import annotations

import _socket
import asyncio
import heapq
import itertools
import os
import select
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Protocol

from filterd.config import UpstreamConfig
from filterd.upstream.pool import Upstream, UpstreamPool
from filterd.upstream.sockets import UDP_TYPE, UdpSockets
from filterd.wire.answer import BadResponse, ResponseInfo, inspect_response
from filterd.wire.codes import FORMERR, NOTIMP, REFUSED, SERVFAIL
from filterd.wire.synth import opt_record

Done = Callable[[bytes | None, ResponseInfo | None, str], None]
"""Called once: (message, info, "") on success, (None, None, reason) on failure."""

_HEADER: Final = struct.Struct("!HHHHHH")
_RECV_SIZE: Final = 65535
_LIVE_RCODES: Final = frozenset({SERVFAIL, REFUSED, NOTIMP, FORMERR})
TICK: Final = 0.01
"""Resolution of attempt timeouts, in seconds."""
_ID_BATCH: Final = 2048
_OPTS: dict[tuple[int, bool], bytes] = {}


def build_query(question: bytes, query_id: int, *, do: bool, cd: bool, udp_size: int) -> bytes:
    """RD=1 query for the wire ``question`` with an OPT record (RFC 6891)."""
    flags = 0x0100 | (0x0010 if cd else 0)
    opt = _OPTS.get((udp_size, do))
    if opt is None:
        opt = _OPTS[udp_size, do] = opt_record(udp_size, do)
    return _HEADER.pack(query_id, flags, 1, 0, 0, 1) + question + opt


class Reactor(Protocol):
    """Where upstream readiness and deadlines are served: the worker's hot
    path (``filterd.listeners.hotloop``) or, by default, the asyncio loop."""

    def add_reader(self, fd: int, callback: Callable[[], object]) -> object: ...

    def remove_reader(self, fd: int) -> bool: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> object: ...


class UpstreamIO:
    """Per-worker I/O shared by every exchange: readiness, deadlines, random IDs.

    Attempt deadlines: almost every attempt waits the same ``timeout``, so
    their deadlines come in insertion order; they are kept in an
    ``OrderedDict`` from which an attempt is removed as soon as it ends, and
    the tick only ever sees attempts that really timed out. The few
    attempts cut short by the overall deadline go to a small heap.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, reactor: Reactor | None = None) -> None:
        """``loop`` runs the rare TCP fallback tasks; ``reactor`` (default: the
        loop) serves the upstream sockets' readiness and the deadline tick."""
        self.loop = loop
        self._reactor: Reactor = reactor if reactor is not None else loop
        self._epoll = select.epoll()
        self._waiting: dict[int, Exchange] = {}
        self._uniform: OrderedDict[Exchange, float] = OrderedDict()
        self._capped: list[tuple[float, int, Exchange, int]] = []
        self._sequence = itertools.count()
        self._ticking = False
        self._ids = memoryview(b"")
        self._next_id = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.sockets = UdpSockets(self._epoll, self.random_below)
        self._reactor.add_reader(self._epoll.fileno(), self._on_ready)

    def random_id(self) -> int:
        position = self._next_id
        if position >= len(self._ids):
            self._ids = memoryview(os.urandom(2 * _ID_BATCH)).cast("H")
            position = 0
        self._next_id = position + 1
        value: int = self._ids[position]
        return value

    def random_below(self, bound: int) -> int:
        """A random integer in [0, ``bound``) for ``bound`` up to 65536 (CSPRNG,
        modulo bias below 0.1 % for the pool sizes it picks among)."""
        return self.random_id() % bound

    def watch(self, sock: _socket.socket, exchange: Exchange) -> None:
        """``sock`` (registered when it was adopted by ``sockets``) now answers ``exchange``."""
        self._waiting[sock.fileno()] = exchange

    def forget(self, sock: _socket.socket, exchange: Exchange, *, clean: bool = False) -> None:
        """Stop watching ``sock`` and give it back (kept for another query only
        if the exchange on it ended ``clean``); the attempt's deadline goes with it."""
        self._waiting.pop(sock.fileno(), None)
        self._uniform.pop(exchange, None)
        self.sockets.give_back(sock, clean=clean)

    def expire(self, at: float, exchange: Exchange, attempt: int, *, uniform: bool) -> None:
        """Call ``exchange.timed_out(attempt)`` at ``at`` unless the attempt ends first.

        ``uniform``: the attempt waits the common timeout (deadlines in order)."""
        if uniform:
            self._uniform[exchange] = at
        else:
            heapq.heappush(self._capped, (at, next(self._sequence), exchange, attempt))
        if not self._ticking:
            self._ticking = True
            self._reactor.call_later(TICK, self._tick)

    def _on_ready(self) -> None:
        waiting = self._waiting
        for fd, _ in self._epoll.poll(0, 256):
            exchange = waiting.get(fd)
            if exchange is not None:
                exchange.readable()
            else:
                self.sockets.stray(fd)  # an idle socket: nothing legitimate comes there

    def _tick(self) -> None:
        now = time.monotonic()
        uniform = self._uniform
        while uniform:
            exchange, at = next(iter(uniform.items()))
            if at > now:
                break
            del uniform[exchange]
            exchange.timed_out(0)
        capped = self._capped
        while capped and capped[0][0] <= now:
            _, _, exchange, attempt = heapq.heappop(capped)
            exchange.timed_out(attempt)
        if uniform or capped:
            self._reactor.call_later(TICK, self._tick)
        else:
            self._ticking = False

    def close(self) -> None:
        self._reactor.remove_reader(self._epoll.fileno())
        self.sockets.close()
        self._epoll.close()
        for task in self.tasks:
            task.cancel()


class Exchange:
    """Drive one upstream resolution; see the module docstring."""

    __slots__ = (
        "_attempts",
        "_cd",
        "_clean",
        "_config",
        "_deadline",
        "_do",
        "_done",
        "_finished",
        "_io",
        "_pool",
        "_query_id",
        "_question",
        "_sent_at",
        "_sock",
        "_tried",
        "_upstream",
    )

    def __init__(
        self,
        io: UpstreamIO,
        pool: UpstreamPool,
        config: UpstreamConfig,
        question: bytes,
        *,
        do: bool,
        cd: bool,
        done: Done,
        only: Upstream | None = None,
    ) -> None:
        self._io = io
        self._pool = pool
        self._config = config
        self._question = question
        self._do = do
        self._cd = cd
        self._done = done
        self._deadline = time.monotonic() + config.deadline
        self._attempts = 0
        self._tried: list[Upstream] = [only] if only is not None else pool.candidates()
        self._finished = False
        self._sock: _socket.socket | None = None
        self._upstream: Upstream | None = None
        self._query_id = 0
        self._sent_at = 0.0
        self._clean = True

    def start(self) -> None:
        self._next_attempt("no upstream configured")

    # -------------------------------------------------------------- attempts

    def _next_attempt(self, reason: str) -> None:
        now = time.monotonic()
        if self._attempts >= self._config.attempts or now >= self._deadline or not self._tried:
            self._finish(None, None, reason)
            return
        upstream = self._tried[self._attempts % len(self._tried)]
        self._attempts += 1
        self._upstream = upstream
        self._query_id = query_id = self._io.random_id()
        message = build_query(
            self._question, query_id, do=self._do, cd=self._cd, udp_size=self._config.edns_udp_size
        )
        upstream.queries += 1
        sockets = self._io.sockets
        address = (upstream.family, upstream.sockaddr)
        sock = sockets.take(address)
        if sock is None:
            try:
                sock = _socket.socket(upstream.family, UDP_TYPE)
            except OSError:
                self._attempt_failed("socket", health=False)
                return
            try:
                sock.connect(upstream.sockaddr)  # the kernel picks a random port
                sockets.adopt(address, sock)
            except OSError:
                sock.close()
                self._attempt_failed("network")
                return
        self._sock = sock
        self._clean = True
        try:
            sock.send(message)
        except OSError:
            self._attempt_failed("network")
            return
        self._sent_at = now
        self._io.watch(sock, self)
        timeout_at = now + self._config.timeout
        if timeout_at <= self._deadline:
            self._io.expire(timeout_at, self, self._attempts, uniform=True)
        else:
            self._io.expire(self._deadline, self, self._attempts, uniform=False)

    def _close_socket(self, *, clean: bool = False) -> None:
        """Done with the attempt's socket: back to the pool if ``clean``, else closed."""
        sock = self._sock
        if sock is not None:
            self._sock = None
            self._io.forget(sock, self, clean=clean)

    def _attempt_failed(self, reason: str, *, health: bool = True) -> None:
        self._close_socket()
        assert self._upstream is not None
        self._pool.failed(self._upstream, reason, time.monotonic(), health=health)
        self._next_attempt(reason)

    def timed_out(self, attempt: int) -> None:
        """The current attempt's deadline passed (``UpstreamIO``'s tick); ``attempt``
        0 means "the current one", otherwise it must still be the current one."""
        if attempt in (0, self._attempts) and self._sock is not None and not self._finished:
            self._attempt_failed("timeout")

    def readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            message = sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            self._attempt_failed("refused")
            return
        except OSError:
            self._attempt_failed("network")
            return
        upstream = self._upstream
        assert upstream is not None
        try:
            info = inspect_response(message, self._question, self._query_id)
        except BadResponse:
            # Not our answer (spoofed, stale or broken): keep waiting for the
            # real one, and never reuse a port someone is aiming at.
            upstream.errors["mismatch"] += 1
            self._clean = False
            return
        if info.truncated:
            self._close_socket(clean=self._clean)
            self._start_tcp(upstream)
            return
        if info.rcode in _LIVE_RCODES:
            # The resolver answered, so it is alive; another may do better.
            self._attempt_failed(f"rcode_{info.rcode}", health=False)
            return
        self._close_socket(clean=self._clean)
        self._pool.succeeded(upstream, time.monotonic() - self._sent_at)
        self._finish(message, info, "")

    # -------------------------------------------------------------------- TCP

    def _start_tcp(self, upstream: Upstream) -> None:
        tasks = self._io.tasks
        task = self._io.loop.create_task(self._tcp(upstream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _tcp(self, upstream: Upstream) -> None:
        query_id = self._io.random_id()
        message = build_query(
            self._question, query_id, do=self._do, cd=self._cd, udp_size=self._config.edns_udp_size
        )
        started = time.monotonic()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(max(0.0, self._deadline - started)):
                reader, writer = await asyncio.open_connection(*upstream.sockaddr)
                writer.write(len(message).to_bytes(2, "big") + message)
                await writer.drain()
                length = int.from_bytes(await reader.readexactly(2), "big")
                reply = await reader.readexactly(length)
            info = inspect_response(reply, self._question, query_id)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, BadResponse) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "tcp"
            self._pool.failed(upstream, reason, time.monotonic())
            self._next_attempt(reason)
            return
        finally:
            if writer is not None:
                writer.close()
        self._pool.succeeded(upstream, time.monotonic() - started)
        if info.rcode in _LIVE_RCODES or info.truncated:
            self._next_attempt(f"rcode_{info.rcode}")
            return
        self._finish(reply, info, "")

    # ------------------------------------------------------------------ finish

    def _finish(self, message: bytes | None, info: ResponseInfo | None, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._close_socket()
        self._done(message, info, reason)

    def abort(self) -> None:
        """Stop without calling ``done`` (shutdown)."""
        self._finished = True
        self._close_socket()
