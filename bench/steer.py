"""One cache per host: the figures behind steering questions to workers (``bench/steer``).

``filterd.listeners.steer`` gives each question one worker with a classic
BPF program on the SO_REUSEPORT group, instead of a cache in shared memory
that every worker reads. This measures the three things that choice trades:

- **read cost**: a hit in a worker's own dict (what steering keeps) against
  a read from a table in shared memory, written the way a Python worker
  would have to (slot by hash, header unpack, key comparison, copy out,
  TTL ageing, seqlock version check); both best-of-5 per read over 100,000
  keys, pinned to one core by the caller;
- **kernel cost**: the sender's CPU per datagram into a 2-socket group
  with and without the program attached (on loopback the receiving path,
  where the program runs, is charged to the sender);
- **balance**: the share of the busiest worker when the benchmark's
  hit-heavy traffic (bench/run's data) is steered over 2 to 16 workers.
"""

from __future__ import annotations

import argparse
import mmap
import os
import socket
import struct
import time
import timeit
from collections import Counter
from pathlib import Path
from typing import Final

import dns.message

from filterd.listeners.mmsg import SOCKADDR_SIZE, Batch
from filterd.listeners.steer import question_worker, steer_by_question

DATA: Final = Path(__file__).resolve().parent / "results" / "work" / "data"
_HEADER: Final = struct.Struct("=IHHdd")  # seqlock version, key and wire lengths, times
_FIELD: Final = struct.Struct("=HI")
_SLOT: Final = 256


def read_costs(count: int = 100_000) -> tuple[float, float]:
    """Microseconds per read: (own dict, shared table)."""
    slots = 1 << 18
    table = mmap.mmap(-1, slots * _SLOT)
    keys = [os.urandom(20) + b"\x01" for _ in range(count)]
    wire = os.urandom(70)
    meta = _FIELD.pack(40, 300)
    own: dict[bytes, tuple[bytes, float, tuple[bytes, ...], bytes]] = {}
    for key in keys:
        at = (hash(key) & (slots - 1)) * _SLOT
        _HEADER.pack_into(table, at, 2, len(key), len(wire), 100.0, 1000.0)
        start = at + _HEADER.size
        table[start : start + len(key) + len(wire) + len(meta)] = key + wire + meta
        own[key] = (wire, 200.0, (), meta)

    def shared(key: bytes, now: float) -> bytes | None:
        at = (hash(key) & (slots - 1)) * _SLOT
        version, key_size, wire_size, stored_at, expires_at = _HEADER.unpack_from(table, at)
        start = at + _HEADER.size
        if version & 1 or key_size != len(key) or table[start : start + key_size] != key:
            return None
        if now >= expires_at:
            return None
        start += key_size
        out = bytearray(table[start : start + wire_size])
        age = int(now - stored_at)
        fields = table[start + wire_size : start + wire_size + _FIELD.size]
        for offset, ttl in _FIELD.iter_unpack(fields):
            struct.pack_into("!I", out, offset, ttl - age if ttl > age else 0)
        if _HEADER.unpack_from(table, at)[0] != version:
            return None  # a writer was here: read again
        return bytes(out)

    def best(stmt: object) -> float:
        return min(timeit.repeat(stmt, number=1, repeat=5)) / count * 1e6  # type: ignore[arg-type]

    return (
        best(lambda: [own.get(key) for key in keys]),
        best(lambda: [shared(key, 150.0) for key in keys]),
    )


def send_cost(steered: bool, rounds: int = 300) -> float:
    """CPU microseconds per datagram sent into a group of two sockets."""
    group = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    port = 0
    for sock in group:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind(("127.0.0.1", port))
        sock.setblocking(False)
        port = sock.getsockname()[1]
    if steered:
        steer_by_question(group[0], 2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    batch = Batch(sender, 64, 512, 512)
    sockaddr = (
        socket.AF_INET.to_bytes(2, "little")
        + port.to_bytes(2, "big")
        + socket.inet_aton("127.0.0.1")
        + bytes(SOCKADDR_SIZE - 8)
    )
    payloads = [
        dns.message.make_query(f"host{i}.example{i % 7}.com", "A", use_edns=0).to_wire()
        for i in range(64)
    ]
    spent = 0.0
    try:
        for _ in range(rounds):
            for payload in payloads:
                batch.queue(payload, sockaddr)
            started = time.process_time()
            batch.flush()
            spent += time.process_time() - started
            for sock in group:
                while True:
                    try:
                        sock.recv(512)
                    except BlockingIOError:
                        break
    finally:
        for sock in [*group, sender]:
            sock.close()
    return spent / (rounds * 64) * 1e6


def balance(size: str, workers: tuple[int, ...]) -> dict[int, float]:
    """Busiest worker's share of the hit-heavy file, per worker count (1/N is even)."""
    path = DATA / f"hit-{size}.txt"
    if not path.exists():
        raise SystemExit(f"bench/steer: {path} missing; run bench/run once to generate data")
    lines = Counter(path.read_text().split("\n"))
    wires = {
        line: dns.message.make_query(line.split()[0], line.split()[1], use_edns=0).to_wire()
        for line in lines
        if line
    }
    out = {}
    for n in workers:
        load: Counter[int] = Counter()
        for line, wire in wires.items():
            load[question_worker(wire, n)] += lines[line]
        out[n] = max(load.values()) / sum(load.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/steer", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1m", help="list size of bench/run's data (1m)")
    args = parser.parse_args()
    own, shared = read_costs()
    print("| read of a cached answer | µs |\n|---|---|")
    print(f"| own dict (steering) | {own:.2f} |\n| shared-memory table | {shared:.2f} |\n")
    plain, steered = (min(send_cost(s) for _ in range(3)) for s in (False, True))
    print("| datagram into a 2-socket group | sender CPU µs |\n|---|---|")
    print(f"| kernel's hash of the addresses | {plain:.2f} |")
    print(f"| steered by question (BPF) | {steered:.2f} |\n")
    print("| workers | busiest worker's share | even share |\n|---|---|---|")
    for n, share in balance(args.size, (2, 4, 8, 16)).items():
        print(f"| {n} | {share:.1%} | {1 / n:.1%} |")


if __name__ == "__main__":
    main()
