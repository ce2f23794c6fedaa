"""CPU instructions of a query that wakes the server alone (``bench/wakeup``).

Why this exists: below saturation (``bench/run``'s 10k qps phase) every
query wakes the server on its own, so its latency is the fixed cost of one
wake-up: the event loop, the receive and send calls, the pipeline. Time per
query on this VM moves by ±30 % between minutes (hypervisor steal, the idle
path of the vCPU); instructions do not. This counts the user-space
instructions one lone query costs, with callgrind, for:

- ``unbound``: Unbound answering one name from ``local-data``;
- ``filterd``: the daemon as ``bench/floor`` runs it (bundled defaults
  apart from ports, upstream: the Unbound above, a one-name list and no
  audit trail), the name cached; its worker process is the one counted;
  ``filterd-block``: the same process asked for the listed name (a block
  answered from the policy); ``filterd-distinct``: the same process asked
  4,000 cached names in turn, each again only after all the others, so
  that none is answered as a repeat within its second (the pipeline's
  *served* table) but every one from the cache: the path of a name's first
  query in a second, the common case at 10k qps with a realistic mix.

Each server runs under ``valgrind --tool=callgrind --instr-atstart=no``
(filterd with ``--trace-children=yes``, so that its worker is counted),
pinned to CPU 0. A client in this process, pinned to CPU 1, asks one query
at a time and waits for its answer: a warm-up with instrumentation off,
then on, a second warm-up, the counters zeroed, ``--queries`` measured
queries, a dump. Reported: instructions per query (the dump's total over
the queries; everything the process ran in that window counts, timers
included). The kernel's share (the system calls, the wake-up) is not in
callgrind's count: ``bench/floor`` measures CPU time with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench import runs
from bench.floor import BLOCKED, MANY, NAME, _filterd, _serving_pid, _unbound
from bench.targets import LOOPBACK, Proc, free_port, query_packet, query_rcode, spawn

SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
WARM_UP: Final = 300
DISTINCT: Final = [f"n{number}.{MANY}" for number in range(4000)]
"""Names asked in turn for ``filterd-distinct``: each is cached, and asked again
only after the 3,999 others (seconds under callgrind, about a millisecond a
query), so no answer comes from the served repeats: the cache path
(decode, verdict memo, cache read, TTLs aged, served)."""
CALLGRIND: Final = [
    "valgrind",
    "--tool=callgrind",
    "--instr-atstart=no",
    "--trace-children=yes",
]


def ping(port: int, names: Sequence[str], count: int, start: int = 0) -> None:
    """``count`` queries, one at a time, each answer awaited: ``names`` in turn
    from ``names[start]``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)  # under valgrind a reply takes about a millisecond
        sock.connect((LOOPBACK, port))
        for number in range(count):
            query_id = number & 0xFFFF
            name = names[(start + number) % len(names)]
            sock.send(query_packet(query_id, name, "A", edns_size=1232))
            while True:
                answer = sock.recv(4096)
                if answer[:2] == query_id.to_bytes(2, "big"):
                    break


def _control(pid: int, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)


def _total(dump: Path) -> int:
    """The instruction total of a callgrind dump (its ``totals:`` or ``summary:`` line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"bench/wakeup: no totals in {dump}")


def count(pid: int, port: int, names: Sequence[str], queries: int, work: Path) -> float:
    """Instructions per query of process ``pid`` answering ``names`` in turn, one
    query at a time. Every name is asked before counting starts (cached)."""
    before = set(work.glob(f"callgrind.{pid}.*"))
    warm_up = max(WARM_UP, len(names))
    ping(port, names, warm_up)
    _control(pid, "-i", "on")
    ping(port, names, warm_up)
    _control(pid, "-z")
    ping(port, names, queries, start=warm_up)
    _control(pid, "-d")
    _control(pid, "-i", "off")
    deadline = time.monotonic() + 30
    while not (dumps := set(work.glob(f"callgrind.{pid}.*")) - before):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/wakeup: callgrind wrote no dump for {pid}")
        time.sleep(0.1)
    time.sleep(0.5)  # the dump is written by the process itself: let it finish
    return _total(max(dumps, key=lambda path: path.stat().st_mtime)) / queries


def _wait_answering(proc: Proc, port: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while query_rcode(port, NAME, timeout=1.0) is None:
        if time.monotonic() > deadline or not proc.alive():
            raise SystemExit(f"bench/wakeup: {proc.name} does not answer:\n{proc.log_tail()}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/wakeup", description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=2000, help="measured per server (2000)")
    args = parser.parse_args()
    missing = [tool for tool in ("valgrind", "callgrind_control", "unbound", "taskset")]
    missing = [tool for tool in missing if shutil.which(tool) is None]
    if missing:
        print(f"bench: SKIPPED: {', '.join(missing)} not installed")
        return
    stamp = runs.timestamp()
    work = runs.RESULTS / "work" / f"wakeup-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {CLIENT_CPU})
    out = ["--callgrind-out-file=" + str(work / "callgrind.%p")]
    ports = {"unbound": free_port(), "filterd": free_port()}
    procs: dict[str, Proc] = {}
    figures: dict[str, float] = {}
    try:
        procs["unbound"] = spawn(
            "unbound", [*CALLGRIND, *out, *_unbound(work, ports["unbound"])],
            SERVER_CPU, work / "unbound.log", work,
        )  # fmt: skip
        _wait_answering(procs["unbound"], ports["unbound"])
        procs["filterd"] = spawn(
            "filterd",
            [*CALLGRIND, *out, *_filterd(work, ports["filterd"], ports["unbound"])],
            SERVER_CPU, work / "filterd.log", work,
        )  # fmt: skip
        _wait_answering(procs["filterd"], ports["filterd"])
        figures["unbound"] = count(
            procs["unbound"].pid, ports["unbound"], [NAME], args.queries, work
        )
        worker = _serving_pid(procs["filterd"])
        figures["filterd"] = count(worker, ports["filterd"], [NAME], args.queries, work)
        figures["filterd-block"] = count(worker, ports["filterd"], [BLOCKED], args.queries, work)
        figures["filterd-distinct"] = count(worker, ports["filterd"], DISTINCT, args.queries, work)
    finally:
        for proc in procs.values():
            proc.stop()
    lines = [
        f"| server (a query at a time, {args.queries:,} measured) | instructions per query "
        "| / Unbound's |",
        "|---|---|---|",
    ]
    for name, value in figures.items():
        lines.append(f"| {name} | {value:,.0f} | {value / figures['unbound']:.2f}x |")
    table = "\n".join(lines) + "\n"
    (runs.RESULTS / f"wakeup-{stamp}.json").write_text(json.dumps(figures, indent=1))
    (runs.RESULTS / f"wakeup-{stamp}.md").write_text(table)
    print(table, end="")
    print(f"bench/wakeup: {runs.RESULTS / f'wakeup-{stamp}.md'}")


if __name__ == "__main__":
    main()
