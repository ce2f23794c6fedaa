"""Run dnsperf, parse what it prints, and time how long a list takes to be enforced.

Why dnsperf is wrapped rather than trusted blindly: a qps figure only means
"the server's limit" if the server's core was busy with the server, so every
run also records the CPU used by the server's process tree, its CPU's busy and
stolen shares from /proc/stat, and NSD's and dnsperf's CPU (dnsperf spins near
100 % whenever the server is the bottleneck, so its own share is no signal).
Latency percentiles come from dnsperf 2.10's ``-v`` output (one
``> RCODE name type seconds`` line per answered query; 2.10 has no histogram
option), computed here with timed-out queries counted at the timeout, so a
lossy run cannot look fast.
"""

from __future__ import annotations

import math
import os
import re
import resource
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from bench.targets import (
    LOOPBACK,
    NXDOMAIN,
    Proc,
    TargetError,
    die_with_parent,
    proc_stats,
    process_tree,
    query_rcode,
)

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_NUM_RE: Final = r"([0-9.]+)"
_SUMMARY: Final = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "runtime": re.compile(r"Run time \(s\):\s+" + _NUM_RE),
    "qps": re.compile(r"Queries per second:\s+" + _NUM_RE),
    "avg_latency": re.compile(r"Average Latency \(s\):\s+" + _NUM_RE),
}
_RCODES: Final = re.compile(r"Response codes:\s+(.*)")
_RCODE_ITEM: Final = re.compile(r"([A-Z]+) (\d+) \(")


@dataclass(frozen=True, slots=True)
class PerfResult:
    """One dnsperf run as parsed from its summary, plus CPU shares observed meanwhile."""

    command: str
    sent: int
    completed: int
    lost: int
    runtime_s: float
    qps: float
    avg_latency_s: float
    rcodes: dict[str, int]
    end_of_file: bool  # stopped because the file ran out (-n), not on the time limit
    server_cpu: float  # CPU seconds of the server tree / wall seconds (1.0 = one core busy)
    server_core_busy: float  # the server's CPU as the kernel saw it, softirq included
    server_core_steal: float  # share of that CPU stolen by the hypervisor
    upstream_cpu: float
    dnsperf_cpu: float
    latencies_s: tuple[float, ...] = field(default=(), repr=False)
    server_core_kthreads: dict[str, float] = field(default_factory=dict)
    """Milliseconds each kernel thread ran on the server's CPU meanwhile (over
    0.05 ms): a kernel thread preempts the server (``kernel_thread_ms``)."""

    @property
    def lost_pct(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0

    def rcode_share(self, rcode: str) -> float:
        total = sum(self.rcodes.values())
        return self.rcodes.get(rcode, 0) / total if total else 0.0


def tree_cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of ``pid`` and its live descendants."""
    if pid is None:
        return 0.0
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / CLK_TCK


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def parse_summary(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, rx in _SUMMARY.items():
        m = rx.search(text)
        if m is None:
            raise ValueError(f"dnsperf output has no {key!r}:\n{text[-2000:]}")
        out[key] = float(m.group(1))
    return out


def parse_rcodes(text: str) -> dict[str, int]:
    m = _RCODES.search(text)
    if m is None:
        return {}
    return {code: int(n) for code, n in _RCODE_ITEM.findall(m.group(1))}


@dataclass(frozen=True, slots=True)
class Load:
    """How dnsperf drives the server: clients (sockets), outstanding queries, optional rate."""

    clients: int
    outstanding: int
    rate: int | None = None
    timeout_s: float = 2.0


def cpu_times() -> dict[int, tuple[int, int, int]]:
    """Per CPU from /proc/stat: (total, idle+iowait, steal) jiffies."""
    out: dict[int, tuple[int, int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        head, *vals = line.split()
        if not head.startswith("cpu") or head == "cpu":
            continue
        v = [int(x) for x in vals]
        out[int(head[3:])] = (sum(v[:8]), v[3] + v[4], v[7])
    return out


def busy_since(before: dict[int, tuple[int, int, int]], cpu: int) -> tuple[float, float]:
    """(busy share, stolen share) of ``cpu`` since ``before``; busy excludes stolen time."""
    after = cpu_times()
    if cpu not in before or cpu not in after:
        return 0.0, 0.0
    total = max(after[cpu][0] - before[cpu][0], 1)
    idle = after[cpu][1] - before[cpu][1]
    steal = after[cpu][2] - before[cpu][2]
    return (total - idle - steal) / total, steal / total


PF_KTHREAD: Final = 0x00200000
"""``/proc/PID/stat`` flags bit of a kernel thread."""


def kernel_threads() -> dict[int, tuple[str, int, int]]:
    """Every kernel thread: pid -> (name, the CPU it last ran on, nanoseconds it
    has run), from ``/proc/PID/stat`` and ``/proc/PID/schedstat``.

    Why: on this VM a kernel thread (DAMON's ``kdamond``, sampling memory
    accesses for proactive reclaim every 500 ms) runs on a CPU for up to 4 ms
    at a time at the server's priority; a server pinned to that CPU answers
    nothing meanwhile, whichever server it is (bench/README.md, "Sixth
    round"). The run time says how much of a round's tail is that."""
    return {
        pid: (name, int(fields[36]), int(schedstat.split()[0]))
        for pid, name, fields, schedstat in proc_stats("schedstat")
        # stat(5): flags is the 9th field, processor the 39th.
        if int(fields[6]) & PF_KTHREAD
    }


def kernel_thread_ms(before: dict[int, tuple[str, int, int]], cpu: int) -> dict[str, float]:
    """Milliseconds each kernel thread last seen on ``cpu`` has run since
    ``before`` (threads under 0.05 ms left out), by name."""
    out: dict[str, float] = {}
    for pid, (name, last_cpu, ran_ns) in kernel_threads().items():
        if last_cpu != cpu or pid not in before:
            continue
        ms = (ran_ns - before[pid][2]) / 1e6
        if ms >= 0.05:
            out[name] = out.get(name, 0.0) + ms
    return out


def run_dnsperf(
    port: int,
    datafile: Path,
    load: Load,
    *,
    duration: float,
    cpu: int,
    server_cpu: int,
    server_pid: int,
    upstream_pid: int | None,
    output: Path,
    max_runs: int | None = None,
    verbose: bool = False,
) -> PerfResult:
    """One bounded dnsperf run (``-l duration``, and ``-n max_runs`` when given) on ``cpu``.

    dnsperf's stdout goes to the file ``output``, not to a pipe: with ``-v`` it
    prints a line per query, and a reader that falls behind would stall its
    receive loop and inflate the very latencies being measured.
    """
    cmd = [
        "taskset", "-c", str(cpu), "dnsperf",
        "-s", LOOPBACK, "-p", str(port), "-d", str(datafile),
        "-c", str(load.clients), "-q", str(load.outstanding),
        "-t", f"{load.timeout_s:g}", "-l", f"{duration:g}",
    ]  # fmt: skip
    if load.rate is not None:
        cmd += ["-Q", str(load.rate)]
    if max_runs is not None:
        cmd += ["-n", str(max_runs)]
    if verbose:
        cmd.append("-v")
    kthreads0 = kernel_threads()
    stat0 = cpu_times()
    srv0, up0, perf0 = tree_cpu_seconds(server_pid), tree_cpu_seconds(upstream_pid), _children_cpu()
    t0 = time.monotonic()
    with output.open("wb") as fh:
        # The wall-clock bound is dnsperf's own -l plus its timeout and a margin.
        done = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            check=False, timeout=duration + load.timeout_s + 60, preexec_fn=die_with_parent,
        )  # fmt: skip
    wall = max(time.monotonic() - t0, 1e-9)
    srv1, up1, perf1 = tree_cpu_seconds(server_pid), tree_cpu_seconds(upstream_pid), _children_cpu()
    core_busy, core_steal = busy_since(stat0, server_cpu)
    kthreads = kernel_thread_ms(kthreads0, server_cpu)
    stderr = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise TargetError(f"dnsperf exited {done.returncode}: {stderr[-1000:]}")
    stdout = output.read_text(errors="replace")
    s = parse_summary(stdout)
    latencies: tuple[float, ...] = ()
    if verbose:
        latencies = _latencies(stdout, load.timeout_s, int(s["sent"]))
    return PerfResult(
        command=" ".join(cmd),
        sent=int(s["sent"]),
        completed=int(s["completed"]),
        lost=int(s["lost"]),
        runtime_s=s["runtime"],
        qps=s["qps"],
        avg_latency_s=s["avg_latency"],
        rcodes=parse_rcodes(stdout),
        end_of_file="complete (end of file)" in stdout,
        server_cpu=(srv1 - srv0) / wall,
        server_core_busy=core_busy,
        server_core_steal=core_steal,
        upstream_cpu=(up1 - up0) / wall,
        dnsperf_cpu=(perf1 - perf0) / wall,
        latencies_s=latencies,
        server_core_kthreads=kthreads,
    )


T = TypeVar("T")


def alternating(targets: Sequence[T], number: int) -> list[T]:
    """The order of round ``number`` in rounds that alternate the targets: as
    given in even rounds, reversed in odd ones, so that no target is always
    measured first after a pause (``bench/run``'s latency and capacity
    rounds, ``bench/floor``)."""
    return list(targets) if number % 2 == 0 else list(reversed(targets))


def merge(results: Sequence[PerfResult]) -> PerfResult:
    """Several runs of one load as one: counts summed, rates and CPU shares
    weighted by run time, every latency kept (``bench/run``'s latency rounds)."""
    if not results:
        raise ValueError("merge: no runs")
    runtime = sum(r.runtime_s for r in results) or 1e-9
    rcodes: dict[str, int] = {}
    for r in results:
        for code, count in r.rcodes.items():
            rcodes[code] = rcodes.get(code, 0) + count

    def weighted(value: Callable[[PerfResult], float]) -> float:
        return sum(value(r) * r.runtime_s for r in results) / runtime

    completed = sum(r.completed for r in results)
    return PerfResult(
        command=" ; ".join(r.command for r in results),
        sent=sum(r.sent for r in results),
        completed=completed,
        lost=sum(r.lost for r in results),
        runtime_s=runtime,
        qps=completed / runtime,
        avg_latency_s=sum(r.avg_latency_s * r.completed for r in results) / max(completed, 1),
        rcodes=rcodes,
        end_of_file=all(r.end_of_file for r in results),
        server_cpu=weighted(lambda r: r.server_cpu),
        server_core_busy=weighted(lambda r: r.server_core_busy),
        server_core_steal=weighted(lambda r: r.server_core_steal),
        upstream_cpu=weighted(lambda r: r.upstream_cpu),
        dnsperf_cpu=weighted(lambda r: r.dnsperf_cpu),
        latencies_s=tuple(x for r in results for x in r.latencies_s),
        server_core_kthreads=_summed(r.server_core_kthreads for r in results),
    )


def _summed(tables: Iterable[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for table in tables:
        for name, value in table.items():
            out[name] = out.get(name, 0.0) + value
    return out


def _latencies(stdout: str, timeout_s: float, sent: int) -> tuple[float, ...]:
    """Per-query latencies from ``-v`` lines; queries without an answer count as the timeout."""
    out: list[float] = []
    for line in stdout.splitlines():
        if not line.startswith("> "):
            continue
        parts = line.split()
        if parts[1] in ("T", "I"):
            out.append(timeout_s)
            continue
        try:
            out.append(float(parts[-1]))
        except ValueError:
            continue
    out.extend([timeout_s] * max(0, sent - len(out)))
    return tuple(out)


def percentiles(samples: Sequence[float], points: Sequence[float]) -> dict[str, float]:
    """``{"p50": seconds, ...}`` using the nearest-rank ("higher") method."""
    if not samples:
        return {}
    ordered = sorted(samples)
    top = len(ordered) - 1
    return {f"p{p:g}": ordered[min(top, math.ceil(top * p / 100))] for p in points}


@dataclass(frozen=True, slots=True)
class Enforcement:
    """Seconds from process start to: the first DNS answer, the list enforced, ready signal."""

    first_answer_s: float | None
    enforced_s: float | None
    ready_s: float | None
    unfiltered_answers: int  # probe answers that were not NXDOMAIN (served before the list)


def wait_enforced(
    proc: Proc,
    port: int,
    probes: Sequence[str],
    *,
    ready: Callable[[], bool] | None,
    timeout: float,
    interval: float = 0.02,
) -> Enforcement:
    """Poll the probe names (end of the list, and a subdomain) until all get NXDOMAIN.

    Each round sends one short-timeout UDP query per probe (and asks the
    target's own readiness signal, if it has one); the loop ends once both are
    seen, when the process dies, or after ``timeout`` seconds from its start.
    """
    first: float | None = None
    enforced: float | None = None
    ready_at: float | None = None
    unfiltered = 0
    deadline = proc.started + timeout
    for _ in range(10_000_000):
        if time.monotonic() >= deadline:
            break
        if not proc.alive():
            raise TargetError(f"{proc.name} exited during startup:\n{proc.log_tail()}")
        if enforced is None:
            codes = [query_rcode(port, name, "A", 0.2) for name in probes]
            now = time.monotonic() - proc.started
            if first is None and any(c is not None for c in codes):
                first = now
            unfiltered += sum(1 for c in codes if c is not None and c != NXDOMAIN)
            if all(c == NXDOMAIN for c in codes):
                enforced = now
        if ready is not None and ready_at is None and ready():
            ready_at = time.monotonic() - proc.started
        if enforced is not None and (ready is None or ready_at is not None):
            break
        time.sleep(interval)
    return Enforcement(first, enforced, ready_at, unfiltered)
