"""Upstream UDP sockets, reused: a random source port per query without a new socket each.

RFC 5452 §9-10: a forwarder's answer is forged by guessing the query's ID
and source port, so both must be random per query, and an answer is
accepted only from the address asked, for the ID and question asked
(``filterd.wire.answer.inspect_response`` checks the last two, the
connected socket the first). Opening a socket per query gives each query a
fresh random port, but costs ``socket``, ``connect``, an epoll registration
and ``close``: four system calls and two Python objects per cache miss,
about a fifth of a miss's CPU (``bench/misses``).

Here each upstream address has a pool of connected sockets, each on an
ephemeral port the kernel chose at random when it was connected, and each
registered with the upstream epoll set once. A query takes a socket chosen
uniformly at random among the idle ones, and a new one is opened while
fewer than ``MIN_CHOICE`` are idle, so that even one query at a time has its
port drawn among at least that many (an observer cannot tell which port the
next query uses). It gives the socket back only when its exchange ended
cleanly: the matching answer arrived and no answer that failed the checks
(a forgery attempt, or a late answer to an earlier query) was seen on it.
A socket whose attempt timed out, failed or saw a mismatch is closed, as
is every socket after ``MAX_USES`` queries, so ports keep changing; at most
``MAX_IDLE`` sockets per upstream wait idle (descriptors stay bounded by the
exchanges in flight plus these). A datagram arriving on an idle socket is
read and dropped, and the socket closed: nothing legitimate is expected
there.
"""

from __future__ import annotations

import _socket
import select
from collections.abc import Callable
from typing import Final

MAX_USES: Final = 32
"""Queries a socket (and so its source port) serves before it is closed."""
MAX_IDLE: Final = 1024
"""Idle sockets kept per upstream address."""
MIN_CHOICE: Final = 8
"""Idle sockets a query draws its port among, at least (fewer: a new one is opened)."""
UDP_TYPE: Final = _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
"""Non-blocking and close-on-exec from creation: no fcntl calls per socket."""

Address = tuple[int, tuple[str, int]]
"""(address family, socket address) of one upstream."""


class UdpSockets:
    """Connected UDP sockets per upstream address; see the module docstring."""

    __slots__ = ("_by_fd", "_epoll", "_idle", "_random_below", "_uses", "created", "reused")

    def __init__(self, epoll: select.epoll, random_below: Callable[[int], int]) -> None:
        """``epoll``: where every socket is registered once; ``random_below(n)``:
        a random integer in [0, n) from a CSPRNG."""
        self._epoll = epoll
        self._random_below = random_below
        self._idle: dict[Address, list[_socket.socket]] = {}
        self._uses: dict[int, int] = {}
        self._by_fd: dict[int, tuple[Address, _socket.socket]] = {}
        self.created = 0
        self.reused = 0

    def take(self, address: Address) -> _socket.socket | None:
        """A random idle socket for ``address``, or ``None``: open one and ``adopt`` it."""
        idle = self._idle.get(address)
        if idle is None or len(idle) < MIN_CHOICE:
            return None
        index = self._random_below(len(idle))
        idle[index], idle[-1] = idle[-1], idle[index]
        self.reused += 1
        return idle.pop()

    def adopt(self, address: Address, sock: _socket.socket) -> None:
        """A socket just connected to ``address``: watch it (raises ``OSError``)."""
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._uses[fd] = 0
        self._by_fd[fd] = (address, sock)
        self.created += 1

    def give_back(self, sock: _socket.socket, *, clean: bool) -> None:
        """The exchange on ``sock`` ended: keep it for another query if it ended
        ``clean`` and has uses left, else close it."""
        fd = sock.fileno()
        entry = self._by_fd.get(fd)
        uses = self._uses.get(fd, MAX_USES) + 1
        if entry is not None and clean and uses < MAX_USES:
            idle = self._idle.setdefault(entry[0], [])
            if len(idle) < MAX_IDLE:
                self._uses[fd] = uses
                idle.append(sock)
                return
        self._close(fd, sock)

    def stray(self, fd: int) -> None:
        """An idle socket became readable: drop what came and close it."""
        entry = self._by_fd.get(fd)
        if entry is None:
            return
        address, sock = entry
        idle = self._idle.get(address, [])
        if sock in idle:
            idle.remove(sock)
        self._close(fd, sock)

    def _close(self, fd: int, sock: _socket.socket) -> None:
        self._uses.pop(fd, None)
        self._by_fd.pop(fd, None)
        sock.close()  # also leaves the epoll set

    def close(self) -> None:
        """Close every socket, idle or in use (the exchanges were aborted first)."""
        owned = [sock for _, sock in self._by_fd.values()]
        self._by_fd, self._uses, self._idle = {}, {}, {}
        for sock in owned:
            sock.close()
