"""The worker's loop: hot readers in select(), asyncio served beside them, never starved."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from filterd.listeners.hotloop import HotLoop
from filterd.listeners.serving import HotSelector, reactor_for, serving_loop

GUARD = 10.0
"""Seconds before a test that hangs fails (a bound, not a speed assertion)."""


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = serving_loop()
    yield loop
    loop.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A receiving UDP socket and a sender connected to it, on loopback."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    yield receiver, sender
    receiver.close()
    sender.close()


def run(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> Any:
    return loop.run_until_complete(asyncio.wait_for(future, GUARD))


def test_hot_readers_deferred_calls_and_timers_run_on_the_loop(
    loop: asyncio.AbstractEventLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    receiver, sender = pair
    hot = reactor_for(loop)
    assert isinstance(hot, HotLoop)
    got: list[bytes] = []
    order: list[str] = []
    done = loop.create_future()

    def readable() -> None:
        got.append(receiver.recv(512))
        order.append("read")
        hot.call_soon(lambda: order.append("after batch"))
        if len(got) == 3:
            hot.call_later(0.01, lambda: done.set_result(order))

    hot.add_reader(receiver.fileno(), readable)
    for payload in (b"a", b"b", b"c"):
        sender.send(payload)
    assert run(loop, done)[-1] == "after batch"
    assert got == [b"a", b"b", b"c"]
    assert hot.remove_reader(receiver.fileno()) and not hot.remove_reader(receiver.fileno())


def test_asyncio_timers_fire_while_a_hot_reader_is_always_ready(
    loop: asyncio.AbstractEventLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    receiver, sender = pair
    sender.send(b"never read")  # level-triggered: readable on every poll
    calls = 0

    def readable() -> None:
        nonlocal calls
        calls += 1

    reactor_for(loop).add_reader(receiver.fileno(), readable)
    run(loop, asyncio.ensure_future(asyncio.sleep(0.05), loop=loop))
    assert calls > 1  # served in a loop, yet asyncio's timer was not starved


def after_hot_read(
    loop: asyncio.AbstractEventLoop,
    pair: tuple[socket.socket, socket.socket],
    give: Callable[[asyncio.Future[str]], object],
) -> str:
    """What ``give`` (called in a hot callback, asyncio asleep for an hour)
    makes asyncio set on the future."""
    receiver, sender = pair
    loop.call_later(3600, lambda: None)
    done: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        receiver.recv(512)
        give(done)

    reactor_for(loop).add_reader(receiver.fileno(), readable)
    sender.send(b"x")
    result: str = run(loop, done)
    return result


def test_work_a_hot_callback_gives_asyncio_runs_without_waiting_for_its_timers(
    loop: asyncio.AbstractEventLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    async def task() -> str:
        return "ran"

    def give(done: asyncio.Future[str]) -> None:
        loop.create_task(task()).add_done_callback(lambda t: done.set_result(t.result()))

    assert after_hot_read(loop, pair, give) == "ran"


def test_a_new_earlier_asyncio_timer_is_honoured(
    loop: asyncio.AbstractEventLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    def give(done: asyncio.Future[str]) -> None:
        loop.call_later(0.01, lambda: done.set_result("timer"))

    assert after_hot_read(loop, pair, give) == "timer"


def test_an_exception_in_a_hot_callback_is_reported_and_the_loop_goes_on(
    loop: asyncio.AbstractEventLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    receiver, sender = pair
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    done = loop.create_future()
    seen = 0

    def readable() -> None:
        nonlocal seen
        receiver.recv(512)
        seen += 1
        if seen == 1:
            raise RuntimeError("bug")
        done.set_result(seen)

    reactor_for(loop).add_reader(receiver.fileno(), readable)
    sender.send(b"1")
    sender.send(b"2")
    assert run(loop, done) == 2
    assert isinstance(reported[0]["exception"], RuntimeError)


def test_asyncio_file_descriptors_still_work(
    loop: asyncio.AbstractEventLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    receiver, sender = pair
    done = loop.create_future()
    loop.add_reader(receiver.fileno(), lambda: done.set_result(receiver.recv(512)))
    with pytest.raises(ValueError, match="registered with asyncio"):
        reactor_for(loop).add_reader(receiver.fileno(), lambda: None)
    sender.send(b"plain asyncio")
    assert run(loop, done) == b"plain asyncio"
    assert loop.remove_reader(receiver.fileno())


def test_without_a_view_of_asyncio_select_polls_once_with_its_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A selector attached to no loop cannot see asyncio's pending work: it
    serves one batch of events (or waits out the timeout) and returns."""
    receiver, sender = pair
    selector = HotSelector()
    got: list[bytes] = []
    try:
        selector.hot.add_reader(receiver.fileno(), lambda: got.append(receiver.recv(512)))
        assert selector.select(0.01) == []  # nothing came: back after the timeout
        sender.send(b"one")
        for _ in range(100):  # bounded: each call waits at most 0.05 s
            if got:
                break
            selector.select(0.05)
        assert got == [b"one"]
    finally:
        selector.close()


def test_a_plain_loop_is_its_own_reactor() -> None:
    plain = asyncio.new_event_loop()
    try:
        assert reactor_for(plain) is plain
    finally:
        plain.close()
