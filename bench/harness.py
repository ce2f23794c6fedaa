"""CLI of the benchmark: filterd and Unbound-with-RPZ, same list, same traffic, one run.

Why one command for both: on a shared 2-core machine run-to-run noise is large
(up to ~30 %), so absolute figures from different runs are not comparable; the
filterd/Unbound ratios measured back to back in one run are. For every list
size, each target is started fresh (server on one CPU, NSD and dnsperf on the
other), timed until the list is enforced, warmed and loaded closed-loop for
its rate; then, with every target up, each is loaded closed-loop once more
recording every answer's latency, and all are loaded at a fixed rate in
rounds that alternate the targets (``latency_rounds``: latency at a low rate
moves with the VM's minute more than with the server), and flooded up a
ladder of rates by kxdpgun, a client that is not the limit (``bench.flood``);
last, each is loaded with cache misses and stopped by its PID.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

from bench import data as bdata
from bench import flood as bflood
from bench.measure import (
    Load,
    PerfResult,
    alternating,
    merge,
    percentiles,
    run_dnsperf,
    wait_enforced,
)
from bench.targets import (
    REPO,
    TARGETS,
    Network,
    Nsd,
    Proc,
    Target,
    TargetError,
    free_port,
    make_target,
    query_rcode,
    spawn,
    tree_memory,
)

DEFAULT_SHARED: Final = REPO.parent / "shared" / "data"
DEFAULT_OUT: Final = REPO / "bench" / "results"
LATENCY_POINTS: Final = (50.0, 99.0, 99.9)
CLIENT_BOUND: Final = 0.97
"""dnsperf's share of its core from which a closed loop measured the client too."""
FLOOD_NETWORK: Final = Network(bflood.SERVER_ADDRESS, bflood.CLIENTS)
FLOOD_STEPS: Final = (0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
"""The flood ladder's offered rates, times the dnsperf client ceiling."""
STEAL_WARNING: Final = 0.05
"""The share of the server's core stolen by the hypervisor above which a figure is flagged."""
FLOOD_CLEAN: Final = 0.99
"""The answered share at which an offered rate counts as served."""
NOT_COMPILED: Final = "query path: not compiled"
"""What filterd logs at start without its compiled query path (``filterd.compiled``)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What the command line decided; recorded in the JSON next to the figures."""

    sizes: tuple[int, ...]
    targets: tuple[str, ...]
    duration: float
    rate: int
    latency_rounds: int
    closed: Load
    miss: Load
    warm_seconds: float
    enforce_timeout: float
    server_cpu: int
    client_cpu: int
    params: bdata.DataParams
    flood: bool
    """Whether the flood ladder (``bench.flood``) runs; the targets then also
    listen on its veth."""

    @property
    def flood_seconds(self) -> int:
        """kxdpgun's ``-t`` per step: a latency round's length, at least 2 s."""
        return max(2, round(self.duration / self.latency_rounds))


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path, Path, bool]:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark filterd against Unbound+RPZ on one blocklist (loopback only).",
    )
    p.add_argument("--sizes", default=None, help="list sizes, e.g. 100k,1m (default 100k,1m)")
    p.add_argument("--duration", type=float, default=None, help="seconds per load run (30)")
    p.add_argument("--rate", type=int, default=None, help="open-loop qps for latency (10000)")
    p.add_argument(
        "--latency-rounds",
        type=int,
        default=None,
        help="fixed-rate latency runs per target, alternating the targets (5; --quick: 3)",
    )
    p.add_argument(
        "--targets",
        default="unbound,filterd",
        help="comma list: unbound,filterd,filterd-2w,filterd-2w-2cpu",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 20k list, 3 s runs")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c for closed-loop hit runs")
    p.add_argument("--outstanding", type=int, default=200, help="dnsperf -q, closed-loop hits")
    p.add_argument("--miss-clients", type=int, default=8, help="dnsperf -c for miss runs")
    p.add_argument("--miss-outstanding", type=int, default=1000, help="dnsperf -q for misses")
    p.add_argument("--blocked-share", type=float, default=0.05, help="blocked share of queries")
    p.add_argument("--enforce-timeout", type=float, default=600.0, help="max s until enforced")
    p.add_argument(
        "--no-flood",
        action="store_true",
        help="skip the max-qps ladder with kxdpgun over a veth (bench/flood.py)",
    )
    p.add_argument("--seed", type=int, default=bdata.DEFAULT_SEED)
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared/data directory")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    a = p.parse_args(argv)

    quick = bool(a.quick)
    sizes_text = a.sizes or ("20k" if quick else "100k,1m")
    sizes = tuple(sorted({bdata.parse_size(s) for s in sizes_text.split(",") if s.strip()}))
    duration = float(a.duration if a.duration is not None else (3 if quick else 30))
    rate = int(a.rate if a.rate is not None else (2000 if quick else 10_000))
    if quick:
        params = bdata.DataParams(
            sizes=sizes, top_n=20_000, hit_queries=100_000, miss_queries=300_000,
            nx_pool=500, blocked_share=a.blocked_share, seed=a.seed,
        )  # fmt: skip
    else:
        # Enough unique miss queries for `duration` seconds at up to ~100k qps.
        miss = max(1_000_000, min(10_000_000, int(duration * 100_000)))
        params = bdata.DataParams(
            sizes=sizes, miss_queries=miss, blocked_share=a.blocked_share, seed=a.seed
        )
    rounds = int(a.latency_rounds if a.latency_rounds is not None else (3 if quick else 5))
    if rounds < 1 or duration / rounds < 1.0:
        p.error(f"--latency-rounds {rounds}: need 1 to {int(duration)} (a round of at least 1 s)")
    targets = tuple(t.strip() for t in a.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        p.error(f"--targets: unknown {unknown or 'empty'}; known: {', '.join(TARGETS)}")
    settings = Settings(
        sizes=sizes,
        targets=targets,
        duration=duration,
        rate=rate,
        latency_rounds=rounds,
        closed=Load(clients=a.clients, outstanding=a.outstanding),
        miss=Load(clients=a.miss_clients, outstanding=a.miss_outstanding),
        warm_seconds=max(60.0, duration * 4),
        enforce_timeout=a.enforce_timeout,
        server_cpu=0,
        client_cpu=1,
        params=params,
        flood=not a.no_flood,
    )
    return settings, a.shared, a.out, quick


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


def _perf_dict(r: PerfResult) -> dict[str, Any]:
    d = asdict(r)
    d.pop("latencies_s")
    d["lost_pct"] = r.lost_pct
    d["nxdomain_pct"] = 100.0 * r.rcode_share("NXDOMAIN")
    return d


@dataclass(slots=True)
class Running:
    """A target started and loaded closed-loop, kept up until the latency rounds are done."""

    target: Target
    size: bdata.SizeData
    work: Path
    port: int
    proc: Proc
    upstream_pid: int
    out: dict[str, Any]
    passes: int  # a count bound for closed-loop runs that cannot bind below 500k qps
    warm: PerfResult | None = None
    closed: PerfResult | None = None
    latency: PerfResult | None = None

    @property
    def label(self) -> str:
        return f"{self.target.name} {bdata.size_tag(self.size.size)}"

    @property
    def key(self) -> str:
        """Its key in the report's ``results`` and ``failures``."""
        return f"{self.target.name}-{bdata.size_tag(self.size.size)}"

    def perf(self, st: Settings, name: str, path: Path, load: Load, **kw: Any) -> PerfResult:
        r = run_dnsperf(
            self.port, path, load, cpu=st.client_cpu, server_cpu=st.server_cpu,
            server_pid=self.proc.pid, upstream_pid=self.upstream_pid,
            output=self.work / f"dnsperf-{name}.out", **kw,
        )  # fmt: skip
        say(
            f"[{self.label}] {name}: {r.qps:,.0f} qps, lost {r.lost_pct:.2f} %, "
            f"CPU server {r.server_cpu:.0%} (core {r.server_core_busy:.0%}, steal "
            f"{r.server_core_steal:.0%}) nsd {r.upstream_cpu:.0%} dnsperf {r.dnsperf_cpu:.0%}"
        )
        return r

    def timed(self, st: Settings, name: str, path: Path, load: Load, **kw: Any) -> PerfResult:
        """A run with a line per answer (-v); its percentiles go in ``out[name]``."""
        r = self.perf(st, name, path, load, verbose=True, **kw)
        key = name.replace("-", "_")
        self.out[key] = _perf_dict(r)
        self.out[key]["percentiles_ms"] = _percentiles_ms(r.latencies_s)
        say(f"[{self.label}] {name}: {self.out[key]['percentiles_ms']}")
        return r


def _percentiles_ms(latencies: Sequence[float]) -> dict[str, float | None]:
    return {k: _ms(v) for k, v in percentiles(latencies, LATENCY_POINTS).items()}


def start_and_load(
    *,
    target: Target,
    size: bdata.SizeData,
    nsd: Nsd,
    nsd_proc: Proc,
    st: Settings,
    run_dir: Path,
) -> Running:
    """Start ``target`` fresh; time it until the list is enforced; warm it; load it
    closed-loop. It stays up (the caller stops it) for ``latency_rounds``."""
    tag = bdata.size_tag(size.size)
    work = run_dir / f"{target.name}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    list_path = target.list_path(size.domains_path.resolve(), size.rpz_path.resolve())
    cmd = target.command(work, port, nsd.port, list_path, FLOOD_NETWORK if st.flood else None)
    say(f"[{target.name} {tag}] start: {' '.join(cmd)}")
    proc = spawn(target.name, cmd, target.cpus or st.server_cpu, work / "server.log", work)
    run = Running(
        target=target,
        size=size,
        work=work,
        port=port,
        proc=proc,
        upstream_pid=nsd_proc.pid,
        out={"target": target.name, "size": size.size, "pid": proc.pid},
        passes=math.ceil(st.duration * 500_000 / st.params.hit_queries) + 1,
    )
    try:
        enf = wait_enforced(
            proc, port, size.probes, ready=target.ready_check(), timeout=st.enforce_timeout
        )
        run.out["enforcement"] = asdict(enf)
        if enf.enforced_s is None:
            raise TargetError(f"{target.name}: list not enforced after {st.enforce_timeout} s")
        say(
            f"[{run.label}] enforced after {enf.enforced_s:.2f} s "
            f"(first answer {enf.first_answer_s:.2f} s, ready {enf.ready_s}, "
            f"unfiltered probe answers {enf.unfiltered_answers})"
        )
        if NOT_COMPILED in (work / "server.log").read_text(errors="replace"):
            # A filterd that serves the same answers with more CPU per query:
            # e.g. a worktree installed without -e, whose source this
            # harness's PYTHONPATH puts first. Its figures would be wrong.
            raise TargetError(f"{target.name}: {NOT_COMPILED} (see its server.log)")
        run.out["memory_loaded"] = asdict(tree_memory(proc.pid))
        run.warm = run.perf(
            st, "warm", size.warm_path, st.miss, duration=st.warm_seconds,
            max_runs=target.warm_passes,
        )  # fmt: skip
        run.out["warm"] = _perf_dict(run.warm)
        run.closed = run.perf(
            st, "closed", size.hit_path, st.closed, duration=st.duration, max_runs=run.passes
        )
        run.out["closed"] = _perf_dict(run.closed)
        mem = tree_memory(proc.pid)
        run.out["memory_warm"] = asdict(mem)
        say(
            f"[{run.label}] memory: RSS {mem.rss_mib:,.0f} MiB, PSS {mem.pss_mib:,.0f} "
            f"MiB over {mem.processes} process(es)"
        )
    except BaseException:
        stop(run)
        raise
    return run


def round_files(size: bdata.SizeData, st: Settings, run_dir: Path) -> list[Path]:
    """The hit-heavy file's head cut into one file per latency round, so that
    every round asks new questions of the mix (dnsperf always starts a file
    at its first line) and every target gets the same questions in round r."""
    seconds = st.duration / st.latency_rounds
    per_round = math.ceil(st.rate * seconds * 1.25)  # the time bound binds, not the file
    paths: list[Path] = []
    with size.hit_path.open() as source:
        for number in range(st.latency_rounds):
            path = run_dir / f"latency-{bdata.size_tag(size.size)}-{number}.txt"
            with path.open("w") as out:
                for _ in range(per_round):
                    line = source.readline()
                    if not line:
                        source.seek(0)
                        line = source.readline()
                    out.write(line)
            paths.append(path)
    return paths


def latency_rounds(running: Sequence[Running], st: Settings, run_dir: Path) -> None:
    """The closed loop with a line per answer, then the fixed-rate latency runs,
    alternating the targets round by round.

    Why alternating: on a shared VM, latency at a fixed rate moves more between
    minutes (the hypervisor's steal, its idle path) than between servers, so
    one run per target in turn measures the minute as much as the server. In
    rounds, each target sees the same noisy periods (``bench/floor`` does the
    same); the pooled percentiles go in ``out["latency"]``, every round's in
    ``out["latency"]["rounds"]``. The closed-loop run comes first for every
    target, so that every cache is refreshed (answers past their TTL fetched
    again) within seconds of the rounds."""
    if not running:
        return
    for run in running:
        # Not the max-qps run: writing a line per answer costs dnsperf CPU.
        run.timed(st, "closed-latency", run.size.hit_path, st.closed, duration=st.duration,
                  max_runs=run.passes)  # fmt: skip
    paths = round_files(running[0].size, st, run_dir)
    seconds = st.duration / st.latency_rounds
    load = Load(st.closed.clients, st.closed.outstanding, rate=st.rate, timeout_s=1.0)
    results: dict[str, list[PerfResult]] = {run.label: [] for run in running}
    for number, path in enumerate(paths):
        for run in alternating(running, number):
            r = run.perf(st, f"latency-{number}", path, load, duration=seconds, max_runs=1,
                         verbose=True)  # fmt: skip
            results[run.label].append(r)
    for run in running:
        rounds = results[run.label]
        run.latency = merge(rounds)
        run.out["latency"] = _perf_dict(run.latency)
        run.out["latency"]["percentiles_ms"] = _percentiles_ms(run.latency.latencies_s)
        run.out["latency"]["rounds"] = [
            {
                "steal": r.server_core_steal,
                "stalls": stall_clusters(r.latencies_s),
                "kthreads_ms": round(sum(r.server_core_kthreads.values()), 2),
                "kthreads": r.server_core_kthreads,
                **_percentiles_ms(r.latencies_s),
            }
            for r in rounds
        ]
        say(f"[{run.label}] latency, {len(rounds)} rounds: {run.out['latency']['percentiles_ms']}")


STALL_S: Final = 0.001
STALL_GAP: Final = 20


def stall_clusters(latencies: Sequence[float]) -> int:
    """Runs of answers slower than ``STALL_S``, in dnsperf's order, answers
    less than ``STALL_GAP`` apart counting as one: each is a stall of the
    server or of the machine under it. On this VM some 2-second rounds have
    stalls of a few milliseconds for either server (bench/README.md,
    "Sixth round": a kernel thread on the server's CPU, counted in the
    round's ``kthreads``), which moves that round's p99."""
    clusters = 0
    last = -STALL_GAP - 1
    for index, latency in enumerate(latencies):
        if latency > STALL_S:
            if index - last > STALL_GAP:
                clusters += 1
            last = index
    return clusters


CAPACITY_SHARE: Final = 0.7
"""The fixed rate of the capacity run: this share of the slowest target's
closed-loop rate, so that no target (and not the load generator) is the limit."""


def capacity_at_rate(running: Sequence[Running], st: Settings) -> None:
    """Each target at one fixed rate below every target's maximum: the CPU a
    query costs it, as the rate over the share of its core busy (softirq
    included), which is what one core would serve if neither the load
    generator nor anything else were the limit.

    Why: on a fast machine one dnsperf core is itself near its limit when it
    drives the faster server closed-loop (dnsperf at 98-99 % of its core, the
    server at 93-99 % of its own on 2026-12-04), so the closed-loop ratio is
    bounded by the client, not by the servers. At a rate both servers and
    dnsperf sustain, the ratio of capacities is the ratio of CPU per query.
    In ``st.latency_rounds`` rounds that alternate the targets, as latency
    is measured and for the same reason: the same server's CPU per query
    moved by 10 % between minutes of one session."""
    closed = [run.closed.qps for run in running if run.closed is not None]
    if not closed:
        return
    rate = max(1000, int(min(closed) * CAPACITY_SHARE) // 1000 * 1000)
    load = Load(st.closed.clients, st.closed.outstanding, rate=rate, timeout_s=1.0)
    seconds = st.duration / st.latency_rounds
    results: dict[str, list[PerfResult]] = {run.label: [] for run in running}
    for number in range(st.latency_rounds):
        for run in alternating(running, number):
            r = run.perf(st, f"capacity-{number}", run.size.hit_path, load, duration=seconds,
                         max_runs=run.passes)  # fmt: skip
            if r.server_core_busy <= 0 or r.qps <= 0:
                raise TargetError(
                    f"{run.label}: capacity run at {r.qps:.0f} qps, "
                    f"core {r.server_core_busy:.0%} busy"
                )
            results[run.label].append(r)
    for run in running:
        rounds = results[run.label]
        r = merge(rounds)
        busy = r.server_core_busy
        run.out["capacity"] = {
            **_perf_dict(r),
            "rate": rate,
            "capacity_qps": r.qps / busy,
            "cpu_us_per_query": 1e6 * busy / r.qps,
            "rounds": [1e6 * x.server_core_busy / x.qps for x in rounds],
        }
        say(
            f"[{run.label}] capacity at {rate:,} qps, {len(rounds)} rounds: core {busy:.0%} "
            f"busy, {1e6 * busy / r.qps:.2f} us per query, {r.qps / busy:,.0f} qps on one core"
        )


def flood_ladder(
    servers: Sequence[tuple[str, int]],
    base: float,
    st: Settings,
    link: bflood.Link,
    queries: Path,
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Each server flooded by kxdpgun at ``FLOOD_STEPS`` times ``base`` (the
    dnsperf client ceiling), the servers alternating step by step as the
    latency rounds alternate, and for the same reason.

    Why a ladder and not one high rate: a server's answers under overload
    can fall as the offered rate rises (it spends its core taking in what it
    then cannot answer), so its maximum is the most it answered at any step;
    the highest rate it answered almost wholly (``FLOOD_CLEAN``) is the
    other figure an operator sizes by.

    A kxdpgun run that fails leaves every server's ladder as ``{"error":
    why}``: the run's other figures stand."""
    rates = sorted({max(1000, int(base * f) // 1000 * 1000) for f in FLOOD_STEPS})
    steps: dict[str, list[bflood.Flood]] = {label: [] for label, _ in servers}
    try:
        for number, rate in enumerate(rates):
            for label, port in alternating(servers, number):
                f = bflood.flood(
                    link, port, queries, rate=rate, seconds=st.flood_seconds,
                    cpu=st.client_cpu, server_cpu=st.server_cpu,
                    output=out_dir / f"kxdpgun-{label.replace(' ', '-')}-{rate}.out",
                )  # fmt: skip
                say(
                    f"[{label}] flood at {rate:,} qps: {f.qps:,.0f} answered "
                    f"({f.answered_share:.1%}), refused {f.refused:,}, lost before the "
                    f"server {f.lost_before_server:,}, kxdpgun missed {f.lost_after_server:,}, "
                    f"{f.cpu_us_per_answer:.2f} µs of the server core per answer"
                )
                steps[label].append(f)
    except TargetError as exc:
        say(f"flood ladder FAILED: {exc}")
        return {label: {"error": str(exc)} for label, _ in servers}
    return {label: flood_summary(floods) for label, floods in steps.items()}


def flood_summary(steps: Sequence[bflood.Flood]) -> dict[str, Any]:
    """A server's ladder: its most answered, the highest rate it served
    almost wholly, and how much of what it sent the client missed."""
    top = max(steps, key=lambda f: f.qps)
    clean = [f.offered for f in steps if f.answered_share >= FLOOD_CLEAN]
    missed = [f.lost_after_server / f.server_sent for f in steps if f.server_sent]
    short = [f.lost_before_server / f.sent for f in steps if f.sent]
    return {
        "max_qps": top.qps,
        "offered_at_max": top.offered,
        "answered_pct_at_max": 100.0 * top.answered_share,
        "cpu_us_per_answer_at_max": top.cpu_us_per_answer,
        "clean_qps": max(clean) if clean else None,
        "client_missed_pct": 100.0 * max(missed, default=0.0),
        "lost_before_server_pct": 100.0 * max(short, default=0.0),
        "steps": [
            {
                **asdict(f),
                "answered_pct": 100.0 * f.answered_share,
                "client_missed": f.lost_after_server,
                "lost_before_server": f.lost_before_server,
            }
            for f in steps
        ],
    }


def measure_size(
    sd: bdata.SizeData,
    targets: Sequence[Target],
    *,
    nsd: Nsd,
    nsd_proc: Proc,
    ds: bdata.Dataset,
    st: Settings,
    run_dir: Path,
    flood: tuple[bflood.Link, float] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every phase of one list size, every target up together from the first
    load to the last: (results, failures) by target key. ``flood`` is the
    link and the client ceiling the ladder's rates are multiples of."""
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    running: list[Running] = []
    try:
        for t in targets:
            try:
                running.append(
                    start_and_load(
                        target=t, size=sd, nsd=nsd, nsd_proc=nsd_proc, st=st, run_dir=run_dir
                    )
                )
            except TargetError as exc:
                key = f"{t.name}-{bdata.size_tag(sd.size)}"
                failures[key] = str(exc)
                say(f"[{key}] FAILED: {exc}")
        try:
            latency_rounds(running, st, run_dir)
            capacity_at_rate(running, st)
            if flood and running:
                link, ceiling = flood
                servers = [(run.label, run.port) for run in running]
                ladder = flood_ladder(servers, ceiling, st, link, sd.hit_path, run_dir)
                for run in running:
                    run.out["flood"] = ladder[run.label]
            finishing = running
        except TargetError as exc:
            for run in running:
                failures[run.key] = str(exc)
            say(f"latency rounds, capacity or flood FAILED: {exc}")
            finishing = []
        for run in finishing:
            try:
                results[run.key] = finish(run, ds, st)
            except TargetError as exc:
                failures[run.key] = str(exc)
                say(f"[{run.key}] FAILED: {exc}")
    finally:
        for run in running:
            stop(run)
    return results, failures


def finish(run: Running, ds: bdata.Dataset, st: Settings) -> dict[str, Any]:
    """The cache-miss pass, the last memory reading, the checks; then stop."""
    try:
        miss = run.perf(st, "miss", ds.miss_path, st.miss, duration=st.duration, max_runs=1)
        run.out["miss"] = _perf_dict(miss)
        run.out["memory_end"] = asdict(tree_memory(run.proc.pid))
        assert run.warm is not None and run.closed is not None and run.latency is not None
        run.out["checks"] = checks(run.warm, run.closed, run.latency, miss, run.size)
        for c in run.out["checks"]:
            say(f"[{run.label}] WARNING: {c}")
    finally:
        stop(run)
    return run.out


def stop(run: Running) -> None:
    """Stop the target by its PID (once); a non-zero exit is a check that failed."""
    if "exit_code" in run.out:
        return
    code = run.proc.stop()
    run.out["exit_code"] = code
    if code != 0:
        run.out.setdefault("checks", []).append(f"exit code {code} after SIGTERM (expected 0)")
    say(f"[{run.label}] stopped pid {run.proc.pid}, exit code {code}")


def latency_floor(
    ds: bdata.Dataset, st: Settings, run_dir: Path, link: bflood.Link | None
) -> dict[str, Any]:
    """The same open-loop latency run against a second NSD pinned to the server
    CPU, then the targets' closed loop against it.

    NSD answers from a precompiled zone with no cache, filter or upstream, so
    its tail is what this machine, its scheduler and dnsperf add by themselves;
    on a small VM that floor is far from zero at p99.9 and must be read next to
    the targets' tails. Its closed-loop rate is the *client ceiling*: on two
    cores dnsperf has one, and when it is busy all the time the closed loop
    measures dnsperf as much as the server. A target's max qps near the
    ceiling says the server was not the limit; the capacity figure (the
    rate over the share of the server core busy) is the comparison dnsperf
    does not bound.

    With ``link``, NSD is flooded too, up the same ladder as the targets: the
    most kxdpgun drove it to, and how much of what NSD sent kxdpgun missed,
    say how far the flood's figures are the client's rather than the server's.
    """
    network = FLOOD_NETWORK if link else None
    nsd = Nsd(run_dir / "floor", ds.zone_path.resolve(), cpu=st.server_cpu, network=network)
    proc = nsd.start()

    def load_nsd(label: str, load: Load, path: Path, verbose: bool) -> PerfResult:
        return run_dnsperf(
            nsd.port,
            path,
            load,
            duration=st.duration,
            cpu=st.client_cpu,
            server_cpu=st.server_cpu,
            server_pid=proc.pid,
            upstream_pid=None,
            output=run_dir / "floor" / f"dnsperf-{label}.out",
            verbose=verbose,
        )

    try:
        time.sleep(2.0)  # let NSD's zone-load aftermath settle before timing anything
        load = Load(st.closed.clients, st.closed.outstanding, rate=st.rate, timeout_s=1.0)
        r = load_nsd("latency", load, ds.sizes[min(ds.sizes)].hit_path, verbose=True)
        ceiling = load_nsd("closed", st.closed, ds.sizes[max(st.sizes)].hit_path, verbose=False)
        flood = None
        if link:
            hits = ds.sizes[max(st.sizes)].hit_path
            ladder = flood_ladder(
                [("nsd", nsd.port)], ceiling.qps, st, link, hits, run_dir / "floor"
            )
            flood = ladder["nsd"]
    finally:
        proc.stop()
    pct = {k: _ms(v) for k, v in percentiles(r.latencies_s, LATENCY_POINTS).items()}
    say(f"latency floor (NSD on CPU {st.server_cpu}) at {st.rate} qps: {pct}")
    say(
        f"client ceiling (NSD on CPU {st.server_cpu}, closed loop): {ceiling.qps:,.0f} qps, "
        f"dnsperf CPU {ceiling.dnsperf_cpu:.0%}, NSD CPU {ceiling.server_cpu:.0%}"
    )
    return {
        **_perf_dict(r), "percentiles_ms": pct, "closed": _perf_dict(ceiling), "flood": flood
    }  # fmt: skip


def ceiling_note(results: dict[str, dict[str, Any]], floor: dict[str, Any]) -> str:
    """Each target's closed-loop rate next to the client ceiling, and whether
    dnsperf was the busy side (at least ``CLIENT_BOUND`` of its core)."""
    closed = floor["closed"]
    lines = [
        f"\nClient ceiling: dnsperf against NSD on the server CPU, same closed loop: "
        f"{closed['qps']:,.0f} qps (dnsperf CPU {closed['dnsperf_cpu']:.0%}, "
        f"NSD {closed['server_cpu']:.0%})."
    ]
    for key, result in results.items():
        run = result.get("closed")
        if not run:
            continue
        bound = (
            "dnsperf saturated: a lower bound of the server's rate"
            if run["dnsperf_cpu"] >= CLIENT_BOUND
            else "dnsperf had headroom"
        )
        lines.append(
            f"- {key}: {run['qps']:,.0f} qps = {run['qps'] / closed['qps']:.2f}x the ceiling, "
            f"dnsperf CPU {run['dnsperf_cpu']:.0%}, server {run['server_cpu']:.0%}: {bound}"
        )
    return "\n".join(lines) + "\n"


def checks(
    warm: PerfResult,
    closed: PerfResult,
    lat: PerfResult,
    miss: PerfResult,
    size: bdata.SizeData,
) -> list[str]:
    """Reasons to distrust a figure; printed and stored, never silently dropped."""
    warn: list[str] = []
    if not warm.end_of_file:
        warn.append("warm: the warm-up hit its time limit; the cache was not fully warm")
    for name, r in (("closed", closed), ("latency", lat)):
        got = r.rcode_share("NXDOMAIN")
        if abs(got - size.expected_nxdomain) > 0.01:
            warn.append(
                f"{name}: NXDOMAIN share {got:.2%}, expected {size.expected_nxdomain:.2%} "
                "(list not enforced as generated?)"
            )
        if r.rcodes.get("SERVFAIL", 0):
            warn.append(f"{name}: {r.rcodes['SERVFAIL']} SERVFAIL answers")
    for name, r in (("closed", closed), ("miss", miss)):
        if r.lost_pct > 1.0:
            warn.append(f"{name}: {r.lost_pct:.1f} % lost; qps is a lower bound under loss")
        if r.server_cpu < 0.85:
            warn.append(f"{name}: server used only {r.server_cpu:.0%} of its core (not saturated)")
    for name, r in (("closed", closed), ("miss", miss)):
        other = r.server_core_busy - r.server_cpu
        if other > 0.15:
            warn.append(
                f"{name}: {other:.0%} of the server's CPU went to something else (softirq, or "
                "other processes on the machine): the figure is low by up to that much"
            )
    for name, r in (("closed", closed), ("latency", lat), ("miss", miss)):
        if r.server_core_steal > STEAL_WARNING:
            warn.append(f"{name}: hypervisor stole {r.server_core_steal:.0%} of the server's CPU")
    if miss.end_of_file and miss.runtime_s < 0.5 * lat.runtime_s:
        warn.append("miss: ran out of unique queries early; increase miss_queries")
    return warn


def say(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


def _version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).splitlines()
    hits = [ln for ln in lines if "ersion" in ln] or lines
    return hits[0].strip() if hits else "?"


def environment() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "unbound": _version(["/usr/sbin/unbound", "-V"]),
        "nsd": _version(["/usr/sbin/nsd", "-v"]),
        "dnsperf": _version(["dnsperf", "-h"]),
    }


# --- report ------------------------------------------------------------------------

# (row label, key path into one target's result)
_ROWS: Final[list[tuple[str, tuple[str, ...]]]] = [
    ("max qps, closed loop (hit-heavy)", ("closed", "qps")),
    ("  lost % (closed loop)", ("closed", "lost_pct")),
    ("  NXDOMAIN % (closed loop)", ("closed", "nxdomain_pct")),
    ("  server CPU, cores (closed loop)", ("closed", "server_cpu")),
    ("  server core busy incl. softirq", ("closed", "server_core_busy")),
    ("  p50 ms, closed loop (-v run)", ("closed_latency", "percentiles_ms", "p50")),
    ("  p99 ms, closed loop (-v run)", ("closed_latency", "percentiles_ms", "p99")),
    ("  qps of the -v run", ("closed_latency", "qps")),
    ("latency p50 ms @ rate", ("latency", "percentiles_ms", "p50")),
    ("latency p99 ms @ rate", ("latency", "percentiles_ms", "p99")),
    ("latency p99.9 ms @ rate", ("latency", "percentiles_ms", "p99.9")),
    ("  lost % @ rate", ("latency", "lost_pct")),
    ("max qps, flood (kxdpgun, most answered)", ("flood", "max_qps")),
    ("  offered qps at that max", ("flood", "offered_at_max")),
    ("  answered % at that max", ("flood", "answered_pct_at_max")),
    ("  highest offered qps answered >= 99 %", ("flood", "clean_qps")),
    ("  CPU µs per answer at the max", ("flood", "cpu_us_per_answer_at_max")),
    ("capacity qps on one core (rate / core busy)", ("capacity", "capacity_qps")),
    ("  CPU µs per query at that rate", ("capacity", "cpu_us_per_query")),
    ("  rate of the capacity run", ("capacity", "rate")),
    ("cache-miss qps", ("miss", "qps")),
    ("  lost % (miss)", ("miss", "lost_pct")),
    ("RSS MiB (warm, whole tree)", ("memory_warm", "rss_mib")),
    ("PSS MiB (warm, whole tree)", ("memory_warm", "pss_mib")),
    ("RSS MiB (list loaded, cold)", ("memory_loaded", "rss_mib")),
    ("s until list enforced", ("enforcement", "enforced_s")),
]


def _get(result: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    cur: Any = result
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return float(cur) if isinstance(cur, (int, float)) else None


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if v else "0"


def markdown(results: dict[str, dict[str, Any]], st: Settings) -> str:
    """One table: per size, a column per target and the filterd/Unbound ratio."""
    cols: list[tuple[str, str]] = []
    header = ["figure"]
    for size in st.sizes:
        tag = bdata.size_tag(size)
        for t in st.targets:
            cols.append((t, tag))
            header.append(f"{t} {tag}")
        if "filterd" in st.targets and "unbound" in st.targets:
            cols.append(("ratio", tag))
            header.append(f"filterd/unbound {tag}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, path in _ROWS:
        cells = [label]
        for t, tag in cols:
            if t == "ratio":
                f = _get(results.get(f"filterd-{tag}"), path)
                u = _get(results.get(f"unbound-{tag}"), path)
                cells.append(f"{f / u:.2f}x" if f is not None and u else "-")
            else:
                cells.append(_fmt(_get(results.get(f"{t}-{tag}"), path)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _kthreads_cell(round_: dict[str, Any]) -> str:
    """A round's kernel-thread time on the server CPU, and its biggest user."""
    threads: dict[str, float] = round_.get("kthreads") or {}
    if not threads:
        return "-" if "kthreads" not in round_ else "0"
    top = max(threads, key=threads.__getitem__)
    return f"{round_['kthreads_ms']:.1f} ({top} {threads[top]:.1f})"


def round_ratios(results: dict[str, dict[str, Any]], st: Settings) -> str:
    """filterd/Unbound at the fixed rate, round by round, and the median of
    each percentile's round ratios: the comparison least moved by the minute."""
    lines: list[str] = []
    for size in st.sizes:
        tag = bdata.size_tag(size)
        f = (results.get(f"filterd-{tag}") or {}).get("latency", {}).get("rounds")
        u = (results.get(f"unbound-{tag}") or {}).get("latency", {}).get("rounds")
        if not f or not u or len(f) != len(u):
            continue
        lines.append(f"\nLatency at {st.rate:,} qps, {len(f)} alternating rounds, {tag}:\n")
        lines.append(
            "| round | filterd p50 / p99 / p99.9 ms | Unbound | ratio | steal f / u "
            "| stalls f / u | kernel threads ms f / u |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        ratios: dict[str, list[float]] = {p: [] for p in ("p50", "p99", "p99.9")}
        for number, (fr, ur) in enumerate(zip(f, u, strict=True)):
            cells = []
            for point, values in ratios.items():
                if fr.get(point) and ur.get(point):
                    values.append(fr[point] / ur[point])
                    cells.append(f"{fr[point] / ur[point]:.2f}x")
                else:
                    cells.append("-")
            lines.append(
                f"| {number} | {fr.get('p50')} / {fr.get('p99')} / {fr.get('p99.9')} "
                f"| {ur.get('p50')} / {ur.get('p99')} / {ur.get('p99.9')} "
                f"| {' / '.join(cells)} | {fr['steal']:.0%} / {ur['steal']:.0%} "
                f"| {fr.get('stalls', '-')} / {ur.get('stalls', '-')} "
                f"| {_kthreads_cell(fr)} / {_kthreads_cell(ur)} |"
            )
        medians = " / ".join(f"{statistics.median(v):.2f}x" if v else "-" for v in ratios.values())
        lines.append(f"| median of the round ratios | | | {medians} | | | |")
        fc = (results.get(f"filterd-{tag}") or {}).get("capacity", {}).get("rounds")
        uc = (results.get(f"unbound-{tag}") or {}).get("capacity", {}).get("rounds")
        if fc and uc and len(fc) == len(uc):
            per_round = [u / f for f, u in zip(fc, uc, strict=True)]
            lines.append(
                f"\nCapacity, {len(fc)} alternating rounds, {tag}: CPU µs per query filterd "
                f"{' / '.join(f'{x:.2f}' for x in fc)}, Unbound "
                f"{' / '.join(f'{x:.2f}' for x in uc)}; capacity ratio per round "
                f"{' / '.join(f'{x:.2f}x' for x in per_round)}, median "
                f"**{statistics.median(per_round):.2f}x**"
            )
    return "\n".join(lines) + ("\n" if lines else "")


def flood_ratios(filterd: dict[str, Any], unbound: dict[str, Any]) -> str:
    """filterd/Unbound of the most answered, and the median of the step
    ratios where both lost more than 1 %: the second is less moved by one
    step that caught a server in a slow second."""
    both = [
        f["qps"] / u["qps"]
        for f, u in zip(filterd["steps"], unbound["steps"], strict=True)
        if u["qps"] and max(f["answered_pct"], u["answered_pct"]) < 100.0 * FLOOD_CLEAN
    ]
    median = f"**{statistics.median(both):.2f}x** over {len(both)} steps" if both else "-"
    return (
        f"\nMost answered, filterd / Unbound: **{filterd['max_qps'] / unbound['max_qps']:.2f}x**; "
        f"median of the ratios at the steps that overloaded both: {median}."
    )


def flood_note(results: dict[str, dict[str, Any]], floor: dict[str, Any] | None) -> str:
    """The flood ladders side by side: what each server answered at each
    offered rate, NSD's included (a server with no cache, filter or upstream:
    what this machine answers at all), and where the queries not answered
    were lost."""
    ladders = {key: r["flood"] for key, r in results.items() if r.get("flood")}
    nsd = (floor or {}).get("flood")
    lines = [
        f"\nFlood ladder of {key} FAILED: {ladder['error']}"
        for key, ladder in [*ladders.items(), ("nsd", nsd or {})]
        if "error" in ladder
    ]
    for tag in sorted({key.rsplit("-", 1)[1] for key in ladders}):
        columns = [
            (name, ladders[f"{name}-{tag}"])
            for name in ("filterd", "unbound")
            if "steps" in ladders.get(f"{name}-{tag}", {})
        ]
        if nsd and "steps" in nsd:
            columns.append(("NSD", nsd))
        if not columns:
            continue
        lines.append(
            f"\nFlood ladder, {tag} (kxdpgun over a veth; answers per second, and their "
            "share of the offered rate):\n"
        )
        head = ["offered qps", *(name for name, _ in columns)]
        ratio = len(columns) >= 2 and columns[0][0] == "filterd" and columns[1][0] == "unbound"
        if ratio:
            head.append("filterd / Unbound")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        by_rate = [{s["offered"]: s for s in ladder["steps"]} for _, ladder in columns]
        for rate in sorted(by_rate[0]):
            steps = [table.get(rate) for table in by_rate]
            cells = [f"{rate:,}"] + [
                f"{s['qps']:,.0f} ({s['answered_pct']:.0f} %)" if s else "-" for s in steps
            ]
            if ratio and steps[0] and steps[1] and steps[1]["qps"]:
                cells.append(f"{steps[0]['qps'] / steps[1]['qps']:.2f}x")
            elif ratio:
                cells.append("-")
            lines.append("| " + " | ".join(cells) + " |")
        if ratio:
            lines.append(flood_ratios(columns[0][1], columns[1][1]))
        every = [s for _, ladder in columns for s in ladder["steps"]]
        short = min(s["sent_qps"] / s["offered"] for s in every)
        lost = max(ladder["lost_before_server_pct"] for _, ladder in columns)
        missed = max(ladder["client_missed_pct"] for _, ladder in columns)
        refused = sum(s["refused"] for s in every)
        unanswered = sum(s["sent"] - s["answered"] for s in every)
        lines.append(
            f"\nAt every step kxdpgun sent at least {short:.1%} of the offered rate; at most "
            f"{lost:.2f} % of a step's queries did not reach the server's namespace and "
            f"kxdpgun missed at most {missed:.2f} % of the answers that left it. The servers' "
            f"sockets refused {refused:,} of the {unanswered:,} queries not answered."
        )
        steal = max(s["server_core_steal"] for s in every)
        if steal > STEAL_WARNING:
            lines.append(
                f"WARNING: the hypervisor stole up to {steal:.0%} of the server's core in a "
                "step: that step's figures are low by up to that much."
            )
    return "\n".join(lines) + ("\n" if lines else "")


# --- main --------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    st, shared, out_dir, quick = parse_args(argv)
    if not shared.is_dir():
        print(f"bench: SKIPPED: shared data not found at {shared} (need ../shared/data)")
        return 0
    missing = [b for b in ("dnsperf", "taskset", "/usr/sbin/nsd") if shutil.which(b) is None]
    if missing:
        print(f"bench: SKIPPED: missing tools: {', '.join(missing)} (apt-get install dnsperf nsd)")
        return 0
    if len(os.sched_getaffinity(0)) < 2:
        print("bench: WARNING: fewer than 2 CPUs; server and dnsperf will share a core")
        st = dataclasses.replace(st, client_cpu=0)
    if st.flood and (why_not := bflood.unavailable()) is not None:
        say(f"flood ladder SKIPPED: {why_not}")
        st = dataclasses.replace(st, flood=False)

    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for name in st.targets:
        t = make_target(name)
        why = t.available()
        if why is None:
            targets.append(t)
        else:
            skipped[name] = why
            say(f"target {name} SKIPPED: {why}")
    if not targets:
        print("bench: no target can run")
        return 1

    signal.signal(signal.SIGTERM, _on_sigterm)
    # The harness itself (polling, parsing) stays off the server's CPU.
    os.sched_setaffinity(0, {st.client_cpu})
    scratch = out_dir / "work"
    ds = bdata.prepare(shared, scratch / ("data-quick" if quick else "data"), st.params)
    for size, sd in ds.sizes.items():
        if not quick and sd.distinct_ranked < bdata.MIN_DISTINCT_RANKED:
            say(
                f"WARNING: {bdata.size_tag(size)}: only {sd.distinct_ranked:,} distinct allowed "
                f"questions (a realistic working set has at least {bdata.MIN_DISTINCT_RANKED:,})"
            )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = scratch / f"run-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    floor: dict[str, Any] | None = None
    with bflood.server_namespace(st.flood, say) as link:
        nsd = Nsd(run_dir, ds.zone_path.resolve(), cpu=st.client_cpu)
        say(f"nsd: loading {ds.zone_records:,} records on 127.0.0.1:{nsd.port} (CPU {nsd.cpu})")
        nsd_proc = nsd.start()
        try:
            floor = latency_floor(ds, st, run_dir, link)
            ceiling = float(floor["closed"]["qps"])
            flood = (link, ceiling) if link and "error" not in floor["flood"] else None
            for size in st.sizes:
                sd = ds.sizes[size]
                for p in sd.probes:
                    if query_rcode(nsd.port, p) != 0:
                        raise TargetError(f"upstream does not resolve probe {p}; data is broken")
                measured, failed = measure_size(
                    sd, targets, nsd=nsd, nsd_proc=nsd_proc, ds=ds, st=st, run_dir=run_dir,
                    flood=flood,
                )  # fmt: skip
                results.update(measured)
                failures.update(failed)
        finally:
            code = nsd_proc.stop()
            say(f"nsd: stopped pid {nsd_proc.pid}, exit code {code}")

    report = {
        "started_utc": stamp,
        "settings": {
            **{k: v for k, v in asdict(st).items() if k != "params"},
            "data": asdict(st.params),
        },
        "environment": environment(),
        "data": {
            "zone_records": ds.zone_records,
            "sizes": {
                bdata.size_tag(k): {
                    "blocked_share": v.blocked_share,
                    "expected_nxdomain": v.expected_nxdomain,
                    "warm_queries": v.warm_queries,
                    "distinct_ranked": v.distinct_ranked,
                    "probes": v.probes,
                }
                for k, v in ds.sizes.items()
            },
        },
        "latency_floor_nsd": floor,
        "skipped": skipped,
        "failures": failures,
        "results": results,
    }
    table = markdown(results, st)
    (out_dir / f"bench-{stamp}.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / f"bench-{stamp}.md").write_text(table)
    shutil.copyfile(out_dir / f"bench-{stamp}.json", out_dir / "latest.json")
    shutil.copyfile(out_dir / f"bench-{stamp}.md", out_dir / "latest.md")
    expected = ", ".join(
        f"{bdata.size_tag(k)} {100 * v.expected_nxdomain:.2f} %" for k, v in ds.sizes.items()
    )
    working = ", ".join(f"{bdata.size_tag(k)} {v.distinct_ranked:,}" for k, v in ds.sizes.items())
    table += (
        f"\nExpected NXDOMAIN share of the hit-heavy file (blocked + non-existent): {expected}\n"
        f"Distinct allowed questions in it (the cache's working set): {working}\n"
    )
    if floor is not None:
        p = floor["percentiles_ms"]
        table += (
            f"\nLatency floor of this machine (same open-loop run against NSD on the server "
            f"CPU): p50 {p['p50']} ms, p99 {p['p99']} ms, p99.9 {p['p99.9']} ms\n"
        )
        table += ceiling_note(results, floor)
    table += flood_note(results, floor)
    table += round_ratios(results, st)
    print()
    print(table)
    print(f"results: {out_dir / f'bench-{stamp}.json'} (and latest.json, latest.md)")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nbench: interrupted; every server it started has been stopped", file=sys.stderr)
        sys.exit(130)
