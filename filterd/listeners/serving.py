"""The worker's asyncio loop, built on the hot path's epoll set.

asyncio builds a loop on any ``selectors.BaseSelector``; ``HotSelector`` is
one whose ``select`` is ``HotLoop.serve`` (``filterd.listeners.hotloop``):
hot readers (UDP queries, upstream answers) are served inside it, and only
asyncio's own file descriptors come back to asyncio, as ``SelectorKey``s.
This module is the thin part that must stay interpreted: a compiled class
cannot subclass ``selectors.BaseSelector``, so the loop itself lives in
``HotLoop`` (compiled with the query path) and this class only keeps
asyncio's keys.
"""

from __future__ import annotations

import asyncio
import select
import selectors
import weakref
from collections.abc import Mapping
from typing import Any

from filterd.listeners.hotloop import HotLoop, Reactor


class HotSelector(selectors.BaseSelector):
    """asyncio's selector over a ``HotLoop``; see the module docstring."""

    def __init__(self) -> None:
        self.hot = HotLoop()
        self._keys: dict[int, selectors.SelectorKey] = {}

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = []
        for fd, flags in self.hot.serve(timeout):
            key = self._keys.get(fd)
            if key is None:
                continue
            events = 0
            if flags & ~select.EPOLLIN:
                events |= selectors.EVENT_WRITE
            if flags & ~select.EPOLLOUT:
                events |= selectors.EVENT_READ
            ready.append((key, events & key.events))
        return ready

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self.hot.watch(fd, _epoll_mask(events))
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys.pop(fd)
        self.hot.unwatch(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys[fd]
        if events != key.events:
            self.hot.rewatch(fd, _epoll_mask(events))
        key = key._replace(events=events, data=data)
        self._keys[fd] = key
        return key

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[_fd(fileobj)]

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)

    def close(self) -> None:
        self._keys.clear()
        self.hot.close()


def _fd(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"invalid file descriptor {fd}")
    return fd


def _epoll_mask(events: int) -> int:
    mask = 0
    if events & selectors.EVENT_READ:
        mask |= select.EPOLLIN
    if events & selectors.EVENT_WRITE:
        mask |= select.EPOLLOUT
    return mask


_HOT_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HotLoop] = (
    weakref.WeakKeyDictionary()
)


def serving_loop() -> asyncio.AbstractEventLoop:
    """An asyncio event loop whose selector runs the hot path (``asyncio.Runner``'s
    ``loop_factory`` in the worker)."""
    selector = HotSelector()
    loop = asyncio.SelectorEventLoop(selector)
    selector.hot.attach(loop)
    _HOT_LOOPS[loop] = selector.hot
    return loop


def reactor_for(loop: asyncio.AbstractEventLoop) -> Reactor:
    """The hot path of ``loop`` if it is a ``serving_loop``, else the loop itself."""
    hot = _HOT_LOOPS.get(loop)
    return hot if hot is not None else loop
