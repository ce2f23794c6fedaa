"""The kernel's side of ``filterd.listeners.mmsg``: ``mmsghdr`` arrays and the two calls.

This module holds everything that needs ctypes, so that ``mmsg.Batch``,
which runs per query, can be compiled with the query path (mypyc cannot
compile a module that defines ctypes structures):

- ``MessageArrays`` allocates a batch's buffers once: payloads, peer
  addresses, iovecs and two ``struct mmsghdr`` arrays, wired to each other,
  and hands them out as memoryviews and addresses;
- ``recvmmsg`` and ``sendmmsg`` are the system calls, from the C extension
  ``filterd.listeners._mmsgcall`` (built with the compiled query path: a
  ctypes foreign call costs 5,000-9,000 CPU instructions, and a query that
  wakes the worker alone makes two), or through ctypes with the same
  contract where the install found no C compiler: ``call(fd, msgvec, vlen,
  flags)`` returns the count, or ``-errno`` on failure;
- ``receive`` and ``stage``, from the same extension only, do ``Batch``'s
  per-datagram copies (see ``_mmsgcall.c``);
- ``epoll_waiter`` gives the hot loop its wait: the extension's
  ``epoll_wait`` or ``select.epoll.poll``, one contract.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import select
from collections.abc import Callable
from typing import Final

SOCKADDR_SIZE: Final = 28  # sizeof(struct sockaddr_in6), enough for both families

SystemCall = Callable[[int, int, int, int], int]
"""``call(fd, msgvec, vlen, flags)``: the count, or ``-errno`` on failure."""


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


MMSG_SIZE: Final = ctypes.sizeof(_MMsgHdr)
LENGTH_OFFSET: Final = _MMsgHdr.msg_len.offset
"""Where ``msg_len`` sits in an ``mmsghdr``."""
IOV_FIELDS: Final = ctypes.sizeof(_IOVec) // ctypes.sizeof(ctypes.c_ulong)
"""Machine words per iovec (size_t is unsigned long on Linux, LP64 or ILP32):
``iov_len`` of slot i is word ``IOV_FIELDS * i + 1`` of ``send_iov_words``."""


class MessageArrays:
    """A batch's buffers for ``size`` datagrams, allocated once and wired:
    message ``i`` of each array points at slot ``i`` of its payload and
    address buffers. They live as long as this object."""

    def __init__(self, size: int, recv_size: int, send_size: int, namelen: int) -> None:
        self._recv_buffer = ctypes.create_string_buffer(size * recv_size)
        self._send_buffer = ctypes.create_string_buffer(size * send_size)
        self._recv_names = ctypes.create_string_buffer(size * SOCKADDR_SIZE)
        self._send_names = ctypes.create_string_buffer(size * SOCKADDR_SIZE)
        self._recv_iov = (_IOVec * size)()
        self._send_iov = (_IOVec * size)()
        self._recv_msgs = (_MMsgHdr * size)()
        self._send_msgs = (_MMsgHdr * size)()
        iovec_size = ctypes.sizeof(_IOVec)
        for i in range(size):
            self._recv_iov[i].iov_base = ctypes.addressof(self._recv_buffer) + i * recv_size
            self._recv_iov[i].iov_len = recv_size
            self._send_iov[i].iov_base = ctypes.addressof(self._send_buffer) + i * send_size
            for msgs, names, iov in (
                (self._recv_msgs, self._recv_names, self._recv_iov),
                (self._send_msgs, self._send_names, self._send_iov),
            ):
                header = msgs[i].msg_hdr
                header.msg_name = ctypes.addressof(names) + i * SOCKADDR_SIZE
                header.msg_namelen = namelen
                header.msg_iov = ctypes.addressof(iov) + i * iovec_size
                header.msg_iovlen = 1
        self.payloads = memoryview(self._recv_buffer).cast("B")
        """Received datagram ``i`` starts at ``i * recv_size``."""
        self.names = memoryview(self._recv_names).cast("B")
        """The sender of datagram ``i`` (a raw sockaddr) at ``i * SOCKADDR_SIZE``."""
        self.out = memoryview(self._send_buffer).cast("B")
        self.out_names = memoryview(self._send_names).cast("B")
        self.recv_headers = memoryview(self._recv_msgs).cast("B")
        self.send_iov_words = memoryview(self._send_iov).cast("B").cast("L")
        self.recv_address = ctypes.addressof(self._recv_msgs)
        self.names_address = ctypes.addressof(self._recv_names)
        """Where ``names`` starts in memory (the sender of datagram ``i`` is at
        ``names_address + i * SOCKADDR_SIZE``)."""
        self.send_address = ctypes.addressof(self._send_msgs)


def _ctypes_calls() -> tuple[SystemCall, SystemCall]:
    """The calls through ctypes, for an install without the C extension."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    raw_recvmmsg = libc.recvmmsg
    raw_recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    raw_recvmmsg.restype = ctypes.c_int
    raw_sendmmsg = libc.sendmmsg
    raw_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    raw_sendmmsg.restype = ctypes.c_int

    def recvmmsg(fd: int, msgvec: int, vlen: int, flags: int) -> int:
        count: int = raw_recvmmsg(fd, msgvec, vlen, flags, None)
        return count if count >= 0 else -ctypes.get_errno()

    def sendmmsg(fd: int, msgvec: int, vlen: int, flags: int) -> int:
        count: int = raw_sendmmsg(fd, msgvec, vlen, flags)
        return count if count >= 0 else -ctypes.get_errno()

    return recvmmsg, sendmmsg


Receive = Callable[[int, int, int, int, int, int], list[bytes]]
"""``receive(fd, msgvec, vlen, flags, first, last)``: ``recvmmsg`` and, per
datagram, its payload and bytes ``first:last`` of its sender's sockaddr."""
Stage = Callable[[int, int, bytes, int, int | bytes], None]
"""``stage(msgvec, slot, answer, capacity, sender)``: an answer and its
destination (a sockaddr's address, or its bytes) into a send slot."""


EpollWait = Callable[[float, int], list[int]]
"""``wait(timeout, maxevents)``: the ready descriptors of one epoll set and
their event flags, flat (``[fd, flags, ...]``); ``timeout`` in seconds,
negative for no limit."""


def _system_calls() -> tuple[
    SystemCall,
    SystemCall,
    Receive | None,
    Stage | None,
    Callable[[int, float, int], list[int]] | None,
]:
    try:
        from filterd.listeners import _mmsgcall  # noqa: PLC0415 - optional, built with a compiler
    except ImportError:
        return (*_ctypes_calls(), None, None, None)
    return (
        _mmsgcall.recvmmsg,
        _mmsgcall.sendmmsg,
        _mmsgcall.receive,
        _mmsgcall.stage,
        _mmsgcall.wait,
    )


recvmmsg, sendmmsg, receive, stage, _wait = _system_calls()
"""``receive`` and ``stage``: ``mmsg.Batch``'s per-datagram copies in C, where
the extension is built (``None`` elsewhere: ``Batch`` copies through
memoryviews)."""
NATIVE_CALLS: Final = receive is not None
"""True when the C extension makes the calls (a compiled install)."""


def epoll_waiter(epoll: select.epoll) -> EpollWait:
    """The wait of ``epoll`` for the hot loop: the extension's ``wait`` on its
    descriptor where it is built (no tuple per event, no method lookup), else
    ``epoll.poll`` flattened."""
    if _wait is not None:
        return functools.partial(_wait, epoll.fileno())
    poll = epoll.poll

    def wait(timeout: float, maxevents: int) -> list[int]:
        events: list[int] = []
        for fd, flags in poll(timeout, maxevents):
            events += (fd, flags)
        return events

    return wait
