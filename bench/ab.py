"""CPU per query of two builds of filterd, side by side (``bench/ab``).

Why this exists: on this VM the CPU a query costs moves by 10-30 % from one
minute to the next (the hypervisor, the vCPU's idle path, a kernel thread on
the server's CPU), which is more than most changes to the query path are
worth; two ``bench/run`` runs of two builds measure the minutes as much as
the builds. Here both builds are up at once, pinned to the server CPU, each
with the same bundled defaults, list, upstream and warm cache, and loaded
in turn at one fixed rate (the order reversed every round, after a round
each that is not counted), so that each pair of rounds sees the same
minute. Reported per build: the server CPU per
query of every round, by the kernel's count of the CPU's busy time
(``/proc/stat``, softirq included: the loopback path is most of the cost)
and by the server's own processes (``/proc/PID/stat``), their medians and
how many round pairs favour each build.

``--before`` (a git revision, default ``HEAD``) is checked out in a
worktree in a temporary directory and installed there compiled into a
virtualenv of its own (editable, as ``tests/run`` installs this checkout);
the *after* build is this checkout as installed in ``.venv``, or another
revision built the same way (``--after``). Each
server's worker must have its own checkout's compiled module mapped, or
the run stops: a build that imports the other's code would compare a
build with itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import runs
from bench.data import SizeData
from bench.floor import _serving_pid
from bench.harness import NOT_COMPILED
from bench.measure import Load, PerfResult, alternating, run_dnsperf, wait_enforced
from bench.targets import FILTERD_BIN, REPO, Filterd, Nsd, Proc, free_port, spawn

SERVER_CPU: Final = 0
LOAD_CPU: Final = 1


@dataclass(slots=True)
class Build:
    """One build under test: its checkout, its filterd, and once started its server."""

    name: str
    checkout: Path
    binary: Path
    port: int = 0
    proc: Proc | None = None
    worker: int = 0


@dataclass(frozen=True, slots=True)
class AbResult:
    """Every round of both builds, and the medians (µs of CPU per query)."""

    before: str
    after: str
    rate: int
    seconds: float
    core_us: dict[str, list[float]]
    process_us: dict[str, list[float]]
    qps: dict[str, list[float]]
    median_core_us: dict[str, float]
    median_process_us: dict[str, float]
    pairs_favouring_after: int


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def build_revision(label: str, revision: str, where: Path) -> Build:
    """``revision`` checked out at ``where`` and installed compiled into its own venv."""
    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
    _git("worktree", "add", "--detach", str(where), commit)
    venv = where / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {**os.environ, "FILTERD_COMPILE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", "-e", str(where)],
        check=True, timeout=1800, env=env,
    )  # fmt: skip
    return Build(f"{label} ({commit[:7]})", where, venv / "bin" / "filterd")


def _mapped_checkout(pid: int, candidates: list[Path]) -> Path | None:
    """Which of ``candidates`` the process ``pid`` has its compiled query path
    (the mypyc module) mapped from: the deepest that holds it."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(".so") and "__mypyc" in fields[5]:
            module = Path(fields[5])
            holding = [c for c in candidates if module.is_relative_to(c)]
            return max(holding, key=lambda c: len(c.parts)) if holding else None
    return None


def start(build: Build, work: Path, nsd: Nsd, size: SizeData, others: list[Path]) -> None:
    """Start ``build`` on the server CPU and wait until it enforces the list."""
    target = Filterd(name=build.name, binary=build.binary)
    build.port = free_port()
    home = work / build.checkout.name
    home.mkdir(parents=True, exist_ok=True)
    command = target.command(home, build.port, nsd.port, size.domains_path.resolve(), None)
    build.proc = spawn(build.name, command, SERVER_CPU, home / "server.log", home)
    enforced = wait_enforced(
        build.proc, build.port, size.probes, ready=target.ready_check(), timeout=120
    )
    if enforced.enforced_s is None:
        raise SystemExit(f"bench/ab: {build.name} not ready:\n{build.proc.log_tail()}")
    if NOT_COMPILED in (home / "server.log").read_text(errors="replace"):
        raise SystemExit(f"bench/ab: {build.name}: {NOT_COMPILED}")
    build.worker = _serving_pid(build.proc)
    mapped = _mapped_checkout(build.worker, [build.checkout, *others])
    if mapped != build.checkout:
        raise SystemExit(f"bench/ab: {build.name} runs the compiled code of {mapped}")


def per_query(result: PerfResult) -> tuple[float, float]:
    """(µs of the server CPU's busy time, µs of the server's processes) per answer."""
    qps = max(result.qps, 1.0)
    return result.server_core_busy / qps * 1e6, result.server_cpu / qps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/ab", description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="HEAD", help="git revision to compare with (HEAD)")
    parser.add_argument("--after", help="git revision to compare (default: this checkout)")
    parser.add_argument("--rate", type=int, default=110_000, help="fixed qps (110000)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per build (10)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per round (8)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50 or not 1.0 <= args.seconds <= 60.0:
        parser.error("--rounds 1-50, --seconds 1-60")
    missing = [
        tool for tool in ("dnsperf", "taskset", "git", "/usr/sbin/nsd") if not shutil.which(tool)
    ]
    if missing:
        print(f"bench: SKIPPED: {', '.join(missing)} not installed")
        return
    os.environ.pop("PYTHONPATH", None)  # each server imports its own checkout
    os.sched_setaffinity(0, {LOAD_CPU})
    stamp = runs.timestamp()
    work = runs.RESULTS / "work" / f"ab-{stamp}"
    work.mkdir(parents=True)
    # Worktrees outside this checkout, so that no tool run here walks into them.
    scratch = Path(tempfile.mkdtemp(prefix="filterd-ab-"))
    worktrees: list[Path] = []
    try:
        before = build_revision("before", args.before, scratch / "before")
        worktrees.append(before.checkout)
        if args.after is None:
            after = Build("after (this checkout)", REPO, FILTERD_BIN)
        else:
            after = build_revision("after", args.after, scratch / "after")
            worktrees.append(after.checkout)
        _compare(args, stamp, work, before, after)
    finally:
        for tree in worktrees:
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(scratch, ignore_errors=True)


def _compare(args: argparse.Namespace, stamp: str, work: Path, before: Build, after: Build) -> None:
    """Start both builds, warm them, load them in alternating rounds; report."""
    ds = runs.dataset()
    size = ds.sizes[1_000_000]
    nsd = Nsd(work=work, zone=ds.zone_path, cpu=LOAD_CPU)
    nsd_proc = nsd.start()
    builds = [before, after]
    core: dict[str, list[float]] = {b.name: [] for b in builds}
    process: dict[str, list[float]] = {b.name: [] for b in builds}
    qps: dict[str, list[float]] = {b.name: [] for b in builds}
    try:
        for build in builds:
            start(build, work, nsd, size, [b.checkout for b in builds])
            warm = run_dnsperf(
                build.port, size.warm_path, Load(4, 200), duration=120, cpu=LOAD_CPU,
                server_cpu=SERVER_CPU, server_pid=build.worker, upstream_pid=nsd_proc.pid,
                output=work / f"warm-{build.checkout.name}.out", max_runs=1,
            )  # fmt: skip
            print(f"{build.name}: warm {warm.qps:,.0f} qps", flush=True)
        load = Load(4, 200, rate=args.rate)
        for build in builds:
            # Not counted: answers that expired since the warm pass are fetched
            # again, and the first loaded seconds of a process run slower.
            run_dnsperf(
                build.port, size.hit_path, load, duration=args.seconds, cpu=LOAD_CPU,
                server_cpu=SERVER_CPU, server_pid=build.worker, upstream_pid=nsd_proc.pid,
                output=work / f"settle-{build.checkout.name}.out",
            )  # fmt: skip
        for number in range(args.rounds):
            for build in alternating(builds, number):
                result = run_dnsperf(
                    build.port, size.hit_path, load, duration=args.seconds, cpu=LOAD_CPU,
                    server_cpu=SERVER_CPU, server_pid=build.worker, upstream_pid=nsd_proc.pid,
                    output=work / f"round-{number}-{build.checkout.name}.out",
                )  # fmt: skip
                busy_us, own_us = per_query(result)
                core[build.name].append(busy_us)
                process[build.name].append(own_us)
                qps[build.name].append(result.qps)
                print(
                    f"round {number} {build.name}: {result.qps:,.0f} qps, {busy_us:.2f} µs "
                    f"(core) {own_us:.2f} µs (worker)",
                    flush=True,
                )
    finally:
        for build in builds:
            if build.proc is not None:
                build.proc.stop()
        nsd_proc.stop()
    favour = sum(a < b for a, b in zip(core[after.name], core[before.name], strict=True))
    summary = AbResult(
        before=before.name, after=after.name, rate=args.rate, seconds=args.seconds,
        core_us=core, process_us=process, qps=qps,
        median_core_us={n: statistics.median(v) for n, v in core.items()},
        median_process_us={n: statistics.median(v) for n, v in process.items()},
        pairs_favouring_after=favour,
    )  # fmt: skip
    change = summary.median_core_us[after.name] / summary.median_core_us[before.name] - 1
    lines = [
        f"| build ({args.rate:,} qps, {args.rounds} x {args.seconds:g} s, alternating) "
        "| CPU µs per query, core busy: median (range) | worker's own CPU µs per query |",
        "|---|---|---|",
    ]
    for build in builds:
        values = core[build.name]
        lines.append(
            f"| {build.name} | {statistics.median(values):.2f} ({min(values):.2f}-"
            f"{max(values):.2f}) | {summary.median_process_us[build.name]:.2f} |"
        )
    lines.append(
        f"| after / before | {change:+.1%}, {favour} of {args.rounds} round pairs favour after | |"
    )
    table = "\n".join(lines)
    print(table)
    runs.save("ab", stamp, table, summary)


if __name__ == "__main__":
    main()
