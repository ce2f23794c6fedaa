"""The worker's event loop: the query path on bare epoll, asyncio beside it.

A UDP query that wakes a worker on its own (any rate below saturation) pays
the event loop's fixed cost per wake-up. asyncio's is about 10 µs of CPU
here: one ``_run_once`` pass (timer heap, a ``Handle`` per ready file
descriptor, its ``Context.run``), against Unbound's 3 µs for the whole
query. That was the structural part of filterd's p50 at 10k qps being
1.2-1.7x Unbound's (bench/README.md, ``bench/floor``).

``HotLoop`` is the epoll set behind the worker's asyncio loop: the loop's
selector (``filterd.listeners.serving.HotSelector``; asyncio lets a loop be
built on any ``selectors.BaseSelector``) hands each ``select`` to
``HotLoop.serve``. Besides asyncio's own file descriptors, the one epoll set
holds *hot* readers: the UDP listening sockets and the upstream exchanges'
epoll set. Their callbacks run inside ``serve`` itself, with no ``Handle``,
and ``serve`` keeps serving them in a bare
``epoll.poll`` loop, with its own timer heap (the upstream deadline tick) and
after-batch callbacks (flushing late UDP answers in one ``sendmmsg``), for as
long as asyncio has nothing to do: it returns to asyncio when an asyncio file
descriptor is ready, when asyncio's timeout (its next timer) has passed, and
when a hot callback gave asyncio work (a callback made ready, or a timer
earlier than the one it was waiting for: a TCP fallback task, a TCP
connection's idle timer). asyncio keeps what it earns its keep with: the
control channel, TCP (RFC 7766 framing, idle and message timeouts, flow
control), signals, probes and the drain.

The wait itself is ``filterd.listeners.mmsgcalls.epoll_waiter``'s: the C
extension's ``epoll_wait``, which hands back ready descriptors and flags as
one flat list (``select.epoll.poll``, the fallback, builds a tuple per
event).

Hot callbacks and asyncio callbacks run on one thread, one at a time: no
locks enter the query path. The check for asyncio's pending work reads the
loop's ready queue and timer heap (``_ready``, ``_scheduled``: attributes of
CPython's ``BaseEventLoop`` since 3.4); on a loop without them ``serve``
returns after every batch, which is correct and only slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import select
from collections.abc import Callable
from time import monotonic
from typing import Any, Final, Protocol

from filterd.listeners.mmsgcalls import epoll_waiter

log = logging.getLogger("filterd.hotloop")

MAX_EVENTS: Final = 256
Callback = Callable[[], object]


class Reactor(Protocol):
    """What the query path needs from a loop: readers, timers, deferred calls.

    Both ``HotLoop`` (the worker's hot path) and an asyncio event loop
    (tests, tools) provide it."""

    def add_reader(self, fd: int, callback: Callback) -> object: ...

    def remove_reader(self, fd: int) -> bool: ...

    def call_later(self, delay: float, callback: Callback) -> object: ...

    def call_soon(self, callback: Callback) -> object: ...


class HotTimer:
    """A hot-path timer; ``cancel`` makes it a no-op."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callback | None) -> None:
        self.callback = callback

    def cancel(self) -> None:
        self.callback = None


class HotLoop:
    """The epoll set of the worker's loop: hot readers served in ``serve``, and
    asyncio's file descriptors reported back to its selector
    (``filterd.listeners.serving.HotSelector``); see the module docstring.

    A plain class rather than the selector itself so that it is compiled
    with the query path (``filterd/compiled.py``): a compiled class cannot
    subclass ``selectors.BaseSelector``."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._wait = epoll_waiter(self._epoll)
        self._hot: dict[int, Callback] = {}
        self._timers: list[tuple[float, int, HotTimer]] = []
        self._sequence = itertools.count()
        self._soon: list[Callback] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asyncio_ready: Any = None
        self._asyncio_timers: Any = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop this serves (for its pending work and error reports)."""
        self._loop = loop
        self._asyncio_ready = getattr(loop, "_ready", None)
        self._asyncio_timers = getattr(loop, "_scheduled", None)

    # --------------------------------------------------------- the hot path

    def add_reader(self, fd: int, callback: Callback) -> None:
        if fd in self._hot:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except FileExistsError:  # in the one epoll set but not hot: asyncio's
                raise ValueError(f"fd {fd} is registered with asyncio") from None
        self._hot[fd] = callback

    def remove_reader(self, fd: int) -> bool:
        if self._hot.pop(fd, None) is None:
            return False
        with contextlib.suppress(OSError):  # closed already: closing left the epoll set
            self._epoll.unregister(fd)
        return True

    def call_later(self, delay: float, callback: Callback) -> HotTimer:
        timer = HotTimer(callback)
        heapq.heappush(self._timers, (monotonic() + delay, next(self._sequence), timer))
        return timer

    def call_soon(self, callback: Callback) -> None:
        """Run ``callback`` after the current batch of events (before the next poll)."""
        self._soon.append(callback)

    def _run(self, callback: Callback) -> None:
        try:
            callback()
        except Exception as exc:
            self._report(callback, exc)

    def _report(self, callback: Callback, exc: Exception) -> None:
        """A bug must not stop the loop: asyncio's exception handler logs it."""
        if self._loop is not None:
            self._loop.call_exception_handler(
                {"message": f"hot-path callback {callback!r} failed", "exception": exc}
            )
        else:
            log.exception("hot-path callback %r failed", callback, exc_info=exc)

    def _run_due(self) -> None:
        """Due timers, then deferred calls (which may queue more deferred calls)."""
        timers = self._timers
        if timers and timers[0][0] <= monotonic():
            now = monotonic()
            while timers and timers[0][0] <= now:
                callback = heapq.heappop(timers)[2].callback
                if callback is not None:
                    self._run(callback)
        while self._soon:
            soon, self._soon = self._soon, []
            for callback in soon:
                self._run(callback)

    def serve(self, timeout: float | None) -> list[tuple[int, int]]:
        """Serve hot readers until asyncio has work or ``timeout`` (None: no
        limit) has passed; return asyncio's ready file descriptors and their
        epoll flags."""
        now = monotonic()
        forever = timeout is None
        deadline = 0.0 if timeout is None else now + max(timeout, 0.0)
        asyncio_ready, asyncio_timers = self._asyncio_ready, self._asyncio_timers
        watching = asyncio_ready is not None and asyncio_timers is not None
        # asyncio's next timer when it called us: an earlier one is new work.
        first = asyncio_timers[0] if watching and asyncio_timers else None
        now_only = watching and bool(asyncio_ready)
        once = not watching  # cannot see asyncio's work: one poll, then back
        wait_for = self._wait
        hot = self._hot
        timers = self._timers
        if self._soon or (timers and timers[0][0] <= now):
            self._run_due()
        while True:
            if now_only:
                wait = 0.0
            elif timers:
                until = timers[0][0] if forever else min(deadline, timers[0][0])
                wait = until - now if until > now else 0.0
            elif forever:
                wait = -1.0
            else:
                wait = deadline - now if deadline > now else 0.0
            ready: list[tuple[int, int]] = []
            events = wait_for(wait, MAX_EVENTS)
            for index in range(0, len(events), 2):
                fd = events[index]
                callback = hot.get(fd)
                if callback is None:
                    ready.append((fd, events[index + 1]))  # asyncio's (its selector has the key)
                    continue
                try:
                    callback()
                except Exception as exc:
                    self._report(callback, exc)
            now = monotonic()
            if self._soon or (timers and timers[0][0] <= now):
                self._run_due()
            if ready or now_only or once or asyncio_ready:
                return ready
            if asyncio_timers and asyncio_timers[0] is not first:
                top = asyncio_timers[0]
                if first is None or top.when() < first.when():
                    return ready  # a hot callback gave asyncio an earlier timer
                first = top
            if not forever and now >= deadline:
                return ready

    # ------------------------------------------------- asyncio's descriptors

    def watch(self, fd: int, mask: int) -> None:
        """Report ``fd`` to asyncio when ready for ``mask`` (epoll flags).
        asyncio's own registrations are its selector's to keep track of."""
        if fd in self._hot:
            raise KeyError(f"fd {fd} is already registered")
        self._epoll.register(fd, mask)

    def rewatch(self, fd: int, mask: int) -> None:
        self._epoll.modify(fd, mask)

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # closed already
            self._epoll.unregister(fd)

    def close(self) -> None:
        self._hot.clear()
        self._epoll.close()
