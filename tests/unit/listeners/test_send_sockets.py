"""Send sockets: every query reaches a receiving socket, answers leave from the
same address and port, and unfragmentable answers carry DF (RFC 9715)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from filterd.config.load import parse_config
from filterd.listeners.serving import reactor_for, serving_loop
from filterd.listeners.steer import question_worker
from filterd.listeners.udp import (
    IP_MTU_DISCOVER,
    IPV6_MTU_DISCOVER,
    PMTUDISC_PROBE,
    UdpListener,
)
from filterd.pipeline.pipeline import Pipeline
from filterd.supervisor.sockets import WorkerSockets, bind_sockets
from tests.unit.pipeline.test_refused import one_name_pipeline


def bound(workers: int, host: str = "127.0.0.1") -> list[WorkerSockets]:
    listen = f"[{host}]:0" if ":" in host else f"{host}:0"
    config = parse_config(
        f"server: {{listen: ['{listen}'], workers: {workers}, tcp: false}}\n"
        "upstream: {servers: ['127.0.0.1']}\n"
    )
    return bind_sockets(config)


@pytest.fixture(params=[1, 3], ids=["one-worker", "three-workers"])
def sockets(request: pytest.FixtureRequest) -> Iterator[list[WorkerSockets]]:
    workers = bound(request.param)
    try:
        yield workers
    finally:
        for worker in workers:
            worker.close()


def queries(count: int) -> Iterator[bytes]:
    rng = random.Random(11)
    for i in range(count):
        name = f"host{rng.randrange(10_000)}-{i}.example"
        wire = dns.message.make_query(name, rng.choice(["A", "AAAA", "MX"])).to_wire()
        yield wire if i % 20 else wire[: rng.randrange(12)]  # some cut short: malformed


def test_every_worker_has_a_send_socket_on_the_receiving_port(
    sockets: list[WorkerSockets],
) -> None:
    port = sockets[0].udp[0].getsockname()[1]
    for worker in sockets:
        [send] = worker.udp_send
        assert send is not None
        assert send.getsockname() == worker.udp[0].getsockname() == ("127.0.0.1", port)
        assert send.fileno() in worker.fds()


def test_no_query_ever_reaches_a_send_socket(sockets: list[WorkerSockets]) -> None:
    receiving = [worker.udp[0] for worker in sockets]
    sending = [send for worker in sockets for send in worker.udp_send if send is not None]
    assert len(sending) == len(receiving)
    port = receiving[0].getsockname()[1]
    for payload in queries(300):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # a new source port
            client.sendto(payload, ("127.0.0.1", port))
            ready, _, _ = select.select(receiving + sending, [], [], 5.0)
        assert len(ready) == 1, "one datagram, one socket"
        assert ready[0] in receiving, "a send socket was given a query"
        assert ready[0].recv(4096) == payload
        assert receiving.index(ready[0]) == question_worker(payload, len(receiving))


@pytest.fixture
def pipeline_on(tmp_path: Path) -> Iterator[tuple[Pipeline, asyncio.AbstractEventLoop]]:
    """A real pipeline (one blocked name, answered without going upstream) on
    the worker's own loop."""
    loop = serving_loop()
    allow = '"127.0.0.0/8", "::1/128"'
    try:
        with one_name_pipeline(tmp_path, loop, allow, reactor_for(loop)) as pipeline:
            yield pipeline, loop
    finally:
        loop.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_answers_leave_from_the_queried_port_unfragmentable_up_to_1400(
    host: str, pipeline_on: tuple[Pipeline, asyncio.AbstractEventLoop]
) -> None:
    pipeline, loop = pipeline_on
    workers = bound(1, host)
    try:
        receive, send = workers[0].udp[0], workers[0].udp_send[0]
        assert send is not None
        listener = UdpListener(loop, receive, send, pipeline)
        asked = receive.getsockname()
        option = (
            (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER)
            if ":" in host
            else (socket.IPPROTO_IP, IP_MTU_DISCOVER)
        )
        default = send.getsockopt(*option)
        listener.dont_fragment(1232)
        assert send.getsockopt(*option) == PMTUDISC_PROBE
        listener.dont_fragment(1400)
        assert send.getsockopt(*option) == PMTUDISC_PROBE
        listener.dont_fragment(1401)  # the operator says fragments pass: the kernel's way
        assert send.getsockopt(*option) == default != PMTUDISC_PROBE
        listener.dont_fragment(1232)

        listener.start()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        query = dns.message.make_query("www.blocked.example", "A")
        with socket.socket(family, socket.SOCK_DGRAM) as client, raw_udp(family) as raw:
            client.setblocking(False)
            client.sendto(query.to_wire(), asked)
            answer, source = loop.run_until_complete(
                asyncio.wait_for(loop.sock_recvfrom(client, 512), 5.0)
            )
            header = ip_header_of_answer(raw, asked[1])
        listener.stop()
        listener.close()
    finally:
        for worker in workers:
            worker.close()
    assert source[:2] == asked[:2], "the answer must come from the port asked"
    message = dns.message.from_wire(answer)
    assert message.id == query.id and message.rcode() == dns.rcode.NXDOMAIN
    if header is not None:  # seen on the wire (IPv4, with CAP_NET_RAW)
        flags_and_offset = int.from_bytes(header[6:8], "big")
        assert flags_and_offset == 0x4000, "DF set, not a fragment"
        # Linux gives an ID only to a datagram it may still fragment locally
        # (the default mode, which believes ICMP "fragmentation needed").
        assert header[4:6] == b"\x00\x00", "never fragmented: no IP ID drawn"


@contextlib.contextmanager
def raw_udp(family: socket.AddressFamily) -> Iterator[socket.socket | None]:
    """A raw socket that sees every IPv4 UDP datagram on this host, headers
    included; None for IPv6 (no IP header is handed up) or without CAP_NET_RAW."""
    if family != socket.AF_INET:
        yield None
        return
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        yield None
        return
    with raw:
        yield raw


def ip_header_of_answer(raw: socket.socket | None, port: int) -> bytes | None:
    """The IPv4 header of the first datagram ``raw`` saw leave ``port``."""
    if raw is None:
        return None
    raw.settimeout(5.0)
    while True:
        packet = raw.recv(65535)
        length = (packet[0] & 0x0F) * 4
        if int.from_bytes(packet[length : length + 2], "big") == port:
            return packet[:length]
