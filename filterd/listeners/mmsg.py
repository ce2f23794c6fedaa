"""Batched UDP I/O: a batch of datagrams per recvmmsg(2), answers per sendmmsg(2).

Python's socket module has no batched calls, and on the machines filterd
runs on a loopback or NIC ``sendto`` costs 5-15 µs of kernel time, much of
it the wake-up of the receiver; one ``sendmmsg`` for a batch of answers
wakes each receiver once. Measured with a minimal responder doing a few
microseconds of Python work per packet: 89-118k queries/s with
``recvfrom``/``sendto`` against 137-141k with these calls.

``Batch`` owns preallocated buffers (payloads, peer addresses, iovecs and
``mmsghdr`` arrays, from ``filterd.listeners.mmsgcalls``, which also makes
the two system calls) so that a batch allocates nothing in C and little in
Python: a received datagram is two bytes objects (its payload, its sender's
address), an answer is copied into the send buffer. Where the C extension
is built, both copies are one C call each (``mmsgcalls.receive`` per batch,
``mmsgcalls.stage`` per answer); elsewhere they go through memoryviews,
which cost a slice object, a memoryview and a method call per copy. Linux
only. Compiled with the query path (``filterd/compiled.py``).
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Final

from filterd.listeners.mmsgcalls import (
    IOV_FIELDS,
    LENGTH_OFFSET,
    MMSG_SIZE,
    SOCKADDR_SIZE,
    MessageArrays,
    receive,
    recvmmsg,
    sendmmsg,
    stage,
)

__all__ = ["SOCKADDR_SIZE", "Batch"]

MSG_DONTWAIT: Final = 0x40
_BUFFER_FULL: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR})
"""Errors of ``sendmmsg`` that end a batch (``Batch.flush``); EINTR with them:
the answers are dropped as on a full buffer, never sent twice."""


class Batch:
    """Buffers for receiving and answering up to ``size`` datagrams per call."""

    def __init__(
        self,
        sock: socket.socket,
        size: int,
        recv_size: int,
        send_size: int,
        send: socket.socket | None = None,
    ) -> None:
        """Receive on ``sock``; send on ``send`` (default: ``sock``), a socket
        bound to the same address and port (``filterd.supervisor.sockets``)."""
        self.fd = sock.fileno()
        self.size = size
        self.recv_size = recv_size
        self.send_size = send_size
        self.v6 = sock.family == socket.AF_INET6
        # Where the packed client address sits inside a sockaddr_in / sockaddr_in6.
        self.address_slice = (8, 24) if self.v6 else (4, 8)
        arrays = MessageArrays(size, recv_size, send_size, SOCKADDR_SIZE if self.v6 else 16)
        self._arrays = arrays
        self.payloads = arrays.payloads
        self.names = arrays.names
        self.senders = [
            self.names[i * SOCKADDR_SIZE : (i + 1) * SOCKADDR_SIZE] for i in range(size)
        ]
        """``senders[i]``: the raw sockaddr of received datagram ``i``, a view that
        stays valid until the next ``receive`` (``sender`` copies it)."""
        self._out = arrays.out
        self._out_names = arrays.out_names
        # msg_len of message i, as 32-bit words of the mmsghdr array (both
        # the size and the offset are multiples of 4 on every Linux ABI).
        self._msg_lengths = arrays.recv_headers.cast("I")
        self._length_at = LENGTH_OFFSET // 4
        self._length_stride = MMSG_SIZE // 4
        self._iov_length_at = IOV_FIELDS
        self._recvmmsg = recvmmsg
        self._sendmmsg = sendmmsg
        self._iov_lengths = arrays.send_iov_words
        # The constant arguments of the per-query calls into the C extension
        # (or ctypes), kept as the int objects they are: typed ``Any`` so that
        # the compiled class stores them boxed. An ``int`` attribute is stored
        # unboxed and boxed anew at every such call: for a lone query that
        # was five int objects allocated and freed and sixteen boxings, about
        # 1,000 of its 8,800 user-space instructions (bench/README.md, "Sixth
        # round").
        self._receive_args: tuple[Any, ...] = (
            self.fd, arrays.recv_address, size, MSG_DONTWAIT, *self.address_slice,
        )  # fmt: skip
        self._send_fd: Any = (sock if send is None else send).fileno()
        self._send_address: Any = arrays.send_address
        self._send_capacity: Any = send_size
        self._dont_wait: Any = MSG_DONTWAIT
        self._sender_addresses: list[Any] = [
            arrays.names_address + i * SOCKADDR_SIZE for i in range(size)
        ]
        """The address of received datagram ``i``'s sockaddr, for ``stage``."""
        self._receive = receive
        self._stage = stage
        self.pending = 0

    def receive(self) -> list[bytes]:
        """Read up to ``size`` datagrams; return, for each, its payload and its
        sender's packed IP address (``[payload, address, ...]``; [] if none
        waiting).

        Datagram ``i``'s sender, as a raw sockaddr, is ``senders[i]`` until
        the next ``receive`` (``sender`` copies it)."""
        native = self._receive
        if native is not None:
            return native(*self._receive_args)
        first, last = self.address_slice
        count = self._recvmmsg(*self._receive_args[:4])
        if count <= 0:
            if count < 0 and -count not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                raise OSError(-count, "recvmmsg failed")
            return []
        lengths = self._msg_lengths
        at = self._length_at
        stride = self._length_stride
        payloads = self.payloads
        names = self.names
        out: list[bytes] = []
        for i in range(count):
            offset = i * self.recv_size
            out.append(payloads[offset : offset + lengths[at + i * stride]].tobytes())
            name = i * SOCKADDR_SIZE
            out.append(names[name + first : name + last].tobytes())
        return out

    def sender(self, index: int) -> bytes:
        """The raw sockaddr of received datagram ``index`` (kept for a later answer)."""
        return self.senders[index].tobytes()

    def queue(self, answer: bytes, sender: int | bytes) -> bool:
        """Queue ``answer`` for ``sender``: the index of a datagram of the last
        ``receive`` (answered to whoever sent it), or a raw sockaddr (``sender``
        kept it); False if it does not fit a slot (the caller sends it alone).

        The caller flushes when ``pending`` reaches ``size``."""
        size = len(answer)
        if size > self.send_size:
            return False
        if isinstance(sender, int) and not 0 <= sender < self.size:
            raise IndexError(f"no received datagram {sender}")
        slot = self.pending
        native = self._stage
        if native is not None:
            if isinstance(sender, int):
                address = self._sender_addresses[sender]
                native(self._send_address, slot, answer, self._send_capacity, address)
            else:
                native(self._send_address, slot, answer, self._send_capacity, sender)
        else:
            offset = slot * self.send_size
            self._out[offset : offset + size] = answer
            name = slot * SOCKADDR_SIZE
            self._out_names[name : name + SOCKADDR_SIZE] = (
                self.senders[sender] if isinstance(sender, int) else sender
            )
            self._iov_lengths[slot * self._iov_length_at + 1] = size
        self.pending = slot + 1
        return True

    def flush(self) -> int:
        """Send every queued answer; return how many could not be sent."""
        pending = self.pending
        if not pending:
            return 0
        self.pending = 0
        sent = self._sendmmsg(self._send_fd, self._send_address, pending, self._dont_wait)
        if sent == pending:
            return 0
        return self._send_rest(sent, pending)

    def _send_rest(self, sent: int, pending: int) -> int:
        """After a ``sendmmsg`` of ``pending`` queued answers that stopped short
        (``sent``: the count sent, or ``-errno`` for the first): how many
        could not be sent.

        sendmmsg(2) stops at the first message the kernel refuses, and when
        some were sent before it, its error is lost. A refusal of one
        destination (a firewall's output rule, a route, a port the kernel
        will not send to, a path MTU) must not cost the other clients of the
        batch their answers, so that message is skipped and the rest is sent
        again. A full socket buffer (EAGAIN, ENOBUFS) ends the batch: every
        later message would meet it too (clients retry)."""
        first = 0
        failed = 0
        while True:
            if sent < 0:
                if -sent in _BUFFER_FULL:
                    return failed + pending - first
                sent = 0
            first += sent + 1  # past the message refused
            failed += 1
            if first >= pending:
                return failed
            address = self._send_address + first * MMSG_SIZE
            sent = self._sendmmsg(self._send_fd, address, pending - first, self._dont_wait)
            if sent == pending - first:
                return failed

    def address_of(self, sockaddr: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
        """A raw sockaddr as a Python socket address (for a lone ``sendto``)."""
        port = int.from_bytes(sockaddr[2:4], "big")
        if self.v6:
            host = socket.inet_ntop(socket.AF_INET6, sockaddr[8:24])
            flow = int.from_bytes(sockaddr[4:8], "big")
            return (host, port, flow, int.from_bytes(sockaddr[24:28], "little"))
        return (socket.inet_ntop(socket.AF_INET, sockaddr[4:8]), port)
