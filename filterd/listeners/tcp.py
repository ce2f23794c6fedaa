"""TCP listener (RFC 7766): length-framed queries, pipelined, bounded.

- Each message is preceded by a two-octet length (RFC 1035 §4.2.2).
- A connection may carry many queries; they are answered as soon as each
  is ready, so answers may come out of order (RFC 7766 §6.2.1.1, clients
  match them by ID).
- At most ``tcp_max_pipelined`` queries per connection are in flight;
  beyond that the connection stops being read until answers go out.
- A connection idle (no query in flight, nothing received) for
  ``tcp_idle_timeout`` seconds is closed (RFC 7766 §6.2.3).
- At most ``tcp_max_connections`` connections; a new one beyond the cap is
  closed at once (and counted) rather than starving the established ones.
- If the client stops reading its answers, the connection stops reading
  its queries (write-side flow control), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from filterd.pipeline.forward import Reply
from filterd.pipeline.resolver import Pipeline


@dataclass(slots=True)
class TcpLimits:
    idle_timeout: float
    max_connections: int
    max_pipelined: int


class TcpReply:
    __slots__ = ("_connection", "received")
    udp = False

    def __init__(self, connection: TcpConnection, received: float) -> None:
        self._connection = connection
        self.received = received

    def send(self, answer: bytes) -> None:
        self._connection.answered(answer)


class TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpListener) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._address = b""
        self._inflight = 0
        self._idle: asyncio.TimerHandle | None = None
        self._read_paused = False
        self._write_paused = False
        self._closed = False

    # ------------------------------------------------------------ callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        server = self._server
        if len(server.connections) >= server.limits.max_connections:
            server.rejected += 1
            transport.abort()
            return
        server.connections.add(self)
        server.accepted += 1
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        if sock is not None and peer:
            self._address = socket.inet_pton(sock.family, peer[0].split("%", 1)[0])
        transport.set_write_buffer_limits(high=256 * 1024)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        buffer = self._buffer
        pipeline = self._server.pipeline
        handle = pipeline.handle
        now = time.monotonic()
        answered = 0
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
        self._arm_idle()
        self._update_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -------------------------------------------------------------- replies

    def reply(self, client: object, received: float) -> Reply:
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
        self._server: asyncio.Server | None = None
        self.accepted = 0
        self.rejected = 0
        self.idle_closed = 0

    async def start(self) -> None:
        self._sock.setblocking(False)
        self._server = await self.loop.create_server(
            lambda: TcpConnection(self), sock=self._sock, start_serving=True
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
