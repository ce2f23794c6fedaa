"""One question resolved upstream: UDP attempts with failover, TCP on truncation.

Anti-spoofing (the traps of small forwarders): every attempt uses a fresh
UDP socket, connected to the resolver, so the kernel picks a random
ephemeral source port and drops datagrams from any other address; the query
ID comes from ``secrets``; a reply is accepted only if its ID, QR bit and
question all match (``inspect_response``), anything else is counted and
ignored while the attempt keeps waiting.

The UDP path is callback-driven (``add_reader`` plus one timer) rather than
a task per query: a cache miss is the common slow path and a coroutine per
attempt costs more than the exchange itself. TCP (after TC=1, RFC 7766 §6.2)
is rare and runs as a supervised task.

The whole exchange is bounded by ``deadline``: whatever the upstreams do,
``done`` is called exactly once, by then.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Final

from filterd.config import UpstreamConfig
from filterd.upstream.pool import Upstream, UpstreamPool
from filterd.wire.answer import BadResponse, ResponseInfo, inspect_response
from filterd.wire.codes import FORMERR, NOTIMP, REFUSED, SERVFAIL
from filterd.wire.synth import opt_record

Done = Callable[[bytes | None, ResponseInfo | None, str], None]
"""Called once: (message, info, "") on success, (None, None, reason) on failure."""

_HEADER: Final = struct.Struct("!HHHHHH")
_RECV_SIZE: Final = 65535
_LIVE_RCODES: Final = frozenset({SERVFAIL, REFUSED, NOTIMP, FORMERR})


def build_query(question: bytes, query_id: int, *, do: bool, cd: bool, udp_size: int) -> bytes:
    """RD=1 query for the wire ``question`` with an OPT record (RFC 6891)."""
    flags = 0x0100 | (0x0010 if cd else 0)
    return _HEADER.pack(query_id, flags, 1, 0, 0, 1) + question + opt_record(udp_size, do)


class Exchange:
    """Drive one upstream resolution; see the module docstring."""

    __slots__ = (
        "_attempts",
        "_cd",
        "_config",
        "_deadline",
        "_do",
        "_done",
        "_finished",
        "_loop",
        "_pool",
        "_query_id",
        "_question",
        "_sent_at",
        "_sock",
        "_tasks",
        "_timer",
        "_tried",
        "_upstream",
        "errors",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: UpstreamPool,
        config: UpstreamConfig,
        question: bytes,
        *,
        do: bool,
        cd: bool,
        done: Done,
        tasks: set[asyncio.Task[None]],
        only: Upstream | None = None,
    ) -> None:
        self._loop = loop
        self._pool = pool
        self._config = config
        self._question = question
        self._do = do
        self._cd = cd
        self._done = done
        self._tasks = tasks
        self._deadline = time.monotonic() + config.deadline
        self._attempts = 0
        self._tried: list[Upstream] = [only] if only is not None else pool.candidates()
        self._finished = False
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upstream: Upstream | None = None
        self._query_id = 0
        self._sent_at = 0.0
        self.errors: list[str] = []

    def start(self) -> None:
        self._next_attempt("no upstream configured")

    # -------------------------------------------------------------- attempts

    def _next_attempt(self, reason: str) -> None:
        now = time.monotonic()
        limit = self._config.attempts
        if self._attempts >= limit or now >= self._deadline or not self._tried:
            self._finish(None, None, reason)
            return
        upstream = self._tried[self._attempts % len(self._tried)]
        self._attempts += 1
        self._upstream = upstream
        self._query_id = secrets.randbits(16)
        message = build_query(
            self._question,
            self._query_id,
            do=self._do,
            cd=self._cd,
            udp_size=self._config.edns_udp_size,
        )
        upstream.queries += 1
        try:
            sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
        except OSError:
            self._attempt_failed("socket", health=False)
            return
        self._sock = sock
        try:
            sock.setblocking(False)
            sock.connect(upstream.sockaddr)
            sock.send(message)
        except OSError:
            self._attempt_failed("network")
            return
        self._sent_at = now
        self._loop.add_reader(sock.fileno(), self._on_readable)
        wait = min(self._config.timeout, self._deadline - now)
        self._timer = self._loop.call_later(wait, self._on_timeout)

    def _close_socket(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock = self._sock
        if sock is not None:
            self._sock = None
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _attempt_failed(self, reason: str, *, health: bool = True) -> None:
        self._close_socket()
        assert self._upstream is not None
        self._pool.failed(self._upstream, reason, time.monotonic(), health=health)
        self.errors.append(reason)
        self._next_attempt(reason)

    def _on_timeout(self) -> None:
        self._timer = None
        self._attempt_failed("timeout")

    def _on_readable(self) -> None:
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
        try:
            info = inspect_response(message, self._question, self._query_id)
        except BadResponse:
            # Not our answer (spoofed, stale or broken): keep waiting for the real one.
            assert self._upstream is not None
            self._upstream.errors["mismatch"] += 1
            return
        upstream = self._upstream
        assert upstream is not None
        if info.truncated:
            self._close_socket()
            self._start_tcp(upstream)
            return
        if info.rcode in _LIVE_RCODES:
            # The resolver answered, so it is alive; another may do better.
            self._attempt_failed(f"rcode_{info.rcode}", health=False)
            return
        self._close_socket()
        self._pool.succeeded(upstream, time.monotonic() - self._sent_at)
        self._finish(message, info, "")

    # -------------------------------------------------------------------- TCP

    def _start_tcp(self, upstream: Upstream) -> None:
        task = self._loop.create_task(self._tcp(upstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tcp(self, upstream: Upstream) -> None:
        query_id = secrets.randbits(16)
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
            self.errors.append(reason)
            self._next_attempt(reason)
            return
        finally:
            if writer is not None:
                writer.close()
        self._pool.succeeded(upstream, time.monotonic() - started)
        if info.rcode in _LIVE_RCODES or info.truncated:
            self.errors.append(f"rcode_{info.rcode}")
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
