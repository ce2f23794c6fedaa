"""Asking the resolver: one query per name over UDP, bounded in time and in number.

The probe is a client like any other, and is built like filterd's own
upstream exchange (docs/probe.md, "How the questions are asked"):

- every query gets a fresh UDP socket connected to the resolver, so the
  kernel picks a random source port and drops datagrams from elsewhere, and
  a query ID from the kernel's CSPRNG; a reply counts only if its ID, QR bit
  and question match, anything else is ignored while the wait goes on;
- the query carries an OPT record (RFC 6891) so that a resolver can attach
  an Extended DNS Error (RFC 8914 needs EDNS);
- a query unanswered after ``timeout`` is sent once more (new socket, new
  ID); a truncated reply (TC=1) is asked again over TCP (RFC 7766 §6.2);
- at most ``concurrency`` queries are in flight, and nothing is sent after
  the run's ``deadline``: the whole probe ends in bounded time, whatever
  the resolver does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dnslib import EDNS0, DNSQuestion, DNSRecord

from filterd.config import Endpoint
from filterd.wire.codes import FLAG_QR, FLAG_TC

EDNS_UDP_SIZE: Final = 1232
"""The UDP payload size advertised (DNS flag day 2020)."""
RECEIVE_SIZE: Final = 65535
ATTEMPTS: Final = 2
"""UDP attempts per name: the first and one retry after a timeout."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The resolver's reply to one name, or why there is none."""

    message: bytes | None
    transport: str = "udp"
    error: str = ""


def build_query(qname: str, qtype: int, query_id: int) -> bytes:
    """RD=1 query with an OPT record."""
    query = DNSRecord(q=DNSQuestion(qname, qtype))
    query.header.id = query_id
    query.header.rd = 1
    query.add_ar(EDNS0(udp_len=EDNS_UDP_SIZE))
    packed: bytes = query.pack()
    return packed


def _answers(message: bytes, qname: str, qtype: int, query_id: int) -> bool:
    """Is ``message`` the reply to our query (ID, QR bit and question)?"""
    if len(message) < 12 or int.from_bytes(message[:2], "big") != query_id:
        return False
    if not int.from_bytes(message[2:4], "big") & FLAG_QR:
        return False
    try:
        parsed = DNSRecord.parse(message)
    except Exception:  # dnslib raises more than DNSError on bad input
        return False
    if len(parsed.questions) != 1:
        return False
    question = parsed.questions[0]
    return bool(
        str(question.qname).rstrip(".").lower() == qname.rstrip(".").lower()
        and question.qtype == qtype
    )


def _truncated(message: bytes) -> bool:
    return bool(int.from_bytes(message[2:4], "big") & FLAG_TC)


def _new_id() -> int:
    return int.from_bytes(os.urandom(2), "big")


async def _udp(resolver: Endpoint, qname: str, qtype: int, wait: float) -> bytes | None:
    """One UDP attempt; ``None`` if nothing matching came back within ``wait``."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if resolver.family_v6 else socket.AF_INET
    query_id = _new_id()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((resolver.host, resolver.port))
        await loop.sock_sendall(sock, build_query(qname, qtype, query_id))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while True:
                    message = await loop.sock_recv(sock, RECEIVE_SIZE)
                    if _answers(message, qname, qtype, query_id):
                        return message
    return None


async def _tcp(resolver: Endpoint, qname: str, qtype: int, wait: float) -> bytes | None:
    """One query over TCP (RFC 7766 framing); ``None`` on a timeout or a bad reply."""
    query_id = _new_id()
    query = build_query(qname, qtype, query_id)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(resolver.host, resolver.port)
            writer.write(len(query).to_bytes(2, "big") + query)
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            message = await reader.readexactly(length)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
    finally:
        if writer is not None:
            writer.close()
    return message if _answers(message, qname, qtype, query_id) else None


async def ask(
    resolver: Endpoint, qname: str, qtype: int, *, timeout: float, deadline: float
) -> Reply:
    """Ask ``qname``/``qtype``: UDP, one retry on timeout, TCP on truncation."""
    for _ in range(ATTEMPTS):
        wait = min(timeout, deadline - time.monotonic())
        if wait <= 0:
            return Reply(None, error="deadline")
        try:
            message = await _udp(resolver, qname, qtype, wait)
        except ConnectionRefusedError:
            return Reply(None, error="unreachable")
        except OSError as exc:
            return Reply(None, error=f"network: {exc.strerror or exc}")
        if message is None:
            continue
        if not _truncated(message):
            return Reply(message)
        wait = min(timeout, deadline - time.monotonic())
        if wait <= 0:
            return Reply(None, error="deadline")
        whole = await _tcp(resolver, qname, qtype, wait)
        if whole is None:
            return Reply(None, "tcp", "tcp")
        return Reply(whole, "tcp")
    return Reply(None, error="timeout")


async def ask_all(
    resolver: Endpoint,
    questions: Sequence[str],
    qtype: int,
    *,
    timeout: float,
    run_time: float,
    concurrency: int,
) -> list[Reply]:
    """Ask every name, ``concurrency`` at a time, all within ``run_time`` seconds.

    ``concurrency`` workers take the next name from one shared queue of
    indices: the number of tasks stays bounded whatever the sample size."""
    deadline = time.monotonic() + run_time
    replies: list[Reply] = [Reply(None, error="deadline")] * len(questions)
    pending = iter(range(len(questions)))

    async def worker() -> None:
        for index in pending:  # no await between taking an index and owning it
            replies[index] = await ask(
                resolver, questions[index], qtype, timeout=timeout, deadline=deadline
            )

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(questions))):
            group.create_task(worker())
    return replies


def ask_all_sync(
    resolver: Endpoint,
    questions: Sequence[str],
    qtype: int,
    *,
    timeout: float,
    run_time: float,
    concurrency: int,
) -> list[Reply]:
    """``ask_all`` in an event loop of its own (the command is synchronous)."""
    return asyncio.run(
        ask_all(
            resolver,
            questions,
            qtype,
            timeout=timeout,
            run_time=run_time,
            concurrency=concurrency,
        )
    )
