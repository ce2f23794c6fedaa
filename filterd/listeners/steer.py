"""Steering each UDP question to one worker: one answer cache per host.

With ``server.workers`` above one, every worker has its own UDP socket on the
shared port (``SO_REUSEPORT``). By default the kernel picks the socket by a
hash of the client's address and port, so every worker sees every popular
name: N workers keep N copies of the same answers and each misses once per
name. Here the supervisor attaches a classic BPF program to the group
(``SO_ATTACH_REUSEPORT_CBPF``, Linux 4.5) that picks the socket by a hash of
the *question* instead: the query's name, case-folded, and its type. A
question is then always answered by the same worker, so the workers' caches
hold disjoint shares of the working set (together, one cache: each worker
gets ``cache.max_bytes / workers``) and a name goes upstream once per host.

Why this and not a cache in shared memory: the program runs in the kernel
for a few hundred instructions per datagram and the hot path in Python is
unchanged (a hit stays one dict lookup), where a shared table read from
Python costs a hash, a slot read, a key comparison and TTL ageing on every
hit (measured in bench/README.md "One cache per host"), needs locks or a
seqlock for writers in several processes, and a per-worker front cache to
be fast again. The price of steering is balance: a name's traffic cannot be
spread over workers. Hashing the type too splits the most popular names
(A and AAAA of one name go to different workers); bench/README.md gives the
share of the busiest worker for the benchmark's traffic.

The program (RFC 1035 §4.1.1-4.1.2 layout; the kernel hands it the UDP
payload, offset 0 is the DNS header):

- FNV-1a over the question name from offset 12, each octet OR 0x20 (so
  0x20-randomised case, RFC draft-vixie-dnsext-dns0x20, hashes alike), up to
  the name's zero octet, the end of the datagram, or ``SPAN`` octets;
- then the two octets of QTYPE when the name ended within ``SPAN``;
- a final fold (h ^ h >> 16) and ``h % workers`` as the socket index.

A datagram too short for what it reads ends the program with 0 (worker 0),
which is where malformed queries are answered FORMERR. TCP is not steered:
a connection is placed when its SYN arrives, before any question; TCP
queries use the accepting worker's cache. ``question_worker`` computes the
same function in Python, for tests and tools.

The group also holds each worker's send socket (bound after every
receiving socket, so at indexes ``workers`` and up, which the program never
returns: ``filterd.supervisor.sockets``). With one worker there is nothing
to steer, and ``steer_to_first`` keeps the send socket out of the draw.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Final

SO_ATTACH_REUSEPORT_CBPF: Final = 51
SPAN: Final = 64
"""Question octets hashed at most (names longer than this share their prefix's worker)."""
_FNV_BASIS: Final = 2166136261
_FNV_PRIME: Final = 16777619
_MASK: Final = 0xFFFFFFFF

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_LEN: Final = 0x80  # A = datagram length
_LD_IMM: Final = 0x00  # A = k
_LD_MEM: Final = 0x60  # A = M[k]
_LDB_ABS: Final = 0x30  # A = P[k:1]
_LDH_IND: Final = 0x48  # A = P[X + k:2]
_LDX_IMM: Final = 0x01  # X = k
_ST: Final = 0x02  # M[k] = A
_JA: Final = 0x05  # pc += k
_JGT_K: Final = 0x25  # pc += (A > k) ? jt : jf
_JEQ_K: Final = 0x15  # pc += (A == k) ? jt : jf
_OR_K: Final = 0x44  # A |= k
_XOR_X: Final = 0xAC  # A ^= X
_MUL_K: Final = 0x24  # A *= k
_RSH_K: Final = 0x74  # A >>= k
_MOD_K: Final = 0x94  # A %= k
_TAX: Final = 0x07  # X = A
_RET_A: Final = 0x16  # return A
_RET_K: Final = 0x06  # return k
_INSN: Final = struct.Struct("=HBBI")
_MIX: Final = (
    (_TAX, 0, 0, 0),
    (_LD_MEM, 0, 0, 0),
    (_XOR_X, 0, 0, 0),
    (_MUL_K, 0, 0, _FNV_PRIME),
    (_ST, 0, 0, 0),
)
"""One FNV-1a step: M[0] = (M[0] ^ A) * prime."""


def question_program(workers: int, span: int = SPAN) -> list[tuple[int, int, int, int]]:
    """The program as (code, jt, jf, k) instructions; see the module docstring."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    prog: list[tuple[int, int, int, int]] = [(_LD_IMM, 0, 0, _FNV_BASIS), (_ST, 0, 0, 0)]
    to_end: list[int] = []  # indexes of "ja end" to patch
    to_qtype: list[int] = []  # indexes of "ja qtype" to patch
    for k in range(12, 12 + span):
        prog.append((_LD_LEN, 0, 0, 0))
        prog.append((_JGT_K, 1, 0, k))  # octet k exists: skip the jump out
        to_end.append(len(prog))
        prog.append((_JA, 0, 0, 0))
        prog.append((_LDB_ABS, 0, 0, k))
        prog.append((_JEQ_K, 0, 2, 0))  # the name's zero octet: go hash QTYPE at k + 1
        prog.append((_LDX_IMM, 0, 0, k + 1))
        to_qtype.append(len(prog))
        prog.append((_JA, 0, 0, 0))
        prog.append((_OR_K, 0, 0, 0x20))
        prog += _MIX
    to_end.append(len(prog))  # the name ran past ``span``: no QTYPE
    prog.append((_JA, 0, 0, 0))
    qtype = len(prog)
    prog.append((_LDH_IND, 0, 0, 0))
    prog += _MIX
    end = len(prog)
    prog += [
        (_LD_MEM, 0, 0, 0),
        (_RSH_K, 0, 0, 16),
        (_TAX, 0, 0, 0),
        (_LD_MEM, 0, 0, 0),
        (_XOR_X, 0, 0, 0),
        (_MOD_K, 0, 0, workers),
        (_RET_A, 0, 0, 0),
    ]
    for index in to_end:
        prog[index] = (_JA, 0, 0, end - index - 1)
    for index in to_qtype:
        prog[index] = (_JA, 0, 0, qtype - index - 1)
    return prog


def question_worker(payload: bytes, workers: int, span: int = SPAN) -> int:
    """The worker ``question_program`` picks for ``payload`` (the same function)."""
    h = _FNV_BASIS
    size = len(payload)
    for k in range(12, 12 + span):
        if k >= size:
            break
        octet = payload[k]
        if octet == 0:
            if k + 3 > size:
                return 0  # the program's load past the end aborts it: worker 0
            h = ((h ^ int.from_bytes(payload[k + 1 : k + 3], "big")) * _FNV_PRIME) & _MASK
            break
        h = ((h ^ (octet | 0x20)) * _FNV_PRIME) & _MASK
    return (h ^ (h >> 16)) % workers


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def steer_by_question(sock: socket.socket, workers: int) -> None:
    """Attach the program to ``sock``'s SO_REUSEPORT group: socket ``i`` of the
    group (in the order they were bound) gets the questions of worker ``i``.
    Raises ``OSError`` where the kernel does not support it."""
    _attach(sock, question_program(workers))


def steer_to_first(sock: socket.socket) -> None:
    """Attach to ``sock``'s SO_REUSEPORT group a program that gives every
    datagram to the group's first socket (one worker: its receiving socket;
    the group's other sockets only send, ``filterd.supervisor.sockets``)."""
    _attach(sock, [(_RET_K, 0, 0, 0)])


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(_INSN.pack(*insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(code) // _INSN.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
