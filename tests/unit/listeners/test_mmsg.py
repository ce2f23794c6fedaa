"""Batched UDP I/O on real loopback sockets, and the two ways of making its calls.

The C extension (``_mmsgcall``, in a compiled install) and the ctypes
fallback (an install without a compiler) must keep one contract: the count,
or ``-errno``. Both are exercised here whenever both exist; the source-build
pass of ``tests/run`` runs this file without the extension.
"""

from __future__ import annotations

import errno
import socket
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
    lengths: list[int] = []
    for _ in range(200):  # loopback delivers at once; bounded all the same
        lengths = batch.receive()
        if lengths:
            break
    assert lengths == [len(payload) for payload in sent]
    first, last = batch.address_slice
    client_host = socket.inet_pton(server.family, client.getsockname()[0])
    for index, payload in enumerate(sent):
        assert batch.payloads[index * 512 : index * 512 + lengths[index]].tobytes() == payload
        sockaddr = batch.sender(index)
        assert len(sockaddr) == SOCKADDR_SIZE
        assert sockaddr[first:last] == client_host
        assert int.from_bytes(sockaddr[2:4], "big") == client.getsockname()[1]
        assert batch.queue(payload.upper(), sockaddr)
    assert batch.pending == 3
    assert batch.flush() == 0
    assert batch.pending == 0
    assert [client.recv(512) for _ in sent] == [payload.upper() for payload in sent]


def test_an_answer_larger_than_a_slot_is_refused_for_the_caller_to_send_alone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _client = pair
    batch = Batch(server, 2, 512, 64)
    assert not batch.queue(b"y" * 65, b"\0" * SOCKADDR_SIZE)
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
