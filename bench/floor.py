"""Latency floor of a Python DNS server on this machine (``bench/floor``).

Why this exists: at a low fixed rate (10k qps) every query wakes the server
alone, so latency is set by the fixed cost of one wake-up, not by the
per-query pipeline. This measures how much of filterd's latency a Python
server pays before doing any DNS work at all, next to Unbound, in one run:

- ``unbound``: Unbound answering one name from ``local-data`` (no upstream);
- ``py-blocking``: a Python loop blocked in ``recvfrom``, answering with
  ``sendto`` (no event loop): the interpreter's own floor;
- ``py-asyncio``: the same answer from an asyncio ``add_reader`` callback with
  ``recvfrom``/``sendto``;
- ``py-asyncio-mmsg``: the same callback with filterd's batched
  ``recvmmsg``/``sendmmsg`` (``filterd.listeners.mmsg``);
- ``py-hotloop-mmsg``: that callback as a hot reader of filterd's worker
  loop (``filterd.listeners.hotloop``: bare epoll inside asyncio's selector);
- ``filterd``: the daemon itself, the name cached (its upstream is the Unbound
  above), a one-name list; ``filterd-block``: the same process asked for the
  name on that list (a block answered from the policy).

The minimal responders answer every query with the question, QR and RA set,
and no records: they do no DNS work, only I/O. Every server is pinned to CPU
0, dnsperf to CPU 1; rounds alternate the servers so that each sees the same
noisy periods of the VM. Reported per server: latency percentiles over all
rounds, the median of the per-round p99, and CPU time per query (user and
system, from ``/proc/PID/stat``; for filterd its worker process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Final

from bench import runs
from bench.measure import CLK_TCK, Load, alternating, percentiles, run_dnsperf
from bench.targets import (
    FILTERD_BIN,
    LOOPBACK,
    Proc,
    free_port,
    process_tree,
    query_rcode,
    spawn,
)

SERVER_CPU: Final = 0
LOAD_CPU: Final = 1
NAME: Final = "www.floor.test"
BLOCKED: Final = "blocked.floor.test"
MANY: Final = "many.floor.test"
"""Every name under it has an address in the Unbound above (``bench/wakeup``'s distinct names)."""
MODES: Final = ("py-blocking", "py-asyncio", "py-asyncio-mmsg", "py-hotloop-mmsg")


# --- the minimal responders (run as ``python -m bench.floor --serve MODE PORT``) --------


def _answer(query: bytes) -> bytes:
    """The question back with QR, RD and RA set, NOERROR and no records."""
    return query[:2] + b"\x81\x80" + query[4:6] + b"\0\0\0\0\0\0" + query[12:]


def serve(mode: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, port))
    if mode == "py-blocking":
        while True:
            data, peer = sock.recvfrom(4096)
            sock.sendto(_answer(data), peer)
    sock.setblocking(False)
    if mode == "py-hotloop-mmsg":
        from filterd.listeners.serving import serving_loop  # noqa: PLC0415 - this mode only

        loop = serving_loop()
    else:
        loop = asyncio.new_event_loop()
    if mode == "py-asyncio":

        def on_readable() -> None:
            while True:
                try:
                    data, peer = sock.recvfrom(4096)
                except BlockingIOError:
                    return
                sock.sendto(_answer(data), peer)

    else:
        from filterd.listeners.mmsg import Batch  # noqa: PLC0415 - this mode only

        batch = Batch(sock, 64, 4096, 4096)

        def on_readable() -> None:
            received = batch.receive()
            for index in range(len(received) // 2):
                batch.queue(_answer(received[2 * index]), index)
            batch.flush()

    if mode == "py-hotloop-mmsg":
        from filterd.listeners.serving import reactor_for  # noqa: PLC0415 - this mode only

        reactor_for(loop).add_reader(sock.fileno(), on_readable)
    else:
        loop.add_reader(sock.fileno(), on_readable)
    loop.call_later(3600, lambda: None)  # like a worker, the loop has a timer pending
    loop.run_forever()


# --- the servers under test ----------------------------------------------------------


def _unbound(work: Path, port: int) -> list[str]:
    conf = work / "unbound.conf"
    conf.write_text(
        f"""server:
  interface: {LOOPBACK}
  port: {port}
  num-threads: 1
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  access-control: 127.0.0.0/8 allow
  local-zone: "floor.test." static
  local-data: "{NAME}. 300 IN A 192.0.2.1"
  local-zone: "{MANY}." redirect
  local-data: "{MANY}. 300 IN A 192.0.2.2"
remote-control:
  control-enable: no
"""
    )
    return ["unbound", "-d", "-c", str(conf)]


def _filterd(work: Path, port: int, upstream: int) -> list[str]:
    (work / "list.txt").write_text(f"{BLOCKED}\n")
    conf = work / "filterd.yaml"
    conf.write_text(
        f"""server: {{listen: ["{LOOPBACK}:{port}"], workers: 1}}
access: {{allow: ["127.0.0.0/8"]}}
upstream: {{servers: ["{LOOPBACK}:{upstream}"]}}
lists: [{{name: floor, path: list.txt, format: domains}}]
admin: {{listen: "{LOOPBACK}:{free_port()}"}}
audit: {{enabled: false}}
state_dir: state
"""
    )
    return [str(FILTERD_BIN), "run", "-c", str(conf)]


def _serving_pid(proc: Proc) -> int:
    """The process that answers: filterd's worker, or the process itself."""
    for pid in process_tree(proc.pid):
        try:
            if b"filterd.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return proc.pid


def _cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/floor", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="open-loop qps (10000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per round and server (8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all servers (3)")
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    stamp = runs.timestamp()
    work = runs.RESULTS / "work" / f"floor-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    queries = work / "queries.txt"
    queries.write_text(f"{NAME} A\n" * 50_000)
    blocked = work / "blocked.txt"
    blocked.write_text(f"{BLOCKED} A\n" * 50_000)
    os.sched_setaffinity(0, {LOAD_CPU})
    ports = {name: free_port() for name in ("unbound", *MODES, "filterd")}
    commands = {
        "unbound": _unbound(work, ports["unbound"]),
        **{
            mode: [sys.executable, "-m", "bench.floor", "--serve", mode, str(ports[mode])]
            for mode in MODES
        },
        "filterd": _filterd(work, ports["filterd"], ports["unbound"]),
    }
    procs: dict[str, Proc] = {}
    # What is measured: (server, query file); filterd also for a blocked name.
    entries = {name: (name, queries) for name in commands}
    entries["filterd-block"] = ("filterd", blocked)
    samples: dict[str, list[float]] = {name: [] for name in entries}
    round_p99: dict[str, list[float]] = {name: [] for name in entries}
    cpu: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in entries}
    try:
        for name, command in commands.items():
            procs[name] = spawn(name, command, SERVER_CPU, work / f"{name}.log", work)
        deadline = time.monotonic() + 60
        for name, port in ports.items():
            while query_rcode(port, NAME) is None:
                if time.monotonic() > deadline or not procs[name].alive():
                    raise SystemExit(
                        f"bench/floor: {name} does not answer:\n{procs[name].log_tail()}"
                    )
                time.sleep(0.1)
        for number in range(args.rounds):
            for name in alternating(list(entries), number):
                server, path = entries[name]
                pid = _serving_pid(procs[server])
                user0, sys0 = _cpu_seconds(pid)
                result = run_dnsperf(
                    ports[server], path, Load(4, 200, rate=args.rate, timeout_s=1.0),
                    duration=args.seconds, cpu=LOAD_CPU, server_cpu=SERVER_CPU,
                    server_pid=pid, upstream_pid=None,
                    output=work / f"dnsperf-{name}-{number}.out", verbose=True,
                )  # fmt: skip
                user1, sys1 = _cpu_seconds(pid)
                samples[name].extend(result.latencies_s)
                round_p99[name].append(percentiles(result.latencies_s, (99.0,))["p99"])
                cpu[name][0] += user1 - user0
                cpu[name][1] += sys1 - sys0
                cpu[name][2] += result.completed
                time.sleep(0.5)
    finally:
        for proc in procs.values():
            proc.stop()
    report = {}
    lines = [
        f"| server ({args.rate:,} qps, {args.rounds} x {args.seconds:g} s) | p50 / p99 / p99.9 ms "
        "| median of round p99 ms | CPU µs per query, user + system |",
        "|---|---|---|---|",
    ]
    for name in entries:
        pct = {k: v * 1000 for k, v in percentiles(samples[name], (50.0, 99.0, 99.9)).items()}
        median_p99 = statistics.median(round_p99[name]) * 1000
        user_us = 1e6 * cpu[name][0] / max(cpu[name][2], 1)
        sys_us = 1e6 * cpu[name][1] / max(cpu[name][2], 1)
        report[name] = {"ms": pct, "median_round_p99_ms": median_p99, "cpu_us": [user_us, sys_us]}
        lines.append(
            f"| {name} | {pct['p50']:.3f} / {pct['p99']:.3f} / {pct['p99.9']:.3f} | "
            f"{median_p99:.3f} | {user_us:.1f} + {sys_us:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    (runs.RESULTS / f"floor-{stamp}.json").write_text(json.dumps(report, indent=1))
    (runs.RESULTS / f"floor-{stamp}.md").write_text(table)
    print(table)
    print(f"results: {runs.RESULTS / f'floor-{stamp}.md'}")


if __name__ == "__main__":
    main()
