"""UDP listener: datagrams in, answers out, a batch per read callback.

The socket is watched by the worker's hot path (``filterd.listeners.hotloop``:
a bare epoll loop inside the asyncio loop's selector, no ``Handle`` per
wake-up) and drained with ``recvmmsg`` in batches of up to ``BATCH``
datagrams; the answers a batch produces synchronously (cache hits, blocks,
errors) go out together in one ``sendmmsg`` (see ``filterd.listeners.mmsg``
for why). No asyncio transport sits between the socket and the pipeline:
measured on the target machines, ``add_reader`` with batched reads served
about 130k queries/s on one core against 115k for uvloop's datagram
transport and 31k for the standard one. Answers that come later (cache
misses) are queued and leave together after the batch of events that
completed them.

Answers leave through the worker's send socket for this address, bound to
the same address and port as the receiving one but never waited on (see
``filterd.supervisor.sockets`` for why), or through the receiving socket
where there is none. Sends never block: a full socket buffer drops that
answer (the client retries) and is counted, never queued without bound.

IP fragmentation (RFC 9715): with ``server.max_udp_size`` at most
``DONT_FRAGMENT_UP_TO`` (1400, RFC 9715 R3's largest recommended DNS/UDP
payload; the default is 1232), the send socket is set to
``IP_PMTUDISC_PROBE`` / ``IPV6_PMTUDISC_PROBE``: IPv4 answers carry the
Don't Fragment bit (R2) and neither family is ever fragmented by this host
(R1), whatever path MTU an ICMP message claims. The kernel's default also
sets DF, but it believes ICMP "fragmentation needed" and then fragments
later answers itself, so a forged ICMP message would make filterd split
its answers for an off-path attacker to spoof a fragment. A datagram that
can never be fragmented also skips the kernel's IP ID generator (RFC 6864
§4.1: an atomic datagram's ID may be any value; Linux sends 0), a hash and
a shared counter per answer. A larger ``max_udp_size`` is the operator's
statement that the network carries fragments; the kernel's default
applies then.
"""

from __future__ import annotations

import asyncio
import socket
from time import monotonic
from typing import Final

from filterd.listeners.mmsg import Batch
from filterd.listeners.serving import reactor_for
from filterd.pipeline.forward import Reply
from filterd.pipeline.pipeline import Pipeline

BATCH: Final = 64
DONT_FRAGMENT_UP_TO: Final = 1400
"""``server.max_udp_size`` up to which answers are never fragmented (RFC 9715 R3)."""
# <linux/in.h>, <linux/in6.h>; the socket module names only some of them.
IP_MTU_DISCOVER: Final = 10
IPV6_MTU_DISCOVER: Final = 23
PMTUDISC_PROBE: Final = 3  # DF set, path MTU from ICMP ignored, never fragment locally
RECV_SIZE: Final = 4096
SEND_SIZE: Final = 4096  # server.max_udp_size is at most 4096: every UDP answer fits


class UdpReply:
    """A later answer for one UDP client (its raw sockaddr, kept from the batch)."""

    __slots__ = ("_listener", "_sockaddr", "address", "received")
    udp = True

    def __init__(
        self, listener: UdpListener, sockaddr: bytes, address: bytes, received: float
    ) -> None:
        self._listener = listener
        self._sockaddr = sockaddr
        self.address = address
        self.received = received

    def send(self, answer: bytes) -> None:
        self._listener.send_later(answer, self._sockaddr)


class UdpListener:
    __slots__ = (
        "_batch",
        "_flush_scheduled",
        "_pmtu_default",
        "_reactor",
        "_send_sock",
        "_sock",
        "pipeline",
        "recv_errors",
        "send_errors",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        send_sock: socket.socket,
        pipeline: Pipeline,
    ) -> None:
        """``sock`` receives; ``send_sock`` (``sock`` itself, or a socket bound
        to the same address and port) sends the answers."""
        self._reactor = reactor_for(loop)
        self._sock = sock
        self._send_sock = send_sock
        self.pipeline = pipeline
        self.recv_errors = 0
        self.send_errors = 0
        sock.setblocking(False)
        send_sock.setblocking(False)
        self._batch = Batch(sock, BATCH, RECV_SIZE, SEND_SIZE, send_sock)
        self._flush_scheduled = False
        self._pmtu_default = send_sock.getsockopt(*self._pmtu_option())

    def start(self) -> None:
        self._reactor.add_reader(self._sock.fileno(), self._on_readable)

    def stop(self) -> None:
        """Stop reading (drain begins); the socket stays open for late answers."""
        self._reactor.remove_reader(self._sock.fileno())

    def close(self) -> None:
        self._flush()
        self._sock.close()
        self._send_sock.close()

    def dont_fragment(self, max_udp_size: int) -> None:
        """Never fragment answers when none needs it (see the module docstring);
        called with every configuration the worker serves."""
        mode = PMTUDISC_PROBE if max_udp_size <= DONT_FRAGMENT_UP_TO else self._pmtu_default
        self._send_sock.setsockopt(*self._pmtu_option(), mode)

    def _pmtu_option(self) -> tuple[int, int]:
        if self._send_sock.family == socket.AF_INET6:
            return socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER
        return socket.IPPROTO_IP, IP_MTU_DISCOVER

    def reply(self, client: int, received: float) -> Reply:
        """For a cache miss: ``client`` is the datagram's index in the current batch."""
        sockaddr = self._batch.sender(client)
        first, last = self._batch.address_slice
        return UdpReply(self, sockaddr, sockaddr[first:last], received)

    def send_later(self, answer: bytes, sockaddr: bytes) -> None:
        """Queue an answer that completed outside a read batch (an upstream
        answer). Answers completed in the same batch of events leave in one
        sendmmsg, flushed after it."""
        batch = self._batch
        if not batch.queue(answer, sockaddr):
            self._send_alone(answer, sockaddr)
            return
        if batch.pending >= batch.size:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._reactor.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.send_errors += self._batch.flush()

    def _send_alone(self, answer: bytes, sockaddr: bytes) -> None:
        try:
            self._send_sock.sendto(answer, self._batch.address_of(sockaddr))
        except OSError:
            self.send_errors += 1

    def _on_readable(self) -> None:
        batch = self._batch
        try:
            received = batch.receive()
        except OSError:
            # e.g. ICMP errors queued on the socket: nothing to answer.
            self.recv_errors += 1
            return
        # Methods are called on their objects, not bound to locals: compiled,
        # that is a direct C call; a bound method is a generic call.
        pipeline = self.pipeline
        now = monotonic()  # one clock reading per batch: TTL ageing is per second
        answered = 0
        for index in range(len(received) // 2):
            answer = pipeline.handle(
                received[2 * index], received[2 * index + 1], True, self, index, now
            )
            if answer is not None:
                answered += 1
                if batch.pending >= batch.size:
                    self._flush()  # late answers filled the buffer before this batch
                if not batch.queue(answer, index):
                    self._send_alone(answer, batch.sender(index))
        self._flush()
        if answered:
            # The batch's answers are in the kernel: each took at most this long.
            pipeline.counters.udp_fast.observe(monotonic() - now, answered)
