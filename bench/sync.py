"""Authority sync under load (``bench/sync``): publish to enforced, for real.

A real ``filterd authority`` data directory holds a 1,000,000-entry list
built from ``../shared/data``; ``filterd authority serve`` serves it and a
real ``filterd run`` node (one worker) syncs it. While dnsperf loads the node
at a fixed share of its measured capacity, the authority publishes with the
real ``filterd authority publish`` command, which pushes a signed
notification to the node:

- ``--rounds`` deltas of ``--changes`` entries each (half removed, half
  added), which the node applies as an overlay;
- then one full snapshot (``publish --keep 0``: no delta offered, so the
  node downloads the whole list, compiles it and swaps it in under load);
- then, with ``--outage SECONDS``, one delta published while the authority's
  server is down: the push reaches the node, whose pull fails and is
  retried with backoff; the server comes back after SECONDS, and the time
  from its return to enforcement is the catch-up time after an outage (the
  node runs with the default ``sync.interval``, so retries follow the
  default backoff).

Reported for each publication: the publish command's own time (comparing
with the kept serials, compressing, signing: authority-side work before the
list is out); the time from the signed manifest being in place (its mtime:
the publication instant, just before the push) to the node answering with
the new serial, which covers push, pull, verification, apply and install;
and the time from the command's start to enforcement. For the whole run:
queries sent, answered and lost, latency percentiles, and the receipts as
the authority's compliance view shows them.

Same machine discipline as ``bench/run``: the node on CPU 0; NSD, dnsperf and
the authority on CPU 1; loopback only; every process stopped by the PID it
was started with; every load and wait bounded in time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import runs
from bench.measure import Load, _latencies, parse_summary, percentiles, run_dnsperf
from bench.swap import list_version
from bench.targets import FILTERD_BIN, LOOPBACK, Nsd, Proc, free_port, spawn
from filterd.authority.store import Store
from filterd.files import write_atomically
from filterd.sync.snapshot import Delta, Entry, apply_delta

NODE_CPU: Final = 0
LOAD_CPU: Final = 1
LIST_ID: Final = "national"
OPERATOR: Final = "bench-isp"
ADMIN_TOKEN: Final = "bench-admin-token-0123456789"
ENFORCE_TIMEOUT: Final = 60.0
POLL_EVERY: Final = 0.005


@dataclass(frozen=True, slots=True)
class Publication:
    serial: int
    kind: str  # "delta" or "snapshot"
    changes: int
    command_seconds: float
    published_to_enforced: float
    command_to_enforced: float


@dataclass(frozen=True, slots=True)
class Outage:
    seconds: float
    """How long the authority's server was down after the publication."""
    failures: int
    """Failed pulls the node counted meanwhile."""
    catch_up: float
    """From the server's return to the node enforcing the serial."""


@dataclass(frozen=True, slots=True)
class SyncResult:
    list_size: int
    first_sync_seconds: float
    capacity_qps: float
    rate_qps: int
    sent: int
    completed: int
    lost: int
    latency_ms: dict[str, float]
    publications: list[Publication]
    compliance: dict[str, Any]
    outage: Outage | None = None


def authority(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """One ``filterd authority`` command on the load CPU; fails loudly."""
    command = ["taskset", "-c", str(LOAD_CPU), str(FILTERD_BIN), "authority", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"filterd authority {args[0]}: {done.stderr.strip()}")
    return done


def prepare_authority(data: Path, list_path: Path, node_admin: str) -> str:
    """Key, operator (notified at the node's admin endpoint), the list imported
    and published as serial 1. Returns the operator's token."""
    authority("keygen", "--dir", data)
    token = authority(
        "operator", "add", "--dir", data, "--id", OPERATOR, "--notify", f"http://{node_admin}"
    ).stdout.splitlines()[0]
    authority("init", "--dir", data, "--list", LIST_ID)
    authority("import", "--dir", data, "--list", LIST_ID, list_path, "--format", "domains")
    authority("publish", "--dir", data, "--list", LIST_ID, "--no-notify")
    return token


def node_config(work: Path, port: int, admin: str, nsd_port: int, authority_port: int) -> Path:
    public_key = (work / "authority" / "authority.pub").read_text().strip()
    config = work / "filterd.yaml"
    config.write_text(
        f"""server:
  listen: ["{LOOPBACK}:{port}"]
  workers: 1
upstream:
  servers: ["{LOOPBACK}:{nsd_port}"]
cache:
  max_entries: 1000000
lists:
  - {{name: {LIST_ID}, sync: {LIST_ID}, mandatory: true}}
sync:
  url: "http://{LOOPBACK}:{authority_port}/v1/"
  token_file: token
  public_key: "{public_key}"
  operator: {OPERATOR}
  node: bench-node
  timeout: 60
admin:
  listen: "{admin}"
state_dir: state
"""
    )
    return config


def next_staging(store: Store, round_no: int, changes: int, removable: list[bytes]) -> bytes:
    """Stage the next version: ``changes // 2`` names removed, the rest added.
    Returns the first added name (the probe for this publication)."""
    half = changes // 2
    removes = tuple(sorted(removable[round_no * half : (round_no + 1) * half]))
    adds = tuple(
        Entry(f"sync-{round_no}-{i}.filterd-bench.example".encode(), b"block", b"gambling", b"-")
        for i in range(changes - half)
    )
    with store.locked():
        staging = store.staging(LIST_ID)
        text = apply_delta(staging, Delta(0, 0, removes, adds))
        write_atomically(store.staging_path(LIST_ID), text)
    return adds[0].name


def publish_and_wait(
    store: Store, port: int, probe: bytes, serial: int, changes: int, full: bool
) -> Publication:
    options = ["--keep", "0"] if full else []
    manifest = store.manifest_path(LIST_ID)
    started = time.time_ns()
    authority("publish", "--dir", store.root, "--list", LIST_ID, *options)
    command_done = time.time_ns()
    published = manifest.stat().st_mtime_ns
    deadline = time.monotonic() + ENFORCE_TIMEOUT
    while list_version(port, probe.decode()) != str(serial):
        if time.monotonic() > deadline:
            raise RuntimeError(f"serial {serial} not enforced in {ENFORCE_TIMEOUT:.0f} s")
        time.sleep(POLL_EVERY)
    enforced = time.time_ns()
    return Publication(
        serial,
        "snapshot" if full else "delta",
        changes,
        (command_done - started) / 1e9,
        (enforced - published) / 1e9,
        (enforced - started) / 1e9,
    )


def compliance(authority_port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{authority_port}/v1/compliance",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        report: dict[str, Any] = json.loads(response.read())
    nodes = [n for n in report["nodes"] if n["node"] == "bench-node"]
    return nodes[0] if nodes else {}


def run(rounds: int, changes: int, fraction: float, outage: float, work: Path) -> SyncResult:
    ds = runs.dataset()
    size = ds.sizes[1_000_000]
    work.mkdir(parents=True, exist_ok=True)
    port, admin_port, authority_port = free_port(), free_port(), free_port()
    admin = f"{LOOPBACK}:{admin_port}"
    print("authority: importing and publishing the 1M list", flush=True)
    token = prepare_authority(work / "authority", size.domains_path, admin)
    (work / "token").write_text(token + "\n")
    (work / "admin.token").write_text(ADMIN_TOKEN + "\n")
    store = Store(work / "authority")
    removable = store.staging(LIST_ID).split(b"\n")[1:-1]
    step = len(removable) // ((rounds + 1) * changes)
    removable = [line.split(b" ", 1)[0] for line in removable[::step]]

    nsd = Nsd(work=work, zone=ds.zone_path, cpu=LOAD_CPU)
    processes: list[Proc] = [nsd.start()]
    serve = ["authority", "serve", "--dir", str(work / "authority")]
    serve += ["--listen", f"{LOOPBACK}:{authority_port}"]
    serve += ["--admin-token-file", str(work / "admin.token")]

    def start_serve() -> Proc:
        return spawn("authority", [str(FILTERD_BIN), *serve], LOAD_CPU, work / "serve.log", work)

    try:
        processes.append(start_serve())
        config = node_config(work, port, admin, nsd.port, authority_port)
        node = spawn(
            "filterd",
            [str(FILTERD_BIN), "run", "-c", str(config)],
            NODE_CPU,
            work / "filterd.log",
            work,
        )
        processes.append(node)
        first_sync = wait_ready(node, admin)
        print(f"first sync of the 1M snapshot: ready {first_sync:.2f} s after start", flush=True)

        def dnsperf(datafile: Path, load: Load, seconds: float, name: str) -> float:
            return run_dnsperf(
                port,
                datafile,
                load,
                duration=seconds,
                cpu=LOAD_CPU,
                server_cpu=NODE_CPU,
                server_pid=node.pid,
                upstream_pid=processes[0].pid,
                output=work / name,
                max_runs=1 if name == "warm.out" else None,
            ).qps

        dnsperf(size.warm_path, Load(8, 1000), 120, "warm.out")
        capacity = dnsperf(size.hit_path, Load(clients=4, outstanding=200), 10, "capacity.out")
        rate = int(capacity * fraction)
        print(f"capacity {capacity:,.0f} qps; publishing under {rate:,} qps", flush=True)
        publications, summary, latency = publish_under_load(
            store, port, size.hit_path, rate, rounds, changes, removable, work
        )
        down = None
        if outage:
            serial = 3 + rounds
            probe = next_staging(store, rounds + 1, changes, removable)
            processes[1].stop()
            down = publish_during_outage(store, port, probe, serial, outage, admin, start_serve)
            processes[1] = down[1]
            print(
                f"serial {serial} published with the authority down for {outage:g} s: "
                f"{down[0].failures} failed pulls, enforced {down[0].catch_up:.2f} s after "
                "the authority came back",
                flush=True,
            )
        time.sleep(1.0)  # the last receipt
        return SyncResult(
            1_000_000,
            first_sync,
            capacity,
            rate,
            int(summary["sent"]),
            int(summary["completed"]),
            int(summary["lost"]),
            latency,
            publications,
            compliance(authority_port),
            down[0] if down else None,
        )
    finally:
        for process in reversed(processes):
            process.stop()


def publish_during_outage(
    store: Store,
    port: int,
    probe: bytes,
    serial: int,
    seconds: float,
    admin: str,
    start_serve: Callable[[], Proc],
) -> tuple[Outage, Proc]:
    """Publish (the push reaches the node) while ``serve`` is stopped, keep it
    down ``seconds``, start it again and time the node's catch-up."""
    authority("publish", "--dir", store.root, "--list", LIST_ID)
    time.sleep(seconds)
    server = start_serve()
    back = time.monotonic()
    deadline = back + 600
    while list_version(port, probe.decode()) != str(serial):
        if time.monotonic() > deadline:
            raise RuntimeError(f"serial {serial} not enforced 600 s after the outage")
        time.sleep(0.05)
    caught_up = time.monotonic() - back
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    failed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("filterd_sync_failures_total{") and 'reason="network"' in line
    )
    return Outage(seconds, int(failed), caught_up), server


def wait_ready(node: Proc, admin: str) -> float:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if not node.alive():
            raise RuntimeError(f"filterd exited:\n{node.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=0.5) as response:
                if response.status == 200:
                    return time.monotonic() - node.started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"filterd not ready in 300 s:\n{node.log_tail()}")


def publish_under_load(
    store: Store,
    port: int,
    hit_path: Path,
    rate: int,
    rounds: int,
    changes: int,
    removable: list[bytes],
    work: Path,
) -> tuple[list[Publication], dict[str, float], dict[str, float]]:
    """dnsperf at ``rate`` for as long as the publications take (bounded),
    publishing one after the other with a few seconds of steady load between."""
    duration = 10.0 * (rounds + 2) + 30.0
    output = work / "load.out"
    cmd = ["taskset", "-c", str(LOAD_CPU), "dnsperf", "-s", LOOPBACK, "-p", str(port)]
    cmd += ["-d", str(hit_path), "-c", "4", "-q", "200", "-t", "1"]
    cmd += ["-l", f"{duration:g}", "-Q", str(rate), "-v"]
    publications: list[Publication] = []
    with runs.background_load(cmd, output):
        for number in range(rounds + 1):
            time.sleep(3.0)
            full = number == rounds
            probe = next_staging(store, number, changes, removable)
            serial = 2 + number
            publication = publish_and_wait(store, port, probe, serial, changes, full)
            print(
                f"serial {serial} ({publication.kind}, {changes} changes): command "
                f"{publication.command_seconds:.2f} s, published to enforced "
                f"{publication.published_to_enforced:.3f} s",
                flush=True,
            )
            publications.append(publication)
        time.sleep(3.0)
    text = output.read_text(errors="replace")
    summary = parse_summary(text)
    latencies = _latencies(text, 1.0, int(summary["sent"]))
    latency = {k: v * 1000 for k, v in percentiles(latencies, (50.0, 99.0, 99.9)).items()}
    return publications, summary, latency


def table(result: SyncResult) -> str:
    lines = [
        f"| publication (1M list, node under {result.rate_qps:,} qps = "
        f"{result.rate_qps / result.capacity_qps:.0%} of {result.capacity_qps:,.0f}) "
        "| publish command | manifest published to enforced | command start to enforced |",
        "|---|---|---|---|",
    ]
    for p in result.publications:
        lines.append(
            f"| serial {p.serial}: {p.kind}, {p.changes} changes | {p.command_seconds:.2f} s "
            f"| {p.published_to_enforced:.3f} s | {p.command_to_enforced:.2f} s |"
        )
    c = result.compliance
    lines += [
        "",
        "| figure | value |",
        "|---|---|",
        "| first sync of the 1M snapshot: node start to ready | "
        f"{result.first_sync_seconds:.2f} s |",
        f"| queries sent / answered / lost over all publications | {result.sent:,} / "
        f"{result.completed:,} / {result.lost:,} |",
        f"| latency p50 / p99 / p99.9 | {result.latency_ms['p50']:.3f} / "
        f"{result.latency_ms['p99']:.3f} / {result.latency_ms['p99.9']:.3f} ms |",
        f"| compliance view: enforced serial, hash matches, lag | "
        f"{c.get('enforced_serial')}, {c.get('sha256_matches')}, {c.get('lag_seconds')} s |",
    ]
    if result.outage is not None:
        o = result.outage
        lines.append(
            f"| delta published with the authority down {o.seconds:g} s: failed pulls, "
            f"authority back to enforced | {o.failures}, {o.catch_up:.2f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="authority publish to enforced, under load")
    parser.add_argument("--rounds", type=int, default=5, help="delta publications")
    parser.add_argument("--changes", type=int, default=100, help="entries changed per round")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of capacity to load")
    parser.add_argument(
        "--outage", type=float, default=0, help="seconds the authority is down after a last delta"
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 2 <= args.changes <= 10_000:
        parser.error("--rounds 1-20, --changes 2-10000")
    if not 0 <= args.outage <= 300:
        parser.error("--outage 0-300 seconds")
    stamp = runs.timestamp()
    work = runs.RESULTS / "work" / f"sync-{stamp}"
    result = run(args.rounds, args.changes, args.fraction, args.outage, work)
    text = table(result)
    print(text)
    runs.save("sync", stamp, text, result)


if __name__ == "__main__":
    main()
