"""Question steering: the kernel runs the program, and picks what Python computes."""

from __future__ import annotations

import random
import select
import socket
from collections import Counter
from collections.abc import Iterator

import dns.message
import pytest

from filterd.listeners.steer import question_program, question_worker, steer_by_question

WORKERS = 3


@pytest.fixture
def group() -> Iterator[tuple[list[socket.socket], int]]:
    """``WORKERS`` UDP sockets sharing one loopback port, steered by question."""
    socks: list[socket.socket] = []
    port = 0
    try:
        for _ in range(WORKERS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            port = sock.getsockname()[1]
        steer_by_question(socks[0], WORKERS)
        yield socks, port
    finally:
        for sock in socks:
            sock.close()


def received_by(socks: list[socket.socket], payload: bytes, port: int) -> int:
    """Send ``payload`` from a fresh source port; the index of the socket it reached."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(payload, ("127.0.0.1", port))
        ready, _, _ = select.select(socks, [], [], 5.0)
    assert len(ready) == 1
    assert ready[0].recv(4096) == payload
    return socks.index(ready[0])


def payloads(rng: random.Random) -> Iterator[bytes]:
    for i in range(300):
        name = rng.choice(
            [
                f"host{i}.example.com",
                "www.example.com",
                "WwW.ExAmPlE.cOm",
                "a." * 40 + "long.example",  # longer than the hashed span
                "x" * 63 + ".example",
            ]
        )
        qtype = rng.choice(["A", "AAAA", "HTTPS", "MX"])
        wire = dns.message.make_query(name, qtype, use_edns=rng.choice([0, False])).to_wire()
        if i % 25 == 0:
            wire = wire[: rng.randrange(0, len(wire))]  # cut short: a malformed datagram
        yield wire


def test_the_kernel_picks_the_worker_python_computes(
    group: tuple[list[socket.socket], int],
) -> None:
    socks, port = group
    for payload in payloads(random.Random(7)):
        assert received_by(socks, payload, port) == question_worker(payload, WORKERS)


def test_a_question_goes_to_one_worker_whatever_its_case_and_source() -> None:
    def worker(name: str, qtype: str = "A", edns: bool = True) -> int:
        wire = dns.message.make_query(name, qtype, use_edns=0 if edns else False).to_wire()
        return question_worker(wire, WORKERS)

    assert worker("www.example.com") == worker("WWW.EXAMPLE.COM") == worker("wWw.eXaMpLe.CoM")
    assert worker("www.example.com") == worker("www.example.com", edns=False)
    spread = Counter(worker(f"host{i}.example.com") for i in range(3000))
    assert min(spread.values()) > 900  # about a third each


def test_the_program_fits_the_kernel_limit() -> None:
    assert len(question_program(64)) <= 4096  # BPF_MAXINSNS
    with pytest.raises(ValueError, match="at least 1"):
        question_program(0)
