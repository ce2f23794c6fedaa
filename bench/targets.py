"""Start and stop the servers of a run: NSD (the upstream) and the targets under test.

Why its own module: every process the harness starts goes through ``Proc``,
which remembers the PID it started and stops exactly that PID (SIGTERM, then
SIGKILL after a bounded wait). Nothing is ever stopped by name. Servers are
pinned with ``taskset`` (the server under test on one CPU, NSD and dnsperf on
the other), listen on 127.0.0.1 (and, given a ``Network``, on the server
side of ``bench.flood``'s veth), run in the foreground and keep their
config, state and logs in the run's scratch directory.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from bench.data import RPZ_ORIGIN

LOOPBACK: Final = "127.0.0.1"
REPO: Final = Path(__file__).resolve().parent.parent
FILTERD_BIN: Final = REPO / ".venv" / "bin" / "filterd"
STOP_TIMEOUT: Final = 20.0
PR_SET_PDEATHSIG: Final = 1


class TargetError(RuntimeError):
    """A server failed to start, died, or could not be stopped cleanly."""


@dataclass(frozen=True, slots=True)
class Network:
    """A second address a server listens on, for clients on a network other
    than loopback (``bench.flood``'s veth): the same port as on loopback."""

    address: str
    clients: str
    """The clients' prefix, which the server must allow."""


def free_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP at the time of the call."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise TargetError("no free loopback port found")


@dataclass(slots=True)
class Proc:
    """A process this harness started; only ever signalled by its own PID."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float  # time.monotonic() just before the exec

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM our PID, wait up to ``timeout``, then SIGKILL it; return the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
                raise TargetError(f"{self.name} (pid {self.pid}) ignored SIGTERM; killed") from None
        return int(self.popen.returncode)


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGTERM to this child if the harness dies.

    Normal stops go through ``Proc.stop``; this only covers the harness being
    SIGKILLed or crashing, so that no server or dnsperf outlives it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, cmd: list[str], cpu: int | str, log_path: Path, cwd: Path) -> Proc:
    """Exec ``cmd`` through ``taskset -c cpu`` (a CPU number or a list such as
    ``"0,1"``; taskset execs, so the PID is the server's).

    Each server gets a session of its own, as a service manager starts a
    daemon: with scheduler autogroups a session is a CPU-scheduling group,
    and a server sharing the harness's group (with dnsperf) would be
    scheduled unlike in production."""
    log = log_path.open("wb")
    try:
        started = time.monotonic()
        popen = subprocess.Popen(
            ["taskset", "-c", str(cpu), *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            # The harness runs no threads, so a preexec_fn is safe here.
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    finally:
        log.close()
    return Proc(name=name, popen=popen, log_path=log_path, started=started)


# --- memory of a process tree -------------------------------------------------


def proc_stats(extra: str | None = None) -> Iterator[tuple[int, str, list[str], str]]:
    """Every process in /proc: (pid, name, the stat(5) fields after the name,
    starting with the state, so field n of stat(5) is ``fields[n - 3]``, and
    the text of its file ``extra``, e.g. ``schedstat``: "" when not asked).
    A process gone meanwhile is left out."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            more = Path(f"/proc/{entry}/{extra}").read_text() if extra else ""
        except OSError:
            continue
        # The name may hold spaces and parentheses: split after the last ')'.
        head, _, rest = stat.rpartition(")")
        yield int(entry), head[head.index("(") + 1 :], rest.split(), more


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, _, fields, _ in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (bounded by the size of /proc)."""
    children = _children_map()
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 100_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kb_field(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass(frozen=True, slots=True)
class Memory:
    """Sum over the process tree, in MiB; PSS splits shared pages fairly among processes."""

    processes: int
    rss_mib: float
    pss_mib: float


def tree_memory(pid: int) -> Memory:
    pids = process_tree(pid)
    rss = sum(_kb_field(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids)
    pss = sum(_kb_field(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids)
    return Memory(processes=len(pids), rss_mib=rss / 1024, pss_mib=pss / 1024)


# --- the upstream ---------------------------------------------------------------


@dataclass(slots=True)
class Nsd:
    """NSD serving the generated root zone on a loopback port, in the foreground."""

    work: Path
    zone: Path
    cpu: int
    port: int = field(default_factory=free_port)
    network: Network | None = None

    def config(self) -> Path:
        d = self.work / "nsd"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "nsd.conf"
        also = f"\n  ip-address: {self.network.address}@{self.port}" if self.network else ""
        conf.write_text(
            f"""server:
  ip-address: {LOOPBACK}@{self.port}{also}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{d}"
  database: ""
  zonelistfile: "{d}/zone.list"
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  cookie-secret-file: "{d}/cookie.secret"
  logfile: "{d}/nsd.log"
  do-ip6: no
  verbosity: 1
  hide-version: yes
  refuse-any: yes
  minimal-responses: yes
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  receive-buffer-size: 4194304
  send-buffer-size: 4194304
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "{self.zone}"
"""
        )
        return conf

    def start(self, timeout: float = 120.0) -> Proc:
        conf = self.config()
        proc = spawn(
            "nsd",
            ["/usr/sbin/nsd", "-d", "-c", str(conf)],
            self.cpu,
            self.work / "nsd" / "stderr.log",
            self.work,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise TargetError(f"nsd exited early:\n{proc.log_tail()}")
            if query_rcode(self.port, ".", "SOA", 0.2) == 0:
                return proc
            time.sleep(0.1)
        proc.stop()
        raise TargetError(f"nsd did not answer within {timeout:.0f} s")


# --- DNS probe ---------------------------------------------------------------------

QTYPE_CODES: Final = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "HTTPS": 65}
RCODE_NAMES: Final = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
NXDOMAIN: Final = 3


def query_packet(qid: int, name: str, qtype: str, *, edns_size: int | None = None) -> bytes:
    """A recursive query for ``name``; with ``edns_size``, an OPT record
    advertising that UDP size (RFC 6891), DO clear."""
    labels = [lab for lab in name.rstrip(".").split(".") if lab]
    qname = b"".join(bytes([len(lab)]) + lab.encode("ascii") for lab in labels) + b"\0"
    arcount = b"\x00\x00" if edns_size is None else b"\x00\x01"
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00" + arcount
    question = qname + QTYPE_CODES[qtype].to_bytes(2, "big") + b"\x00\x01"
    if edns_size is None:
        return header + question
    return header + question + b"\x00\x00\x29" + edns_size.to_bytes(2, "big") + b"\0" * 6


def query_rcode(port: int, name: str, qtype: str = "A", timeout: float = 0.2) -> int | None:
    """One UDP query to 127.0.0.1:port; the RCODE, or None on timeout or refusal."""
    qid = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query_packet(qid, name, qtype), (LOOPBACK, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data, _ = sock.recvfrom(4096)
                if len(data) >= 12 and int.from_bytes(data[:2], "big") == qid:
                    return data[3] & 0x0F
        except OSError:  # timeout, or ICMP port unreachable before the server binds
            return None
    return None


# --- targets under test -------------------------------------------------------------


class Target(Protocol):
    """A DNS server under test, configured for one list and started fresh each time."""

    name: str

    def available(self) -> str | None:
        """None when it can run here, else why not."""

    def command(
        self, work: Path, port: int, upstream_port: int, list_path: Path, network: Network | None
    ) -> list[str]:
        """Write the config into ``work`` and return the foreground command line;
        with ``network``, it also serves that network's clients on its address."""

    def list_path(self, domains: Path, rpz: Path) -> Path:
        """Which of the two list files this target loads."""

    def ready_check(self) -> Callable[[], bool] | None:
        """Its own readiness signal, when it has one."""

    @property
    def cpus(self) -> str | None:
        """CPUs to pin it to, when not the run's server CPU alone."""

    @property
    def warm_passes(self) -> int:
        """Passes of the warm file that fill every cache it keeps."""


@dataclass(slots=True)
class Unbound:
    """Unbound 1.17, one thread, forwarding to NSD, the list loaded as an RPZ zone
    file; a 256 MB message cache and a 512 MB RRset cache (Unbound's usual 1:2)."""

    name: str = "unbound"
    binary: str = "/usr/sbin/unbound"
    cpus: str | None = None
    warm_passes: int = 1

    def available(self) -> str | None:
        return None if Path(self.binary).exists() else f"{self.binary} not installed"

    def list_path(self, domains: Path, rpz: Path) -> Path:
        return rpz

    def command(
        self, work: Path, port: int, upstream_port: int, list_path: Path, network: Network | None
    ) -> list[str]:
        conf = work / "unbound.conf"
        also = (
            f"\n  interface: {network.address}\n  access-control: {network.clients} allow"
            if network
            else ""
        )
        conf.write_text(
            f"""server:
  interface: {LOOPBACK}{also}
  port: {port}
  do-ip6: no
  num-threads: 1
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{work}"
  pidfile: "{work}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  log-time-ascii: yes
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "respip iterator"
  msg-cache-size: 256m
  rrset-cache-size: 512m
  num-queries-per-thread: 4096
  outgoing-range: 8192
  so-rcvbuf: 4m
  so-sndbuf: 4m
  prefetch: no
  qname-minimisation: no
  auto-trust-anchor-file: ""
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: {LOOPBACK}@{upstream_port}
rpz:
  name: "{RPZ_ORIGIN}."
  zonefile: "{list_path}"
  rpz-log: no
"""
        )
        return [self.binary, "-d", "-c", str(conf)]

    def ready_check(self) -> Callable[[], bool] | None:
        return None


@dataclass(slots=True)
class Filterd:
    """filterd (``filterd run -c CONFIG``), ``workers`` worker processes (one by
    default), the list loaded as a domains file; every other setting, the
    cache's size included, is the bundled default."""

    name: str = "filterd"
    binary: Path = FILTERD_BIN
    admin_port: int = 0
    workers: int = 1
    cpus: str | None = None
    """CPUs to pin it to, when not the run's server CPU alone."""

    @property
    def warm_passes(self) -> int:
        """One pass, whatever the number of workers: each question is always
        answered by the same worker (``filterd.listeners.steer``), so one
        pass leaves every question cached where it will be asked."""
        return 1

    def available(self) -> str | None:
        if not self.binary.exists():
            return f"{self.binary} not installed"
        try:
            done = subprocess.run(
                [str(self.binary), "--help"], capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{self.binary} --help failed: {exc}"
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            return f"{self.binary} --help exited {done.returncode}: {err[-1] if err else ''}"
        return None

    def list_path(self, domains: Path, rpz: Path) -> Path:
        return domains

    def command(
        self, work: Path, port: int, upstream_port: int, list_path: Path, network: Network | None
    ) -> list[str]:
        self.admin_port = free_port()
        listen = [f"{LOOPBACK}:{port}"]
        extra = ""
        if network:
            # The flood's clients (10.53.0.0/16) are inside the default
            # access.allow (10.0.0.0/8). Its sources share one /24, which
            # rate limiting would treat as one flooding prefix: exempt, they
            # are on the footing the default exemption gives loopback, where
            # dnsperf runs (Unbound has no rate limit configured).
            listen.append(f"{network.address}:{port}")
            extra = f'rate_limit:\n  exempt: ["127.0.0.0/8", "::1/128", "{network.clients}"]\n'
        state = work / "state"
        if state.exists():
            shutil.rmtree(state)
        state.mkdir(parents=True)
        conf = work / "filterd.yaml"
        conf.write_text(
            f"""server:
  listen: {json.dumps(listen)}
  workers: {self.workers}
{extra}upstream:
  servers: ["{LOOPBACK}:{upstream_port}"]
lists:
  - name: bench
    path: "{list_path}"
    format: domains
    mandatory: true
admin:
  listen: "{LOOPBACK}:{self.admin_port}"
state_dir: "{state}"
"""
        )
        return [str(self.binary), "run", "-c", str(conf)]

    def ready_check(self) -> Callable[[], bool] | None:
        return self._ready

    def _ready(self) -> bool:
        url = f"http://{LOOPBACK}:{self.admin_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=0.3) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False


TARGETS: Final[dict[str, Callable[[], Target]]] = {
    "unbound": Unbound,
    "filterd": Filterd,
    # Two workers on the same one core (SO_REUSEPORT, one memory-mapped index):
    # what a second process costs in memory and throughput. On a 2-CPU machine
    # the other core is the load generator's, so scaling is not measured here.
    "filterd-2w": lambda: Filterd(name="filterd-2w", workers=2),
    # Two workers on both CPUs: the load generator shares the second one, so
    # this is a lower bound of what two cores serve.
    "filterd-2w-2cpu": lambda: Filterd(name="filterd-2w-2cpu", workers=2, cpus="0,1"),
}


def make_target(name: str) -> Target:
    try:
        return TARGETS[name]()
    except KeyError:
        raise TargetError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None
