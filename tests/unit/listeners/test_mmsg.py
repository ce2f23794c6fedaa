"""Batched UDP I/O on real loopback sockets, the hot loop's wait, and the two
ways of making their calls.

The C extension (``_mmsgcall``, in a compiled install) and the fallback (an
install without a compiler: ctypes for the batched calls, memoryviews for
the copies, ``select.epoll.poll`` for the wait) must keep one contract. Both
are exercised here whenever both exist; the source-build pass of
``tests/run`` runs this file without the extension.
"""

from __future__ import annotations

import errno
import select
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from filterd.listeners import mmsgcalls
from filterd.listeners.mmsg import MSG_DONTWAIT, SOCKADDR_SIZE, Batch
from filterd.listeners.mmsgcalls import MessageArrays, SystemCall

IMPLEMENTATIONS: dict[str, tuple[SystemCall, SystemCall]] = {
    "ctypes": mmsgcalls._ctypes_calls(),
}
if mmsgcalls.NATIVE_CALLS:
    from filterd.listeners import _mmsgcall

    IMPLEMENTATIONS["extension"] = (_mmsgcall.recvmmsg, _mmsgcall.sendmmsg)


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking server socket and a client connected to it, on loopback."""
    family = request.param
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    server = socket.socket(family, socket.SOCK_DGRAM)
    try:
        server.bind((host, 0))
    except OSError as exc:  # a host without IPv6 on loopback
        server.close()
        pytest.skip(f"no {host}: {exc}")
    server.setblocking(False)
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.connect(server.getsockname()[:2])
    yield server, client
    server.close()
    client.close()


def test_a_batch_receives_every_waiting_datagram_and_answers_each_sender(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    batch = Batch(server, 8, 512, 512)
    assert batch.receive() == []  # nothing waiting: EAGAIN is not an error
    sent = [b"first", b"second datagram", b"x" * 300]
    for payload in sent:
        client.send(payload)
    received: list[bytes] = []
    for _ in range(200):  # loopback delivers at once; bounded all the same
        received = batch.receive()
        if received:
            break
    client_host = socket.inet_pton(server.family, client.getsockname()[0])
    assert received == [part for payload in sent for part in (payload, client_host)]
    first, last = batch.address_slice
    for index, payload in enumerate(sent):
        sockaddr = batch.sender(index)
        assert len(sockaddr) == SOCKADDR_SIZE
        assert sockaddr[first:last] == client_host
        assert int.from_bytes(sockaddr[2:4], "big") == client.getsockname()[1]
        # The first answer to its sender by index, the others by a kept sockaddr.
        assert batch.queue(payload.upper(), index if index == 0 else sockaddr)
    assert batch.pending == 3
    assert batch.flush() == 0
    assert batch.pending == 0
    assert [client.recv(512) for _ in sent] == [payload.upper() for payload in sent]


def test_a_full_batch_and_a_second_client_are_answered_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Every slot of a batch, two senders interleaved: each answer reaches the
    client that asked, and a slot reused by the next batch carries the next
    answer's length (not the longer one before it)."""
    server, client = pair
    other = socket.socket(server.family, socket.SOCK_DGRAM)
    other.settimeout(5)
    other.connect(server.getsockname()[:2])
    try:
        batch = Batch(server, 4, 512, 512)
        for round_, size in ((0, 200), (1, 3)):
            for number in range(4):
                (client if number % 2 == 0 else other).send(bytes([round_, number]) * size)
            received: list[bytes] = []
            for _ in range(200):  # bounded
                received += batch.receive()
                if len(received) == 8:
                    break
            assert [len(part) for part in received[::2]] == [2 * size] * 4
            for index in range(4):
                assert batch.queue(received[2 * index][::-1], index)
            assert batch.flush() == 0
            for sock, numbers in ((client, (0, 2)), (other, (1, 3))):
                got = sorted(sock.recv(1024) for _ in numbers)
                assert got == sorted((bytes([round_, n]) * size)[::-1] for n in numbers)
    finally:
        other.close()


@pytest.mark.parametrize("refused_at", [(1, 3), (0,), (0, 1, 2)])
def test_an_answer_the_kernel_refuses_costs_no_other_client_its_answer(
    pair: tuple[socket.socket, socket.socket], refused_at: tuple[int, ...]
) -> None:
    """Found by reading ``flush``: sendmmsg(2) stops at the first message the
    kernel refuses, and every answer queued after it was dropped. Here the
    kernel refuses a destination port 0 (EINVAL, nothing leaves the host);
    a firewall's output rule or a route does the same in the field."""
    server, client = pair
    batch = Batch(server, 4, 512, 512)
    client.send(b"q")
    for _ in range(200):  # bounded
        if batch.receive():
            break
    sockaddr = batch.sender(0)
    refused = sockaddr[:2] + b"\0\0" + sockaddr[4:]
    answers = [f"answer {number}".encode() for number in range(4)]
    for number, answer in enumerate(answers):
        assert batch.queue(answer, refused if number in refused_at else sockaddr)
    assert batch.flush() == len(refused_at)
    client.settimeout(0.5)
    expected = [a for number, a in enumerate(answers) if number not in refused_at]
    assert [client.recv(512) for _ in expected] == expected
    with pytest.raises(TimeoutError):
        client.recv(512)


def test_an_answer_larger_than_a_slot_is_refused_for_the_caller_to_send_alone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _client = pair
    batch = Batch(server, 2, 512, 64)
    assert not batch.queue(b"y" * 65, b"\0" * SOCKADDR_SIZE)
    assert batch.pending == 0


def test_a_sender_index_outside_the_batch_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _client = pair
    batch = Batch(server, 2, 512, 64)
    for index in (2, -1):
        with pytest.raises(IndexError):
            batch.queue(b"answer", index)
    assert batch.pending == 0


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_both_implementations_return_the_count_or_minus_errno(
    name: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    recvmmsg, sendmmsg = IMPLEMENTATIONS[name]
    server, client = pair
    v6 = server.family == socket.AF_INET6
    arrays = MessageArrays(4, 512, 512, SOCKADDR_SIZE if v6 else 16)
    assert recvmmsg(server.fileno(), arrays.recv_address, 4, MSG_DONTWAIT) == -errno.EAGAIN
    client.send(b"ping")
    count = 0
    for _ in range(200):  # bounded
        count = recvmmsg(server.fileno(), arrays.recv_address, 4, MSG_DONTWAIT)
        if count != -errno.EAGAIN:
            break
    assert count == 1
    assert arrays.payloads[:4].tobytes() == b"ping"
    # Answer the sender through the send array: payload, address, length.
    arrays.out[:4] = b"pong"
    arrays.out_names[:SOCKADDR_SIZE] = arrays.names[:SOCKADDR_SIZE]
    arrays.send_iov_words[1] = 4
    assert sendmmsg(server.fileno(), arrays.send_address, 1, MSG_DONTWAIT) == 1
    assert client.recv(16) == b"pong"
    closed = socket.socket(server.family, socket.SOCK_DGRAM)
    fd = closed.fileno()
    closed.close()
    assert recvmmsg(fd, arrays.recv_address, 4, MSG_DONTWAIT) == -errno.EBADF
    assert sendmmsg(fd, arrays.send_address, 1, MSG_DONTWAIT) == -errno.EBADF


@pytest.mark.skipif(not mmsgcalls.NATIVE_CALLS, reason="the C extension is not built here")
def test_the_extension_rejects_bad_arguments_with_an_exception() -> None:
    arrays = MessageArrays(1, 64, 64, 16)
    with pytest.raises(TypeError, match="takes 4 arguments"):
        _mmsgcall.recvmmsg(0, arrays.recv_address, 1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="invalid file descriptor"):
        _mmsgcall.recvmmsg(-1, arrays.recv_address, 1, 0)
    with pytest.raises(ValueError, match="msgvec is NULL"):
        _mmsgcall.sendmmsg(0, 0, 1, 0)
    with pytest.raises(ValueError, match="vlen"):
        _mmsgcall.sendmmsg(0, arrays.send_address, 4096, 0)
    with pytest.raises(TypeError):
        _mmsgcall.sendmmsg(0, "address", 1, 0)  # type: ignore[arg-type]


@pytest.mark.skipif(not mmsgcalls.NATIVE_CALLS, reason="the C extension is not built here")
def test_the_batch_copies_reject_bad_arguments_with_an_exception(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    arrays = MessageArrays(2, 64, 64, 16)
    fd = server.fileno()
    with pytest.raises(TypeError, match="takes 6 arguments"):
        _mmsgcall.receive(fd, arrays.recv_address, 2, MSG_DONTWAIT)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="address bytes"):
        _mmsgcall.receive(fd, arrays.recv_address, 2, MSG_DONTWAIT, 8, 40)
    closed = socket.socket(server.family, socket.SOCK_DGRAM)
    closed_fd = closed.fileno()
    closed.close()
    with pytest.raises(OSError) as failed:
        _mmsgcall.receive(closed_fd, arrays.recv_address, 2, MSG_DONTWAIT, 4, 8)
    assert failed.value.errno == errno.EBADF
    with pytest.raises(ValueError, match="answer of 65 octets, slot of 64"):
        _mmsgcall.stage(arrays.send_address, 0, b"y" * 65, 64, b"\0" * SOCKADDR_SIZE)
    with pytest.raises(ValueError, match="sockaddr of 16 octets"):
        _mmsgcall.stage(arrays.send_address, 0, b"y", 64, b"\0" * 16)
    with pytest.raises(TypeError, match="answer must be bytes"):
        _mmsgcall.stage(arrays.send_address, 0, "y", 64, b"\0" * 28)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sender is NULL"):
        _mmsgcall.stage(arrays.send_address, 0, b"y", 64, 0)
    with pytest.raises(ValueError, match="msgvec is NULL"):
        _mmsgcall.stage(0, 0, b"y", 64, b"\0" * SOCKADDR_SIZE)
    client.close()


def _waiters(epoll: select.epoll) -> dict[str, mmsgcalls.EpollWait]:
    """Both waits of one epoll set where both exist: the extension's, and
    ``select.epoll.poll`` flattened (the fallback)."""
    waiters = {"native" if mmsgcalls.NATIVE_CALLS else "poll": mmsgcalls.epoll_waiter(epoll)}
    if mmsgcalls.NATIVE_CALLS:
        poll = epoll.poll

        def flattened(timeout: float, maxevents: int) -> list[int]:
            return [value for event in poll(timeout, maxevents) for value in event]

        waiters["poll"] = flattened
    return waiters


def test_the_wait_reports_ready_descriptors_and_their_flags_flat(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    with select.epoll() as epoll:
        epoll.register(server.fileno(), select.EPOLLIN)
        epoll.register(client.fileno(), select.EPOLLOUT)
        for name, wait in _waiters(epoll).items():
            assert wait(0.0, 8) == [client.fileno(), select.EPOLLOUT], name
        epoll.unregister(client.fileno())
        for name, wait in _waiters(epoll).items():
            started = time.monotonic()
            assert wait(0.05, 8) == [], name  # nothing ready: the timeout passes
            assert time.monotonic() - started >= 0.045, name
        client.send(b"ping")
        for name, wait in _waiters(epoll).items():
            assert wait(5.0, 8) == [server.fileno(), select.EPOLLIN], name
            assert wait(-1.0, 1) == [server.fileno(), select.EPOLLIN], name  # level-triggered


@pytest.mark.skipif(not mmsgcalls.NATIVE_CALLS, reason="the C extension is not built here")
def test_the_native_wait_runs_signal_handlers_and_rejects_bad_arguments() -> None:
    with select.epoll() as epoll:
        wait = mmsgcalls.epoll_waiter(epoll)
        caught: list[int] = []
        previous = signal.signal(signal.SIGALRM, lambda number, frame: caught.append(number))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            assert wait(5.0, 4) == []  # interrupted: the handler ran, the caller waits again
            assert caught == [signal.SIGALRM]

            def fail(number: int, frame: object) -> None:
                raise RuntimeError("from the handler")

            signal.signal(signal.SIGALRM, fail)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(RuntimeError, match="from the handler"):
                wait(5.0, 4)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        with pytest.raises(ValueError, match="maxevents 0"):
            _mmsgcall.wait(epoll.fileno(), 0.0, 0)
        with pytest.raises(ValueError, match="invalid file descriptor"):
            _mmsgcall.wait(-1, 0.0, 1)
        with pytest.raises(TypeError, match="takes 3 arguments"):
            _mmsgcall.wait(epoll.fileno(), 0.0)  # type: ignore[call-arg]
    closed = select.epoll()
    fd = closed.fileno()
    closed.close()
    with pytest.raises(OSError) as failed:
        _mmsgcall.wait(fd, 0.0, 1)
    assert failed.value.errno == errno.EBADF
