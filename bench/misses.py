"""CPU per cache miss in the worker's code (``bench/misses``).

A cache miss is the slow path: decode, a first policy decision, an upstream
exchange (socket, query, reply checks, RFC 5452), the answer built, cached
and sent back into the pipeline. This drives a real ``Pipeline`` (built by
``build_pipeline``, on the worker's hot loop) with unique names, so every
query misses, against a minimal authoritative responder in a child process
on another core that answers every question with one A record. The figure
is this process's user + system CPU per miss (``getrusage``), so it holds
the kernel's share of the upstream socket calls but not the responder's.
Windows of ``--window`` queries are started at once and the loop runs until
all are answered, so exchanges overlap as under load.

Run pinned (``taskset -c 0 bench/misses``); the responder is pinned to the
other CPU. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from filterd.config.load import parse_config
from filterd.listeners.serving import reactor_for, serving_loop
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.pipeline.pipeline import build_pipeline
from filterd.pipeline.policy import Policy
from filterd.pipeline.tally import Counters

RESPONDER_CPU: Final = 1
_ANSWER: Final = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes((192, 0, 2, 7))


def respond(port_file: Path) -> None:
    """The responder: every query answered NOERROR with one A record, no OPT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    port_file.write_text(str(sock.getsockname()[1]))
    while True:
        query, peer = sock.recvfrom(4096)
        end = query.index(0, 12) + 5  # the question (name, type, class)
        sock.sendto(
            query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:end] + _ANSWER,
            peer,
        )


class Collected:
    """A ``Reply`` that counts the answers it gets."""

    udp = True
    address = b"\x7f\x00\x00\x01"

    def __init__(self, sink: Sink, received: float) -> None:
        self._sink = sink
        self.received = received

    def send(self, answer: bytes) -> None:
        self._sink.answered(answer)


class Sink:
    """The pipeline's ``ReplySource`` for misses; resolves ``done`` after ``expected``."""

    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.errors = 0
        self.done: asyncio.Future[None] | None = None

    def reply(self, client: object, received: float) -> Collected:
        return Collected(self, received)

    def answered(self, answer: bytes) -> None:
        self.count += 1
        if answer[3] & 0x0F:
            self.errors += 1
        if self.count == self.expected and self.done is not None:
            self.done.set_result(None)


def query_wire(i: int) -> bytes:
    name = b"".join(bytes((len(p),)) + p for p in (f"m{i:x}".encode(), b"example", b"com"))
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    return (
        struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 1)
        + name
        + b"\x00\x00\x01\x00\x01"
        + opt
    )


def measure(port: int, misses: int, window: int, state: Path) -> tuple[float, int]:
    """CPU µs per miss, and how many answers were not NOERROR."""
    (state / "list.txt").write_text("blocked.example\n")
    config = parse_config(
        f"upstream: {{servers: ['127.0.0.1:{port}'], timeout: 2, deadline: 4}}\n"
        f"lists: [{{name: bench, path: '{state / 'list.txt'}', format: domains}}]\n"
        f"state_dir: '{state}'\n"
    )
    matcher, sources = open_matcher(compile_lists(config).index_path)
    loop = serving_loop()
    policy = Policy(matcher, sources, config.blocking, 1232, {})
    pipeline = build_pipeline(config, policy, loop, Counters(), None, reactor_for(loop))
    sink = Sink()
    address = b"\x7f\x00\x00\x01"

    def run_window(first: int, count: int) -> None:
        sink.expected += count
        sink.done = loop.create_future()
        now = time.monotonic()
        for i in range(first, first + count):
            assert pipeline.handle(query_wire(i), address, True, sink, None, now) is None
        loop.run_until_complete(asyncio.wait_for(sink.done, 30))

    run_window(0, window)  # warm-up: first sockets, first decisions
    before = resource.getrusage(resource.RUSAGE_SELF)
    for first in range(window, window + misses, window):
        run_window(first, window)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    pipeline.forwarder.close()
    loop.close()
    return cpu / misses * 1e6, sink.errors


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/misses", description=__doc__.split("\n")[0])
    parser.add_argument("--misses", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=200, help="queries started at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--respond", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.respond:
        respond(args.respond)
        return
    with tempfile.TemporaryDirectory(prefix="filterd-misses-") as scratch:
        port_file = Path(scratch) / "port"
        responder = subprocess.Popen(
            ["taskset", "-c", str(RESPONDER_CPU), sys.executable, "-m", "bench.misses",
             "--respond", str(port_file)],
        )  # fmt: skip
        try:
            for _ in range(100):
                if port_file.exists() and port_file.read_text():
                    break
                time.sleep(0.1)
            port = int(port_file.read_text())
            results = []
            for number in range(args.rounds):
                state = Path(scratch) / f"state{number}"
                state.mkdir()
                results.append(measure(port, args.misses, args.window, state))
        finally:
            responder.terminate()
            responder.wait(10)
    print("| misses | window | CPU µs per miss, rounds (best) | answers not NOERROR |")
    print("|---|---|---|---|")
    figures = " / ".join(f"{cpu:.1f}" for cpu, _ in results)
    best = min(cpu for cpu, _ in results)
    errors = sum(e for _, e in results)
    print(f"| {args.misses:,} | {args.window} | {figures} ({best:.1f}) | {errors} |")
    print(f"(pid {os.getpid()}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
