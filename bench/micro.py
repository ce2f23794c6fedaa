"""Per-stage micro-benchmarks of the query path (``bench/micro``).

Each stage of a cache hit or a block is timed on its own with ``timeit``
(best of several repeats, so scheduler noise inflates nothing), over a
realistic working set: the distinct questions of the hit-heavy query file
and the 1M-name list that ``bench/run`` generates (or a smaller list when
``--size`` says so). The sum of the stages is the Python cost of a query;
the rest of a query's time on the wire is the kernel's (see README.md).

Stages:
- decode: ``parse_query`` (header, question end, OPT, cache key);
- guard: the access-list memo;
- policy: the verdict memo (a hit), and a first decision (suffix walk over
  the memory-mapped index) for comparison;
- cache: ``ResponseCache.get`` on a hit;
- serve: ``cache.serve`` after the read (client ID and question);
- block: ``BlockAnswer.render`` for a blocked name;
- whole: ``Pipeline.handle`` end to end, for hits and blocks in the file's mix,
  as a stream at 100k queries/s of simulated time (``Clock``), so that
  repeats within a second and answers rendered again come as often as in a
  loaded worker;
- groups: the client's group from its address (docs/profiles.md): the
  compiled prefix table alone over 64k distinct addresses (four prefix
  lengths configured), the policy's address memo, and the whole pipeline
  again with clients spread over four groups; and the Python bytecodes a
  query runs with and without the groups (a count, not a time: comparable
  on a busy machine);
- send: ``Batch.queue`` + the share of one ``sendmmsg`` for a batch of 64;
- wake-up: what the loop costs to call a reader whose descriptor is ready
  (a pipe that stays readable), for asyncio's ``add_reader``, the worker's
  hot loop (``filterd.listeners.hotloop``) and a bare ``epoll`` loop; each
  with an asyncio timer pending, as in a worker. At a rate where queries
  arrive one at a time, every query pays one wake-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import socket
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Final

import dns.message
import dns.rdatatype
import dns.rrset

from filterd.config.load import parse_config
from filterd.listeners.mmsg import Batch
from filterd.listeners.serving import reactor_for, serving_loop
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.pipeline.cache import WIRE, build_answer, serve
from filterd.pipeline.pipeline import Pipeline, build_pipeline
from filterd.pipeline.policy import Policy
from filterd.pipeline.tally import Counters
from filterd.profiles.profileset import ProfileSet
from filterd.wire.answer import inspect_response
from filterd.wire.names import wire_to_text
from filterd.wire.query import Query, parse_query, validate

REPO: Final = Path(__file__).resolve().parents[1]
DATA: Final = REPO / "bench" / "results" / "work" / "data"


class _NoReply:
    def reply(self, client: object) -> object:
        raise AssertionError("a benchmarked query went upstream")


def _queries(path: Path, limit: int) -> list[bytes]:
    wires = []
    for line in path.read_text().splitlines()[:limit]:
        if line:
            name, rdtype = line.split()
            wires.append(
                dns.message.make_query(
                    name, dns.rdatatype.from_text(rdtype), use_edns=False
                ).to_wire()
            )
    return wires


def _answer_for(query: Query) -> bytes:
    request = dns.message.from_wire(query.data)
    response = dns.message.make_response(request)
    name = request.question[0].name
    asked = int(request.question[0].rdtype)
    text = {1: "192.0.2.1", 28: "2001:db8::1", 15: "10 mail.example.", 16: '"v=spf1 -all"'}
    rdtype, data = (asked, text[asked]) if asked in text else (1, "192.0.2.1")
    response.answer.append(
        dns.rrset.from_text(name, 300, "IN", dns.rdatatype.RdataType(rdtype), data)
    )
    return response.to_wire()


def build(size: str, limit: int, state: Path) -> tuple[Pipeline, list[bytes], list[Query]]:
    list_path = DATA / f"list-{size}.domains"
    hit_path = DATA / f"hit-{size}.txt"
    if not list_path.exists():
        raise SystemExit(f"bench/micro: {list_path} missing; run bench/run once to generate data")
    config = parse_config(
        f"upstream: {{servers: ['127.0.0.1:9']}}\n"
        f"lists: [{{name: bench, path: '{list_path}', format: domains, mandatory: true}}]\n"
        f"state_dir: '{state}'\n"
    )
    report = compile_lists(config)
    matcher, sources = open_matcher(report.index_path)
    loop = asyncio.new_event_loop()
    policy = Policy(matcher, sources, config.blocking, 1232, {})
    pipeline = build_pipeline(config, policy, loop, Counters())
    wires = _queries(hit_path, limit)
    now = time.monotonic()
    queries = []
    for wire in wires:
        query = parse_query(wire)
        assert query is not None
        validate(query)
        queries.append(query)
        verdict = policy.memoised(query.key) or policy.decide(query.key, query.name_end - 12)
        if verdict[0] is None and pipeline.cache.get(query.key, now) is None:
            message = _answer_for(query)
            info = inspect_response(message, query.key[:-1], int.from_bytes(message[:2], "big"))
            answer, _ = build_answer(message, info, query, config.cache, 1232, now)
            pipeline.cache.put(query.key, answer)
    return pipeline, wires, queries


GROUPS_CONFIG: Final = """
upstream: {servers: ['127.0.0.1:9']}
groups:
  primary: {networks: ["10.0.0.0/8"], profile: p1}
  secondary: {networks: ["10.1.0.0/16"], profile: p2}
  family: {networks: ["10.1.2.0/24"], profile: p3}
  host: {networks: ["10.1.2.3/32"]}
profiles:
  p1: {categories: [games]}
  p2: {scheduled: {games: school-hours}}
  p3: {categories: [adult]}
"""
"""Four groups at four prefix lengths, three profiles (no safe search: a
rewrite is a different path, not the cost of a group)."""


def group_addresses(count: int) -> list[bytes]:
    """Client addresses spread over the four groups and the default one."""
    bases = (b"\x0a\x05", b"\x0a\x01", b"\x0a\x01\x02", b"\x0b\x00")
    out = []
    for i in range(count):
        base = bases[i % len(bases)]
        tail = (i // len(bases)).to_bytes(4, "big")[len(base) :]
        out.append(base + tail)
    out[0] = b"\x0a\x01\x02\x03"
    return out


def best(stmt: Callable[[], object], count: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` microseconds per call, ``stmt`` doing ``count`` calls."""
    return min(timeit.repeat(stmt, number=1, repeat=repeat)) / count * 1e6


def wakeup_cost(factory: Callable[[], asyncio.AbstractEventLoop] | None, count: int) -> float:
    """Microseconds per call of a reader that is always ready (``None``: bare epoll)."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"x")
    calls = 0
    try:
        if factory is None:
            poller = select.epoll()
            poller.register(read_end, select.EPOLLIN)

            def reader() -> None:
                nonlocal calls
                calls += 1

            readers = {read_end: reader}
            started = time.perf_counter()
            while calls < count:
                for fd, _ in poller.poll(-1, 256):
                    readers[fd]()
            spent = time.perf_counter() - started
            poller.close()
            return spent / count * 1e6
        loop = factory()
        reactor = reactor_for(loop)
        done = loop.create_future()

        def counted() -> None:
            nonlocal calls
            calls += 1
            if calls == count:
                reactor.remove_reader(read_end)
                done.set_result(None)

        reactor.add_reader(read_end, counted)
        loop.call_later(3600, lambda: None)
        started = time.perf_counter()
        loop.run_until_complete(done)
        spent = time.perf_counter() - started
        loop.close()
        return spent / count * 1e6
    finally:
        os.close(read_end)
        os.close(write_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1m", help="list size generated by bench/run (100k, 1m)")
    parser.add_argument("--queries", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="filterd-micro-") as scratch:
        pipeline, wires, queries = build(args.size, args.queries, Path(scratch))
        policy = pipeline.policy
        cache = pipeline.cache
        now = time.monotonic() + 1
        clock = Clock(now)
        hits = [q for q in queries if policy.memoised(q.key) == (None, 0)]
        blocked = [q for q in queries if (policy.memoised(q.key) or (None, 0))[0] is not None]
        addresses = [b"\x7f\x00\x00\x01"] * len(wires)
        guard = pipeline.guard
        names = [q.key[: q.name_end - 12] for q in queries]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        batch = Batch(udp, 64, 4096, 4096)
        sockaddr = (
            socket.AF_INET.to_bytes(2, "little")
            + sink.getsockname()[1].to_bytes(2, "big")
            + socket.inet_aton("127.0.0.1")
            + bytes(20)
        )
        sample = hits[0].data[:2] + cache.get(hits[0].key, now)[WIRE]  # type: ignore[index]

        def send() -> None:
            for _ in range(64):
                batch.queue(sample, sockaddr)
            batch.flush()

        def drain() -> None:
            while True:
                try:
                    sink.recv(4096)
                except BlockingIOError:
                    return

        def send_cost() -> float:
            """Per packet: queueing plus one sendmmsg of 64 (the receiver is drained
            between repeats, outside the timing)."""
            timings = []
            for _ in range(20):
                drain()
                started = time.perf_counter()
                send()
                timings.append(time.perf_counter() - started)
            drain()
            return min(timings) / 64 * 1e6

        rows = [
            ("decode (parse_query)", best(lambda: [parse_query(w) for w in wires], len(wires))),
            ("guard (memo)", best(lambda: [guard.allows(a) for a in addresses], len(addresses))),
            (
                "policy (memo hit)",
                best(lambda: [policy.memoised(q.key) for q in queries], len(queries)),
            ),
            (
                "policy (first decision)",
                best(
                    lambda: [policy.matcher.decide(wire_to_text(n) or b"") for n in names[:20000]],
                    min(20000, len(names)),
                ),
            ),
            ("cache (hit)", best(lambda: [cache.get(q.key, now) for q in hits], len(hits))),
            (
                "serve (answer from cache)",
                best(
                    lambda: [serve(cache.get(q.key, now), q) for q in hits],  # type: ignore[arg-type]
                    len(hits),
                ),
            ),
            (
                "block (render)",
                best(
                    lambda: [
                        policy.memoised(q.key)[0].render(q, 0)  # type: ignore[index,union-attr]
                        for q in blocked
                    ],
                    max(1, len(blocked)),
                ),
            ),
            (
                "send (queue + sendmmsg share)",
                best(lambda: list(map(lambda _: send(), range(100))), 6400),
            ),
            ("whole pipeline (hits and blocks)", whole(pipeline, wires, addresses, clock)),
        ]
        rows += group_rows(pipeline, wires, queries, clock)
        udp.close()
        sink.close()
    for label, factory in (
        ("wake-up: asyncio add_reader", asyncio.new_event_loop),
        ("wake-up: worker's hot loop", serving_loop),
        ("wake-up: bare epoll loop", None),
    ):
        rows.append((label, min(wakeup_cost(factory, 100_000) for _ in range(5))))
    print(f"queries: {len(wires)} ({len(hits)} hits, {len(blocked)} blocked), list {args.size}")
    print("| stage | µs per query (opcodes: count) |\n|---|---|")
    for label, micros in rows:
        print(f"| {label} | {micros:.2f} |")


RATE: Final = 100_000
"""Queries per second of simulated time in ``whole`` and ``opcodes``."""


class Clock:
    """Monotonic readings for a stream of queries at ``RATE``: a pass over the
    file goes on in time where the last one stopped, so the pipeline meets
    the file's mix as a worker does (a name asked again within the second of
    its answer's age is a repeat; after it, the answer is rendered again)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def readings(self, count: int) -> list[float]:
        start = self.now
        self.now += count / RATE
        return [start + i / RATE for i in range(count)]


def opcodes(pipeline: Pipeline, wires: list[bytes], addresses: list[bytes], clock: Clock) -> float:
    """Python bytecodes ``Pipeline.handle`` runs per query (``sys.settrace``
    opcode events): slow to count, but the same on a busy machine as on a
    quiet one, so two variants can be compared where timings are noise."""
    source = _NoReply()
    count = 0
    times = clock.readings(len(wires))

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        for wire, address, now in zip(wires, addresses, times, strict=True):
            pipeline.handle(wire, address, True, source, None, now)  # type: ignore[arg-type]
    finally:
        sys.settrace(None)
    return count / len(wires)


def whole(pipeline: Pipeline, wires: list[bytes], addresses: list[bytes], clock: Clock) -> float:
    """``Pipeline.handle`` end to end, each query from its address, at ``RATE``."""
    source = _NoReply()

    def one_pass() -> None:
        times = clock.readings(len(wires))
        for w, a, now in zip(wires, addresses, times, strict=True):
            pipeline.handle(w, a, True, source, None, now)  # type: ignore[arg-type]

    return best(one_pass, len(wires))


def group_rows(
    pipeline: Pipeline, wires: list[bytes], queries: list[Query], clock: Clock
) -> list[tuple[str, float]]:
    """The group stages (module docstring), on the pipeline's own index."""
    plain = pipeline.policy
    config = parse_config(GROUPS_CONFIG)
    profiles = ProfileSet(config)
    grouped = Policy(plain.matcher, plain.sources, config.blocking, 1232, {}, profiles)
    distinct = group_addresses(65_536)
    table = profiles.groups
    clients = [distinct[i % 4096] for i in range(len(wires))]
    source = _NoReply()
    pipeline.swap_policy(grouped)
    now = clock.now
    for wire, address in zip(wires, clients, strict=True):  # fill the verdict memos
        pipeline.handle(wire, address, True, source, None, now)  # type: ignore[arg-type]
    rows = [
        (
            "group (prefix table, 4 lengths)",
            best(lambda: [table.group_of(a) for a in distinct], len(distinct)),
        ),
        (
            "group (policy memo)",
            best(
                lambda: [
                    grouped.group_of(a, q, now) for a, q in zip(clients, queries, strict=True)
                ],
                len(queries),
            ),
        ),
        ("whole pipeline, 4 groups (hits and blocks)", whole(pipeline, wires, clients, clock)),
    ]
    grouped_opcodes = opcodes(pipeline, wires[:5000], clients[:5000], clock)
    pipeline.swap_policy(plain)
    rows += [
        ("opcodes per query, no groups", opcodes(pipeline, wires[:5000], clients[:5000], clock)),
        ("opcodes per query, 4 groups", grouped_opcodes),
    ]
    return rows


if __name__ == "__main__":
    main()
