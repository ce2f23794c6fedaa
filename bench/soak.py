"""A soak under abuse (``bench/soak``): legitimate load at a steady share of
capacity for minutes, while three kinds of abuse run beside it.

The node is filterd with its bundled defaults on the 1M list (as in
``bench/run``), except that ``access.allow`` covers the loopback /8 and the
rate limit's loopback exemption is narrowed to 127.0.0.1, the legitimate
load generator's address, so that the abuse (from other loopback prefixes)
meets the limits it would meet from the network. On CPU 1, beside NSD and
dnsperf, the harness runs:

- a **flood** of identical queries for one name from 127.0.2.9 (a reflection
  attempt: the response rate limit's case);
- a **slowloris**: 200 TCP connections from 127.0.3.0/24 that send one byte
  every two seconds and are reopened when closed;
- a **random-subdomain flood**: uncached random names at about 1,000 a second
  from 127.0.4.9 (the miss path's per-prefix bound).

Legitimate load: dnsperf at ``--fraction`` of the measured capacity with the
realistic query file, one bounded 60-second run per minute for
``--minutes``, each giving that minute's loss and latency percentiles; the
node's RSS (whole process tree) is sampled after each. Reported: per-minute
figures, crashes (the node must stay up: same PID, /healthz 200), and the
abuse's own counts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import runs
from bench.measure import Load, percentiles, run_dnsperf
from bench.sync import wait_ready
from bench.targets import FILTERD_BIN, LOOPBACK, Nsd, Proc, free_port, spawn, tree_memory

NODE_CPU: Final = 0
LOAD_CPU: Final = 1
MINUTE: Final = 60.0


@dataclass(slots=True)
class Abuse:
    flood_sent: int = 0
    flood_answers: int = 0
    slow_connections_opened: int = 0
    slow_connections_closed_by_node: int = 0
    random_sent: int = 0
    random_answers: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class Minute:
    minute: int
    sent: int
    lost: int
    p50_ms: float
    p99_ms: float
    rss_mib: float


@dataclass(frozen=True, slots=True)
class SoakResult:
    capacity_qps: float
    rate_qps: int
    minutes: list[Minute]
    crashed: bool
    abuse: dict[str, int]
    rate_limited: dict[str, float]


def config(work: Path, port: int, admin: str, nsd_port: int, list_path: Path) -> Path:
    path = work / "filterd.yaml"
    path.write_text(
        f"""server:
  listen: ["{LOOPBACK}:{port}"]
access:
  allow: ["127.0.0.0/8"]
upstream:
  servers: ["{LOOPBACK}:{nsd_port}"]
lists:
  - {{name: national, path: "{list_path}", format: domains, mandatory: true}}
rate_limit:
  exempt: ["127.0.0.1/32"]
admin:
  listen: "{admin}"
state_dir: state
"""
    )
    return path


def flood(port: int, abuse: Abuse) -> None:
    query = bytearray(b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    query += b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.2.9", 0))
        sock.setblocking(False)
        while not abuse.stop.is_set():
            for _ in range(16):
                query[0:2] = random.getrandbits(16).to_bytes(2, "big")
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(query, (LOOPBACK, port))
                    abuse.flood_sent += 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(4096)
                    abuse.flood_answers += 1
            time.sleep(0.0005)


def slowloris(port: int, abuse: Abuse, count: int = 200) -> None:
    held: list[socket.socket] = []
    try:
        while not abuse.stop.is_set():
            while len(held) < count and not abuse.stop.is_set():
                source = f"127.0.3.{1 + len(held) % 250}"
                try:
                    sock = socket.create_connection(
                        (LOOPBACK, port), timeout=1, source_address=(source, 0)
                    )
                except OSError:
                    break
                sock.setblocking(False)
                held.append(sock)
                abuse.slow_connections_opened += 1
            for sock in list(held):
                try:
                    sock.send(b"\x00")
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    held.remove(sock)
                    sock.close()
                    abuse.slow_connections_closed_by_node += 1
            abuse.stop.wait(2.0)
    finally:
        for sock in held:
            sock.close()


def random_subdomains(port: int, abuse: Abuse, per_second: int = 1000) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.4.9", 0))
        sock.setblocking(False)
        while not abuse.stop.is_set():
            started = time.monotonic()
            for _ in range(per_second // 10):
                label = f"{random.getrandbits(48):012x}".encode()
                query = random.getrandbits(16).to_bytes(2, "big") + b"\x01\x00\x00\x01"
                query += b"\x00\x00\x00\x00\x00\x00" + bytes((len(label),)) + label
                query += b"\x04soak\x07invalid\x00\x00\x01\x00\x01"
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(query, (LOOPBACK, port))
                    abuse.random_sent += 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(4096)
                    abuse.random_answers += 1
            abuse.stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))


def healthy(admin: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{admin}/healthz", timeout=2) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


def counters(admin: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    wanted = (
        "filterd_rate_limit_dropped_total",
        "filterd_rate_limit_slipped_total",
        "filterd_tcp_slow_closed_total",
        "filterd_forward_client_overload_total",
        "filterd_worker_restarts_total",
    )
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split(" ", 1)[0]
        if name in wanted:
            found[name] = float(line.rsplit(" ", 1)[1])
    return found


def run(minutes: int, fraction: float, work: Path) -> SoakResult:
    os.sched_setaffinity(0, {LOAD_CPU})
    ds = runs.dataset()
    size = ds.sizes[1_000_000]
    work.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), f"{LOOPBACK}:{free_port()}"
    nsd = Nsd(work=work, zone=ds.zone_path, cpu=LOAD_CPU)
    processes: list[Proc] = [nsd.start()]
    abuse = Abuse()
    threads: list[threading.Thread] = []
    try:
        conf = config(work, port, admin, nsd.port, size.domains_path)
        node = spawn("filterd", [str(FILTERD_BIN), "run", "-c", str(conf)], NODE_CPU,
                     work / "filterd.log", work)  # fmt: skip
        processes.append(node)
        wait_ready(node, admin)

        def dnsperf(datafile: Path, load: Load, seconds: float, name: str) -> list[float]:
            result = run_dnsperf(
                port, datafile, load, duration=seconds, cpu=LOAD_CPU, server_cpu=NODE_CPU,
                server_pid=node.pid, upstream_pid=processes[0].pid, output=work / name,
                verbose=name.startswith("minute"),
            )  # fmt: skip
            return [result.qps, result.sent, result.lost, *result.latencies_s]

        dnsperf(size.warm_path, Load(8, 1000), 120, "warm.out")
        capacity = dnsperf(size.hit_path, Load(clients=4, outstanding=200), 10, "capacity.out")[0]
        rate = int(capacity * fraction)
        print(
            f"capacity {capacity:,.0f} qps; soaking at {rate:,} qps for {minutes} min", flush=True
        )
        for target in (flood, slowloris, random_subdomains):
            thread = threading.Thread(target=target, args=(port, abuse), daemon=True)
            thread.start()
            threads.append(thread)
        before = counters(admin)
        results: list[Minute] = []
        crashed = False
        for minute in range(1, minutes + 1):
            load = Load(clients=4, outstanding=200, rate=rate)
            _, sent, lost, *latencies = dnsperf(size.hit_path, load, MINUTE, f"minute-{minute}.out")
            cut = percentiles(latencies, (50.0, 99.0)) if latencies else {"p50": 0.0, "p99": 0.0}
            memory = tree_memory(node.pid)
            row = Minute(minute, int(sent), int(lost), cut["p50"] * 1000, cut["p99"] * 1000,
                         memory.rss_mib)  # fmt: skip
            results.append(row)
            print(
                f"minute {minute}: sent {row.sent:,} lost {row.lost:,} p50 {row.p50_ms:.3f} ms "
                f"p99 {row.p99_ms:.3f} ms RSS {row.rss_mib:.0f} MiB",
                flush=True,
            )
            if not node.alive() or not healthy(admin):
                crashed = True
                break
        after = counters(admin)
    finally:
        abuse.stop.set()
        for thread in threads:
            thread.join(10)
        for process in reversed(processes):
            process.stop()
    limited = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    counts = {
        "flood_sent": abuse.flood_sent,
        "flood_answers": abuse.flood_answers,
        "slow_connections_opened": abuse.slow_connections_opened,
        "slow_connections_closed_by_node": abuse.slow_connections_closed_by_node,
        "random_sent": abuse.random_sent,
        "random_answers": abuse.random_answers,
    }
    return SoakResult(capacity, rate, results, crashed, counts, limited)


def table(result: SoakResult) -> str:
    lines = [
        f"| minute (legitimate load {result.rate_qps:,} qps = "
        f"{result.rate_qps / result.capacity_qps:.0%} of {result.capacity_qps:,.0f}) "
        "| sent | lost | p50 ms | p99 ms | RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for m in result.minutes:
        lines.append(
            f"| {m.minute} | {m.sent:,} | {m.lost:,} | {m.p50_ms:.3f} | {m.p99_ms:.3f} "
            f"| {m.rss_mib:.0f} |"
        )
    lines += ["", "| figure | value |", "|---|---|", f"| node crashed | {result.crashed} |"]
    for name, value in {**result.abuse, **result.rate_limited}.items():
        lines.append(f"| {name} | {value:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="legitimate load under abuse, for minutes")
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=0.7)
    args = parser.parse_args()
    if not 1 <= args.minutes <= 60 or not 0.05 <= args.fraction <= 1.0:
        parser.error("--minutes 1-60, --fraction 0.05-1")
    stamp = runs.timestamp()
    result = run(args.minutes, args.fraction, runs.RESULTS / "work" / f"soak-{stamp}")
    text = table(result)
    print(text)
    runs.save("soak", stamp, text, result)


if __name__ == "__main__":
    main()
