"""TCP listener (RFC 7766): length-framed queries, pipelined, bounded.

- Each message is preceded by a two-octet length (RFC 1035 §4.2.2).
- A connection may carry many queries; they are answered as soon as each
  is ready, so answers may come out of order (RFC 7766 §6.2.1.1, clients
  match them by ID).
- At most ``tcp_max_pipelined`` queries per connection are in flight;
  beyond that the connection stops being read until answers go out.
- The access list is checked when a connection is accepted: a client that
  may not query is closed at once, before it can hold a slot.
- A connection idle (no query in flight, no complete query received) for
  ``tcp_idle_timeout`` seconds is closed (RFC 7766 §6.2.3); a partial
  message must be complete within ``tcp_message_timeout`` of its first
  byte, so a client trickling bytes cannot keep a slot by sending one now
  and then (each byte used to restart the idle timer).
- At most ``tcp_max_connections`` connections, and at most
  ``tcp_max_per_client`` from one client prefix (/24, /56:
  ``filterd.pipeline.clients``); a new one beyond a cap is closed at once
  (and counted) rather than starving the established ones.
- If the client stops reading its answers, the connection stops reading
  its queries (write-side flow control), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Final

from filterd.pipeline.clients import prefix_of
from filterd.pipeline.forward import Reply
from filterd.pipeline.pipeline import Pipeline

BACKLOG: Final = 1024
"""Pending connections per listening socket (the supervisor listens with it,
and the worker's server must not lower it: asyncio's default is 100)."""


@dataclass(slots=True)
class TcpLimits:
    idle_timeout: float
    max_connections: int
    max_pipelined: int
    message_timeout: float
    max_per_client: int


class TcpReply:
    __slots__ = ("_connection", "received")
    udp = False

    def __init__(self, connection: TcpConnection, received: float) -> None:
        self._connection = connection
        self.received = received

    @property
    def address(self) -> bytes:
        return self._connection.address

    def send(self, answer: bytes) -> None:
        self._connection.answered(answer)


class TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpListener) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._address = b""
        self._prefix = b""
        self._inflight = 0
        self._idle: asyncio.TimerHandle | None = None
        self._partial: asyncio.TimerHandle | None = None
        self._read_paused = False
        self._write_paused = False
        self._closed = False

    # ------------------------------------------------------------ callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        server = self._server
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        if sock is not None and peer:
            self._address = socket.inet_pton(sock.family, peer[0].split("%", 1)[0])
        if not server.pipeline.guard.allows(self._address):
            server.denied += 1
            self._closed = True
            transport.abort()
            return
        if len(server.connections) >= server.limits.max_connections:
            server.rejected += 1
            self._closed = True
            transport.abort()
            return
        self._prefix = prefix_of(self._address)
        per_client = server.per_client
        if per_client.get(self._prefix, 0) >= server.limits.max_per_client:
            server.client_rejected += 1
            self._closed = True
            transport.abort()
            return
        per_client[self._prefix] = per_client.get(self._prefix, 0) + 1
        server.connections.add(self)
        server.accepted += 1
        transport.set_write_buffer_limits(high=256 * 1024)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self._server
        if self in server.connections:
            server.connections.discard(self)
            left = server.per_client.get(self._prefix, 1) - 1
            if left:
                server.per_client[self._prefix] = left
            else:
                server.per_client.pop(self._prefix, None)
        self._closed = True
        for timer in (self._idle, self._partial):
            if timer is not None:
                timer.cancel()
        self._idle = self._partial = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        buffer = self._buffer
        pipeline = self._server.pipeline
        handle = pipeline.handle
        now = time.monotonic()
        answered = 0
        forwarded = self._inflight
        while len(buffer) >= 2 and not self._closed:
            length = buffer[0] << 8 | buffer[1]
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            answer = handle(message, self._address, False, self, None, now)
            if answer is not None:
                answered += 1
                self._write(answer)
        if answered:
            pipeline.counters.tcp_fast.observe(time.monotonic() - now, answered)
        if answered or self._inflight > forwarded:
            # Only a query that was answered or sent upstream is activity: an
            # empty or junk message dropped unanswered (two zero bytes every
            # few seconds) must not keep a connection.
            self._arm_idle()
        self._watch_partial()
        self._update_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -------------------------------------------------------------- replies

    @property
    def address(self) -> bytes:
        return self._address

    def reply(self, client: None, received: float) -> Reply:
        """The pipeline sends this query upstream: count it in flight."""
        self._inflight += 1
        return TcpReply(self, received)

    def answered(self, answer: bytes) -> None:
        self._inflight -= 1
        if not self._closed:
            self._write(answer)
            self._arm_idle()
            self._update_reading()

    def _write(self, answer: bytes) -> None:
        assert self._transport is not None
        self._transport.write(len(answer).to_bytes(2, "big") + answer)

    # ------------------------------------------------------- flow and idle

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        should_pause = self._write_paused or self._inflight >= self._server.limits.max_pipelined
        if should_pause and not self._read_paused:
            transport.pause_reading()
            self._read_paused = True
        elif not should_pause and self._read_paused:
            transport.resume_reading()
            self._read_paused = False

    def _watch_partial(self) -> None:
        """Start the message deadline at the first byte of a message; stop it
        when no partial message is left."""
        if not self._buffer:
            if self._partial is not None:
                self._partial.cancel()
                self._partial = None
        elif self._partial is None and not self._closed:
            loop = self._server.loop
            self._partial = loop.call_later(self._server.limits.message_timeout, self._on_slow)

    def _on_slow(self) -> None:
        self._partial = None
        if self._buffer and not self._closed:
            self._server.slow_closed += 1
            self.close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = self._server.loop
        self._idle = loop.call_later(self._server.limits.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if self._inflight:
            self._arm_idle()
            return
        self._server.idle_closed += 1
        self.close()

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()


class TcpListener:
    """Owns one listening socket and its connections."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        pipeline: Pipeline,
        limits: TcpLimits,
    ) -> None:
        self.loop = loop
        self._sock = sock
        self.pipeline = pipeline
        self.limits = limits
        self.connections: set[TcpConnection] = set()
        self.per_client: dict[bytes, int] = {}
        """Open connections by client prefix (only prefixes with one open)."""
        self._server: asyncio.Server | None = None
        self.accepted = 0
        self.rejected = 0
        self.client_rejected = 0
        self.denied = 0
        self.idle_closed = 0
        self.slow_closed = 0

    async def start(self) -> None:
        self._sock.setblocking(False)
        self._server = await self.loop.create_server(
            lambda: TcpConnection(self), sock=self._sock, start_serving=True, backlog=BACKLOG
        )

    def stop(self) -> None:
        """Stop accepting; established connections finish their queries."""
        if self._server is not None:
            self._server.close()

    @property
    def inflight(self) -> int:
        return sum(c._inflight for c in self.connections)

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close()
