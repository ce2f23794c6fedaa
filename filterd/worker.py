"""A worker process: serves DNS on sockets it inherits from the supervisor.

Workers own only the query path. They receive their listening sockets as
inherited file descriptors (so binding, privileged ports and SO_REUSEPORT
are settled once, by the supervisor), and everything else through the
control channel: a ``Prepare`` message carries the configuration and the
path of a compiled index, which the worker maps, prefaults and holds ready;
``Commit`` swaps it in with one reference replacement, ``Abort`` drops it
(the supervisor commits only once every worker has prepared, so that all
serve one generation or all keep the old). ``Install`` is both steps at
once, for a worker that serves nothing yet. Workers never parse lists, never serve HTTP and
never import aiohttp or prometheus-client: their memory is the cache and
their share of the mapped index.

Started as ``python -m filterd.worker --control FD --udp FD... --tcp FD...``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from filterd import control
from filterd.config import Config
from filterd.errors import FilterdError
from filterd.histogram import Histogram
from filterd.listeners.serving import reactor_for, serving_loop
from filterd.listeners.tcp import TcpLimits, TcpListener
from filterd.listeners.udp import UdpListener
from filterd.lists.sources import matcher_for, sources_of
from filterd.logs import configure_logging
from filterd.matching.index import CompiledIndex, IndexFormatError
from filterd.pipeline.clock import clock_from_environment
from filterd.pipeline.memo import release
from filterd.pipeline.pipeline import Pipeline, build_pipeline
from filterd.pipeline.policy import BlockCounter, GroupCounter, Policy
from filterd.pipeline.tally import BlockedNames, Counters
from filterd.profiles.profileset import ProfileSet
from filterd.stats import (
    Buckets,
    CacheStats,
    ForwardStats,
    GroupStats,
    RateLimitStats,
    TcpStats,
    UdpStats,
    UpstreamStats,
    WorkerStats,
)
from filterd.upstream.probes import UpstreamProbes

log = logging.getLogger("filterd.worker")

PREFAULT_SLICE: Final = 2000  # index pages touched per event-loop pass before a swap


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A generation ready to serve: everything ``Commit`` needs, built."""

    generation: int
    index: CompiledIndex
    policy: Policy
    config: Config


class Worker:
    def __init__(
        self,
        control_sock: socket.socket,
        udp_socks: list[tuple[socket.socket, socket.socket]],
        tcp_socks: list[socket.socket],
        pauses: CollectorPauses,
    ) -> None:
        """``udp_socks``: per listen address, the socket that receives and the
        one that sends the answers (the same socket where there is no send
        socket: ``filterd.supervisor.sockets``)."""
        self._control_sock = control_sock
        self._pauses = pauses
        self._udp_socks = udp_socks
        self._tcp_socks = tcp_socks
        self._pipeline: Pipeline | None = None
        self._policy: Policy | None = None
        self._config: Config | None = None
        self._generation = 0
        self._pending: _Prepared | None = None
        self._block_counters: dict[tuple[str, str, str], BlockCounter] = {}
        self._group_counters: dict[str, GroupCounter] = {}
        self._clock = clock_from_environment()
        self._counters = Counters()
        self._blocked_names: BlockedNames | None = None
        self._udp: list[UdpListener] = []
        self._tcp: list[TcpListener] = []
        self._probes: UpstreamProbes | None = None
        self._stopping = asyncio.Event()
        self._releasing: set[asyncio.Task[None]] = set()
        """Retired snapshots' memos being freed a slice at a time (``memo.release``)."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        reader, writer = await asyncio.open_unix_connection(sock=self._control_sock)
        try:
            await self._serve_control(reader, writer)
        finally:
            if self._probes is not None:
                self._probes.stop()
            writer.close()

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            receiving = asyncio.ensure_future(control.receive(reader))
            stopping = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                receiving.cancel()
                await self._drain(self._config.server.drain_timeout if self._config else 0.0)
                return
            stopping.cancel()
            try:
                message = receiving.result()
            except control.ChannelClosed:
                log.warning("supervisor went away; draining")
                await self._drain(self._config.server.drain_timeout if self._config else 0.0)
                return
            if isinstance(message, control.Prepare):
                await control.send(writer, await self._prepare(message))
            elif isinstance(message, control.Commit):
                await control.send(writer, self._commit(message.generation))
            elif isinstance(message, control.Abort):
                self._abort()
                await control.send(writer, control.Installed(message.generation, "aborted"))
            elif isinstance(message, control.StatsRequest):
                await control.send(writer, control.StatsReply(message.request_id, self.stats()))
            elif isinstance(message, control.Drain):
                await self._drain(message.timeout)
                await control.send(writer, control.Drained())
                return

    # --------------------------------------------------------------- install

    async def _prepare(self, message: control.Prepare) -> control.Installed:
        """Map, prefault and wrap the new generation; serve nothing of it yet."""
        self._abort()
        previous = self._policy
        if previous is not None and str(previous.matcher.index.path) == message.index_path:
            index = previous.matcher.index  # the same file (an overlay update): keep the mapping
        else:
            try:
                index = CompiledIndex(Path(message.index_path))
            except (IndexFormatError, OSError) as exc:
                log.error("cannot open index %s: %s", message.index_path, exc)
                return control.Installed(message.generation, str(exc))
            await self._prefault(index)
        sources = message.sources if message.sources is not None else sources_of(index)
        matcher = matcher_for(index, sources, message.overlay)
        config = fit_to_descriptors(message.config)
        policy = Policy(
            matcher,
            sources,
            config.blocking,
            config.server.max_udp_size,
            self._block_counters,
            ProfileSet(config),
            self._group_counters,
            self._clock,
        )
        self._pending = _Prepared(message.generation, index, policy, config)
        return control.Installed(message.generation)

    def _abort(self) -> None:
        """Drop a prepared generation that will not be committed."""
        pending, self._pending = self._pending, None
        serving = self._policy.matcher.index if self._policy is not None else None
        if pending is not None and pending.index is not serving:
            pending.index.close()

    def _commit(self, generation: int) -> control.Installed:
        """Serve the prepared ``generation`` from the next query on."""
        pending = self._pending
        if pending is None or pending.generation != generation:
            return control.Installed(generation, f"generation {generation} is not prepared")
        self._pending = None
        previous = self._policy
        index, policy, config = pending.index, pending.policy, pending.config
        self._keep_blocked_names(config.statistics.blocked_names)
        if self._pipeline is None or self._needs_rebuild(config):
            self._start_pipeline(config, policy)
        else:
            self._pipeline.swap_policy(policy)
            self._pipeline.blocked_names = self._blocked_names
        if previous is not None:
            # Dropped at once, the old snapshot's memos (half a million
            # entries) would stop the query path for several milliseconds.
            task = asyncio.get_running_loop().create_task(release(previous.memos()))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        self._policy = policy
        self._config = config
        self._generation = generation
        if previous is not None and previous.matcher.index is not index:
            # Nothing can hold the old index any more: every stage reads
            # ``pipeline.policy`` at the moment a query passes through it.
            previous.matcher.index.close()
        return control.Installed(generation)

    async def _prefault(self, index: CompiledIndex) -> None:
        """Touch every page of a newly mapped index before it serves, in slices
        between event-loop passes: the first lookups after a swap then find
        their pages mapped instead of taking a page fault each."""
        pages = index.page_count()
        for first in range(0, pages, PREFAULT_SLICE):
            index.touch_pages(first, min(pages, first + PREFAULT_SLICE))
            await asyncio.sleep(0)

    def _needs_rebuild(self, config: Config) -> bool:
        old = self._config
        assert old is not None
        return (old.cache, old.upstream, old.access, old.server) != (
            config.cache,
            config.upstream,
            config.access,
            config.server,
        )

    def _keep_blocked_names(self, top: int) -> None:
        """``statistics.blocked_names``: counting survives reloads unless N changes."""
        current = self._blocked_names
        if top == 0:
            self._blocked_names = None
        elif current is None or current.top != top:
            self._blocked_names = BlockedNames(top)

    def _start_pipeline(self, config: Config, policy: Policy) -> None:
        loop = asyncio.get_running_loop()
        pipeline = build_pipeline(
            config, policy, loop, self._counters, self._blocked_names, reactor_for(loop)
        )
        if self._pipeline is None:
            self._udp = [
                UdpListener(loop, receive, send, pipeline) for receive, send in self._udp_socks
            ]
            limits = tcp_limits(config)
            self._tcp = [TcpListener(loop, sock, pipeline, limits) for sock in self._tcp_socks]
            for udp in self._udp:
                udp.start()
            for tcp in self._tcp:
                loop.create_task(tcp.start())  # noqa: RUF006 - completes at once
        else:
            # Settings that shape the pipeline changed: a fresh pipeline (and
            # cache) serves from the next query on; in-flight upstream
            # exchanges of the old one still answer their clients, and its
            # upstream I/O is closed once they are all past their deadline.
            for udp in self._udp:
                udp.pipeline = pipeline
            for tcp in self._tcp:
                tcp.pipeline = pipeline
                tcp.limits = tcp_limits(config)
            old = self._pipeline
            carry_counts(old, pipeline)
            loop.call_later(old.forwarder.deadline + 1.0, old.forwarder.close)
        for udp in self._udp:
            udp.dont_fragment(config.server.max_udp_size)
        if self._probes is not None:
            self._probes.stop()
        forwarder = pipeline.forwarder
        self._probes = UpstreamProbes(loop, forwarder.io, forwarder.pool, config.upstream)
        self._probes.start()
        self._pipeline = pipeline

    # ------------------------------------------------------------------ drain

    async def _drain(self, timeout: float) -> None:
        for udp in self._udp:
            udp.stop()
        for tcp in self._tcp:
            tcp.stop()
        if self._probes is not None:
            self._probes.stop()
        deadline = time.monotonic() + timeout
        # Polled: answers complete in callbacks all over the pipeline, and a
        # 20 ms tick is negligible next to the drain timeout.
        while time.monotonic() < deadline and self._inflight():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self._pipeline is not None:
            self._pipeline.forwarder.close()
        for tcp in self._tcp:
            tcp.close()
        for udp in self._udp:
            udp.close()

    def _inflight(self) -> int:
        pipeline = self._pipeline
        if pipeline is None:
            return 0
        return pipeline.forwarder.inflight + sum(t.inflight for t in self._tcp)

    # ------------------------------------------------------------------ stats

    def stats(self) -> WorkerStats:
        """Cumulative counters of this process, for the supervisor's /metrics."""
        pipeline = self._pipeline
        if pipeline is None:
            return WorkerStats(gc_pauses=self._pauses.snapshot())
        cache, forwarder, counters = pipeline.cache, pipeline.forwarder, pipeline.counters
        udp, tcp = self._udp, self._tcp
        return WorkerStats(
            gc_pauses=self._pauses.snapshot(),
            queries=counters.queries(),
            latency=counters.latency(),
            blocked={
                (c.source, c.category, c.action): c.count for c in self._block_counters.values()
            },
            blocked_top=tuple(self._blocked_names.candidates()) if self._blocked_names else (),
            cache=CacheStats(
                len(cache), cache.bytes, cache.hits, cache.misses, cache.expired, cache.evictions
            ),
            forward=ForwardStats(
                forwarder.inflight,
                forwarder.coalesced,
                forwarder.overloaded,
                forwarder.client_overloaded,
            ),
            rate_limit=RateLimitStats(counters.rate_dropped, counters.rate_slipped),
            upstreams={
                u.name: UpstreamStats(u.up, u.queries, u.answers, u.rtt.snapshot(), dict(u.errors))
                for u in forwarder.pool.upstreams
            },
            udp=UdpStats(sum(u.recv_errors for u in udp), sum(u.send_errors for u in udp)),
            groups={
                counter.name: GroupStats(counter.queries, counter.blocked, counter.rewritten)
                for counter in self._group_counters.values()
            },
            tcp=TcpStats(
                connections=sum(len(t.connections) for t in tcp),
                accepted=sum(t.accepted for t in tcp),
                rejected=sum(t.rejected for t in tcp),
                client_rejected=sum(t.client_rejected for t in tcp),
                denied=sum(t.denied for t in tcp),
                idle_closed=sum(t.idle_closed for t in tcp),
                slow_closed=sum(t.slow_closed for t in tcp),
            ),
        )


FD_RESERVE: Final = 64
"""Descriptors a worker keeps for itself (control channel, listening and
upstream TCP sockets, the index mapping, logs)."""


def fit_to_descriptors(config: Config) -> Config:
    """``config`` with ``max_inflight`` and ``tcp_max_connections`` lowered in
    proportion if together they need more descriptors than the open-file
    limit allows (each holds one): reaching a configured bound then fails
    cleanly (SERVFAIL, a refused connection) instead of every accept and
    every upstream socket failing for want of a descriptor."""
    server = config.server
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = soft - FD_RESERVE
    wanted = server.max_inflight + server.tcp_max_connections
    if soft == resource.RLIM_INFINITY or wanted <= budget:
        return config
    share = max(budget, 2) / wanted
    inflight = max(1, int(server.max_inflight * share))
    connections = max(1, int(server.tcp_max_connections * share))
    log.warning(
        "open-file limit %d: max_inflight %d -> %d, tcp_max_connections %d -> %d "
        "(raise LimitNOFILE to keep the configured values)",
        soft,
        server.max_inflight,
        inflight,
        server.tcp_max_connections,
        connections,
    )
    fitted = replace(server, max_inflight=inflight, tcp_max_connections=connections)
    return replace(config, server=fitted)


def tcp_limits(config: Config) -> TcpLimits:
    server = config.server
    return TcpLimits(
        server.tcp_idle_timeout,
        server.tcp_max_connections,
        server.tcp_max_pipelined,
        server.tcp_message_timeout,
        server.tcp_max_per_client,
    )


def carry_counts(old: Pipeline, new: Pipeline) -> None:
    """Start ``new``'s cache, forwarder and upstream counters where ``old``'s
    stand, so that /metrics counters stay monotonic across a reload that
    rebuilds the pipeline (answers the old forwarder completes afterwards are
    not counted there; its query outcomes are, in the shared ``Counters``)."""
    new.cache.continue_counts(old.cache)
    new.forwarder.coalesced += old.forwarder.coalesced
    new.forwarder.overloaded += old.forwarder.overloaded
    new.forwarder.client_overloaded += old.forwarder.client_overloaded
    previous = {u.name: u for u in old.forwarder.pool.upstreams}
    for upstream in new.forwarder.pool.upstreams:
        before = previous.get(upstream.name)
        if before is not None:
            upstream.queries += before.queries
            upstream.answers += before.answers
            upstream.errors.update(before.errors)
            upstream.rtt.add(before.rtt)


GC_YOUNG_THRESHOLD: Final = 50_000
GC_GENERATIONS: Final = 3


class CollectorPauses:
    """How long each collection of the cyclic garbage collector stopped this
    process, by generation (``filterd_gc_pause_seconds``): a worker answers
    nothing while one runs. A ``gc.callbacks`` entry: two clock readings a
    collection, and collections are rare while the query path's tables stay
    out of the collector's sight (``filterd.pipeline.untracked``); this
    metric is how an operator sees that they do."""

    def __init__(self) -> None:
        self.generations = tuple(Histogram() for _ in range(GC_GENERATIONS))
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.generations[info["generation"]].observe(time.perf_counter() - self._started)

    def snapshot(self) -> dict[str, Buckets]:
        """The pauses so far by generation ("0", "1", "2"), every generation present."""
        return {str(number): pauses.snapshot() for number, pauses in enumerate(self.generations)}


def tune_garbage_collector() -> CollectorPauses:
    """Fewer, larger young collections, none over start-up objects, and each
    one timed (returned: ``CollectorPauses``, installed).

    A query allocates several container objects that die within the
    callback (freed by reference counting); the cyclic collector only has
    to find the rare cycle. At the default threshold (700 allocations) it
    ran every few dozen cache misses and took about 15 % of a worker's CPU
    under miss-heavy load; at 50,000 it costs about 1 %. What a collection
    visits is what decides its pause: the objects of the queries in flight,
    since the tables the query path fills stay untracked.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)
    pauses = CollectorPauses()
    gc.callbacks.append(pauses)
    return pauses


def _fds(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _udp_pairs(receive: str, send: str) -> list[tuple[socket.socket, socket.socket]]:
    """The receiving sockets, each with its send socket ("-": none, it sends itself)."""
    receiving = [socket.socket(fileno=fd) for fd in _fds(receive)]
    sending = [part for part in send.split(",") if part]
    return [
        (sock, sock if fd == "-" else socket.socket(fileno=int(fd)))
        for sock, fd in zip(receiving, sending, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filterd-worker")
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--udp", default="")
    parser.add_argument("--udp-send", default="")
    parser.add_argument("--tcp", default="")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, f"worker{args.index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    control_sock = socket.socket(fileno=args.control)
    udp = _udp_pairs(args.udp, args.udp_send)
    tcp = [socket.socket(fileno=fd) for fd in _fds(args.tcp)]
    pauses = tune_garbage_collector()
    try:
        with asyncio.Runner(loop_factory=serving_loop) as runner:
            runner.run(Worker(control_sock, udp, tcp, pauses).run())
    except FilterdError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
