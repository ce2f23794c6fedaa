"""Live swap of the list under load (``bench/swap``).

filterd serves the hit-heavy mix at a fixed fraction of its measured
capacity (default half) while its 1M-name list is replaced: the list file
is replaced by a copy with part of its names changed (prepared before the
load starts, renamed into place at the swap) and SIGHUP is sent, so a new
index is compiled in a child process and swapped into the worker. Reported:

- queries lost during the whole run, and latency percentiles over the run
  and over the swap window (SIGHUP to the new list serving, plus 1 s);
- RSS of the whole process tree (supervisor, worker, and the list compiler
  while it runs) sampled every 50 ms: steady state before the swap, the
  peak during it, and the peak of the serving processes alone; PSS before
  and after;
- how long the reload took (SIGHUP to the new list version in blocked answers);
- the workers' garbage-collector pauses over the run
  (``filterd_gc_pause_seconds``: how many, how many over 5 ms, their sum).

Same machine discipline as ``bench/run``: filterd on CPU 0, NSD and
dnsperf on CPU 1, loopback only, everything stopped by the PID it was
started with, every load bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import dns.edns
import dns.exception
import dns.message
import dns.query

from bench import runs
from bench.measure import (
    Load,
    _latencies,
    busy_since,
    cpu_times,
    parse_summary,
    percentiles,
    run_dnsperf,
)
from bench.targets import (
    Filterd,
    Nsd,
    Proc,
    free_port,
    process_tree,
    spawn,
    tree_memory,
)

SERVER_CPU: Final = 0
LOAD_CPU: Final = 1
SAMPLE_EVERY: Final = 0.05
CHANGED_NAMES: Final = 1000


@dataclass(frozen=True, slots=True)
class Pauses:
    """``filterd_gc_pause_seconds`` summed over generations."""

    count: int
    over_5ms: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SwapResult:
    list_size: int
    capacity_qps: float
    rate_qps: int
    sent: int
    completed: int
    lost: int
    reload_seconds: float
    latency_ms: dict[str, float]
    window_latency_ms: dict[str, float]
    window_queries: int
    window_steal: float
    """Share of the server's core the hypervisor took during the swap window."""
    steady_rss_mib: float
    peak_rss_mib: float
    peak_serving_rss_mib: float
    steady_pss_mib: float
    after_pss_mib: float
    pauses: Pauses | None
    """The workers' garbage-collector pauses over the whole run (None: a build
    without ``filterd_gc_pause_seconds``)."""

    @property
    def peak_ratio(self) -> float:
        return self.peak_rss_mib / self.steady_rss_mib

    @property
    def serving_peak_ratio(self) -> float:
        return self.peak_serving_rss_mib / self.steady_rss_mib


def list_version(port: int, name: str) -> str:
    """The list version in the EDE text of the blocked answer for ``name``.

    The swap is detected through DNS rather than by scraping /metrics: a
    scrape costs the supervisor (and so the machine) far more than a query."""
    query = dns.message.make_query(name, "A", use_edns=0)
    try:
        answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return ""
    for option in answer.options:
        if isinstance(option, dns.edns.EDEOption) and option.text:
            return option.text.split("version=")[-1].split()[0]
    return ""


def _rss_mib(root: int) -> tuple[float, float]:
    """(whole tree, serving processes only) VmRSS in MiB.

    Only /proc/PID/status is read while load runs: reading smaps_rollup (for
    PSS) walks the page tables under the process's mmap lock and stalls its
    allocations, which would show up as the very latency being measured."""
    total = serving = 0
    for pid in process_tree(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kib = int(line.split()[1])
                total += kib
                if b"filterd.lists.compile_child" not in cmdline:
                    serving += kib
    return total / 1024, serving / 1024


def _next_list(path: Path) -> Path:
    """A copy of the list with its last ``CHANGED_NAMES`` names replaced, written
    beside it before the load starts: at the swap it is only renamed over the
    list (as an operator deploys a file), so the harness's own work of
    rewriting a million lines does not fall into the measured window."""
    names = path.read_text().splitlines()
    kept = names[:-CHANGED_NAMES]
    fresh = [f"swapped-{i}.filterd-bench.example" for i in range(CHANGED_NAMES)]
    staged = path.with_name(path.name + ".next")
    staged.write_text("\n".join(kept + fresh) + "\n")
    return staged


def run(size: int, duration: float, swap_at: float, fraction: float, work: Path) -> SwapResult:
    ds = runs.dataset()
    size_data = ds.sizes[size]
    work.mkdir(parents=True, exist_ok=True)
    list_copy = work / "list.domains"
    shutil.copyfile(size_data.domains_path, list_copy)
    nsd = Nsd(work=work, zone=ds.zone_path, cpu=LOAD_CPU)
    nsd_proc = nsd.start()
    target = Filterd()
    port = free_port()
    command = target.command(work / "filterd", port, nsd.port, list_copy, None)
    server: Proc | None = None
    try:
        server = spawn("filterd", command, SERVER_CPU, work / "filterd.log", work)
        ready = target.ready_check()
        assert ready is not None
        deadline = time.monotonic() + 120
        while not ready():
            if time.monotonic() > deadline or not server.alive():
                raise RuntimeError(f"filterd not ready:\n{server.log_tail()}")
            time.sleep(0.1)
        closed = Load(clients=4, outstanding=200)

        def dnsperf(
            datafile: Path, load: Load, seconds: float, name: str, passes: int | None = None
        ) -> float:
            return run_dnsperf(
                port,
                datafile,
                load,
                duration=seconds,
                cpu=LOAD_CPU,
                server_cpu=SERVER_CPU,
                server_pid=server.pid,
                upstream_pid=nsd_proc.pid,
                output=work / name,
                max_runs=passes,
            ).qps

        dnsperf(size_data.warm_path, Load(8, 1000), 120, "warm.out", passes=1)
        capacity = dnsperf(size_data.hit_path, closed, 10, "capacity.out")
        rate = int(capacity * fraction)
        print(f"capacity {capacity:,.0f} qps; swap under {rate:,} qps", flush=True)
        steady = tree_memory(server.pid)
        probe = list_copy.read_text().split("\n", 1)[0]
        result = _swap_under_load(
            server, port, probe, list_copy, size_data.hit_path, rate, duration, swap_at, work
        )
        after = tree_memory(server.pid)
        pauses = collector_pauses(target.admin_port)
        return SwapResult(
            size,
            capacity,
            rate,
            *result,
            steady.rss_mib,
            *_peaks(work),
            steady.pss_mib,
            after.pss_mib,
            pauses,
        )
    finally:
        if server is not None:
            server.stop()
        nsd_proc.stop()


def _swap_under_load(
    server: Proc,
    port: int,
    probe: str,
    list_path: Path,
    hit_path: Path,
    rate: int,
    duration: float,
    swap_at: float,
    work: Path,
) -> tuple[int, int, int, float, dict[str, float], dict[str, float], int, float]:
    output = work / "swap.out"
    cmd = [
        "taskset",
        "-c",
        str(LOAD_CPU),
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(hit_path),
        "-c",
        "4",
        "-q",
        "200",
        "-t",
        "1",
        "-l",
        f"{duration:g}",
        "-Q",
        str(rate),
        "-v",
    ]
    samples: list[tuple[float, float, float]] = []
    started = time.monotonic()
    hup_at = done_at = 0.0
    at_hup = cpu_times()
    window_steal: float | None = None
    old_version = list_version(port, probe)
    staged = _next_list(list_path)
    with runs.background_load(cmd, output) as dnsperf:
        while dnsperf.poll() is None and time.monotonic() - started < duration + 30:
            now = time.monotonic() - started
            samples.append((now, *_rss_mib(server.pid)))
            if not hup_at and now >= swap_at:
                staged.replace(list_path)
                os.kill(server.pid, signal.SIGHUP)
                hup_at = now
                at_hup = cpu_times()
            elif hup_at and not done_at and list_version(port, probe) != old_version:
                done_at = now
            elif done_at and window_steal is None and now >= done_at + 1.0:
                window_steal = busy_since(at_hup, SERVER_CPU)[1]
            time.sleep(SAMPLE_EVERY)
    (work / "memory.json").write_text(json.dumps(samples))
    (work / "swap_window.json").write_text(json.dumps([hup_at, done_at]))
    text = output.read_text(errors="replace")
    summary = parse_summary(text)
    latencies = _latencies(text, 1.0, int(summary["sent"]))
    first = int(hup_at * rate)
    last = int((done_at + 1.0) * rate)
    window = latencies[first:last]
    points = (50.0, 99.0, 99.9)
    to_ms = {k: v * 1000 for k, v in percentiles(latencies, points).items()}
    window_ms = {k: v * 1000 for k, v in percentiles(window, points).items()}
    return (
        int(summary["sent"]),
        int(summary["completed"]),
        int(summary["lost"]),
        done_at - hup_at,
        to_ms,
        window_ms,
        len(window),
        busy_since(at_hup, SERVER_CPU)[1] if window_steal is None else window_steal,
    )


def collector_pauses(admin_port: int) -> Pauses | None:
    """The workers' collector pauses so far, from /metrics (summed over generations)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    name = "filterd_gc_pause_seconds"
    count = within_5ms = 0
    seconds = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = True
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{name}_count{{"):
            count += int(value)
        elif line.startswith(f"{name}_sum{{"):
            seconds += value
        elif line.startswith(f"{name}_bucket{{") and 'le="0.005"' in line:
            within_5ms += int(value)
    return Pauses(count, count - within_5ms, seconds) if found else None


def _peaks(work: Path) -> tuple[float, float]:
    samples = json.loads((work / "memory.json").read_text())
    return max(s[1] for s in samples), max(s[2] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description="live list swap under load")
    parser.add_argument("--size", choices=("100k", "1m"), default="1m")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--swap-at", type=float, default=8.0)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of capacity to load")
    args = parser.parse_args()
    stamp = runs.timestamp()
    work = runs.RESULTS / "work" / f"swap-{stamp}"
    size = 1_000_000 if args.size == "1m" else 100_000
    result = run(size, args.duration, args.swap_at, args.fraction, work)
    lines = [
        f"| figure ({args.size} list, {result.rate_qps:,} qps = {args.fraction:.0%} of "
        f"{result.capacity_qps:,.0f}) | value |",
        "|---|---|",
        f"| queries sent / answered / lost | {result.sent:,} / {result.completed:,} / "
        f"{result.lost:,} |",
        f"| reload: SIGHUP to the new list serving | {result.reload_seconds:.2f} s |",
        f"| latency p50 / p99 / p99.9, whole run | {result.latency_ms['p50']:.3f} / "
        f"{result.latency_ms['p99']:.3f} / {result.latency_ms['p99.9']:.3f} ms |",
        f"| latency p50 / p99 / p99.9, swap window ({result.window_queries:,} queries) | "
        f"{result.window_latency_ms['p50']:.3f} / {result.window_latency_ms['p99']:.3f} / "
        f"{result.window_latency_ms['p99.9']:.3f} ms |",
        f"| stolen from the server's core in the swap window | {result.window_steal:.1%} |",
        f"| RSS steady / peak, whole tree (incl. compiler) | {result.steady_rss_mib:.0f} / "
        f"{result.peak_rss_mib:.0f} MiB ({result.peak_ratio:.2f}x) |",
        f"| RSS peak, serving processes only | {result.peak_serving_rss_mib:.0f} MiB "
        f"({result.serving_peak_ratio:.2f}x) |",
        f"| PSS before / after the swap, whole tree | {result.steady_pss_mib:.0f} / "
        f"{result.after_pss_mib:.0f} MiB |",
    ]
    pauses = result.pauses
    lines.append(
        "| garbage-collector pauses, whole run | not reported by this build |"
        if pauses is None
        else f"| garbage-collector pauses, whole run | {pauses.count:,} ({pauses.over_5ms:,} over "
        f"5 ms), {pauses.seconds * 1000:.1f} ms in all |"
    )
    table = "\n".join(lines)
    print(table)
    runs.save("swap", stamp, table, result)


if __name__ == "__main__":
    main()
