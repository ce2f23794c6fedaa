"""Upstream sockets reused with random ports (RFC 5452), against a real upstream.

Each query still gets a random ID and a source port drawn at random among
at least ``MIN_CHOICE`` connected sockets on random ports; a socket serves at
most ``MAX_USES`` queries, and one that timed out or saw a forged answer is
never reused.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator

import pytest

from filterd.config import Endpoint, UpstreamConfig
from filterd.upstream.exchange import Exchange, UpstreamIO
from filterd.upstream.pool import UpstreamPool
from filterd.upstream.sockets import MAX_USES, MIN_CHOICE, UdpSockets
from tests.peers.authoritative import FakeUpstream

NAME = "pooled.example"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.add(NAME, "A", "192.0.2.53")
    with server:
        yield server


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class Resolver:
    """One ``UpstreamIO`` and pool, resolving ``NAME`` one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: FakeUpstream) -> None:
        host, port = upstream.endpoint.rsplit(":", 1)
        self.config = UpstreamConfig(
            servers=(Endpoint(host, int(port)),), timeout=0.3, attempts=2, deadline=2.0
        )
        self.loop = loop
        self.io = UpstreamIO(loop)
        self.pool = UpstreamPool(self.config)

    def resolve(self) -> str:
        """The failure reason, or "" when the upstream answered."""
        done: asyncio.Future[str] = self.loop.create_future()
        question = b"\x06pooled\x07example\x00\x00\x01\x00\x01"
        Exchange(
            self.io,
            self.pool,
            self.config,
            question,
            do=False,
            cd=False,
            done=lambda message, info, reason: done.set_result(reason),
        ).start()
        return self.loop.run_until_complete(asyncio.wait_for(done, 10))

    def close(self) -> None:
        self.io.close()


@pytest.fixture
def resolver(loop: asyncio.AbstractEventLoop, upstream: FakeUpstream) -> Iterator[Resolver]:
    resolver = Resolver(loop, upstream)
    yield resolver
    resolver.close()


def ports_of(upstream: FakeUpstream) -> list[int]:
    return [record.source_port for record in upstream.queries_for(NAME)]


def test_ports_are_drawn_among_several_and_retired_after_max_uses(
    resolver: Resolver, upstream: FakeUpstream
) -> None:
    queries = 12 * MAX_USES
    for _ in range(queries):
        assert resolver.resolve() == ""
    ports = ports_of(upstream)
    assert len(set(ports[:MIN_CHOICE])) == MIN_CHOICE  # one query at a time still opens a choice
    assert max(ports.count(port) for port in ports) <= MAX_USES
    assert queries // MAX_USES <= resolver.io.sockets.created < queries // 4  # mostly reused
    ids = [record.query_id for record in upstream.queries_for(NAME)]
    assert len(set(ids)) > 0.9 * len(ids)  # random 16-bit IDs: few repeats


def test_a_socket_that_saw_a_forged_answer_is_not_reused(
    resolver: Resolver, upstream: FakeUpstream
) -> None:
    upstream.behave(NAME, wrong_id=True, then_correct=True, times=1)
    for _ in range(4 * MIN_CHOICE):
        assert resolver.resolve() == ""  # the first: forgery ignored, real answer taken
    ports = ports_of(upstream)
    assert ports[0] not in ports[1:]
    assert len(set(ports[1:])) < len(ports) - 1  # the clean ones were reused


def test_a_socket_whose_attempt_timed_out_is_not_reused(
    resolver: Resolver, upstream: FakeUpstream
) -> None:
    upstream.behave(NAME, drop=True, times=1)
    for _ in range(4 * MIN_CHOICE):
        assert resolver.resolve() == ""  # the first: its second attempt answered
    ports = ports_of(upstream)
    assert ports[0] not in ports[1:]
    assert len(set(ports[1:])) < len(ports) - 1


def test_a_datagram_to_an_idle_socket_closes_it() -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    epoll = select.epoll()
    sockets = UdpSockets(epoll, lambda bound: 0)
    address = (int(socket.AF_INET), peer.getsockname())
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(peer.getsockname())
        sockets.adopt(address, sock)
        sockets.give_back(sock, clean=True)
        peer.sendto(b"unsolicited", sock.getsockname())
        ready = epoll.poll(5.0)
        assert [fd for fd, _ in ready] == [sock.fileno()]
        sockets.stray(sock.fileno())
        assert sock.fileno() == -1  # closed
        assert sockets.take(address) is None
    finally:
        sockets.close()
        epoll.close()
        peer.close()
