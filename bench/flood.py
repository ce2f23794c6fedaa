"""Max qps with a load generator that is not the limit: kxdpgun over a veth
pair between two network namespaces the harness creates.

Why: on this two-core machine dnsperf has one core, and against the faster
server it is itself the limit (the *client ceiling*, bench/README.md): a
closed loop then measures dnsperf as much as the server. kxdpgun (Knot DNS's
AF_XDP traffic generator) writes queries straight into the veth's queue and
reads answers from it with an XDP program, bypassing the client's socket
layer, so one core offers at least twice what dnsperf sends. It is open loop:
it offers a fixed rate and counts the answers that come back, so a server's
maximum is the most it answers across a ladder of offered rates.

The topology, created per run and deleted after it (nothing leaves the two
namespaces; the harness itself runs inside the server one, so NSD, the
targets and dnsperf keep their loopback there)::

    client namespace                         server namespace (the harness)
    kxdpgun, CPU 1 ── veth 10.53.0.1 ═══ veth 10.53.0.2 ── targets, CPU 0
    sources 10.53.1.0/24                     route 10.53.1.0/24 via 10.53.0.1

Each answer a server sends also costs the server's CPU the veth's receive
side (kxdpgun's XDP program runs where the packet is sent, as loopback
delivers into dnsperf's socket there): the same per answer for every server.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.measure import busy_since, cpu_times
from bench.targets import TargetError, die_with_parent

SERVER_ADDRESS: Final = "10.53.0.2"
CLIENT_ADDRESS: Final = "10.53.0.1"
SOURCES: Final = "10.53.1.0/24"
"""kxdpgun's source addresses (it varies the last octet)."""
CLIENTS: Final = "10.53.0.0/16"
"""What a target must allow (and, for filterd, exempt from rate limiting)."""
CLONE_NEWNET: Final = 0x40000000
PREFIX: Final = "filterd-bench-"

_TOTAL: Final = re.compile(r"total (queries|replies):\s+(\d+) \((\d+) pps\)")
_RCODE: Final = re.compile(r"responded ([A-Z]+):\s+(\d+)")


def unavailable() -> str | None:
    """None when a flood can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, XDP)"
    missing = [tool for tool in ("kxdpgun", "ip") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install knot-dnsutils iproute2)"
    return None


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise TargetError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose harness is gone (killed
    before its cleanup ran): ``filterd-bench-PID-…`` with no process PID, or
    with this process's PID, which has made none yet (a PID reused)."""
    removed = []
    for name in _ip("netns", "list").split():
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            _ip("netns", "delete", name)
            removed.append(name)
    return removed


def _link_stats(device: str, namespace: str | None = None) -> dict[str, Any]:
    """``ip -s -j link show`` of one device: its address and its counters."""
    where = ("-n", namespace) if namespace else ()
    links = json.loads(_ip(*where, "-s", "-j", "link", "show", "dev", device))
    return dict(links[0])


def _delete(*namespaces: str) -> None:
    for name in namespaces:
        if Path(f"/run/netns/{name}").exists():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True,
                           timeout=30, check=False)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Link:
    """The two namespaces and the veth between them."""

    server: str
    client: str
    server_device: str
    client_device: str
    server_mac: str
    client_mac: str

    @classmethod
    def create(cls) -> Link:
        pid = os.getpid()
        s, c = f"{PREFIX}{pid}-server", f"{PREFIX}{pid}-client"
        s_dev, c_dev = f"fb{pid}s"[-15:], f"fb{pid}c"[-15:]
        try:
            _ip("netns", "add", s)
            _ip("netns", "add", c)
            _ip("link", "add", c_dev, "netns", c, "type", "veth", "peer", "name", s_dev,
                "netns", s)  # fmt: skip
            _ip("-n", s, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", s_dev)
            _ip("-n", c, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", c_dev)
            for ns, dev in ((s, s_dev), (c, c_dev), (s, "lo")):
                _ip("-n", ns, "link", "set", dev, "up")
            client_mac = str(_link_stats(c_dev, c)["address"])
            # Answers to kxdpgun's sources go to the client's MAC without ARP:
            # kxdpgun answers no ARP for the addresses it makes up.
            _ip("-n", s, "route", "add", SOURCES, "via", CLIENT_ADDRESS)
            _ip("-n", s, "neigh", "replace", CLIENT_ADDRESS, "lladdr", client_mac,
                "dev", s_dev, "nud", "permanent")  # fmt: skip
            server_mac = str(_link_stats(s_dev, s)["address"])
        except BaseException:
            _delete(c, s)
            raise
        return cls(s, c, s_dev, c_dev, server_mac, client_mac)

    def enter_server(self) -> None:
        """Move this process into the server namespace (``setns(2)``).

        Only the calling thread moves; the harness runs no threads, and every
        process and socket it makes from now on is in the namespace."""
        fd = os.open(f"/run/netns/{self.server}", os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise TargetError(f"setns {self.server}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    def close(self) -> None:
        """Delete both namespaces (the veth goes with them)."""
        _delete(self.client, self.server)

    def server_packets(self) -> tuple[int, int]:
        """(received, sent) packets of the veth's server side, read from
        inside the server namespace: the flood's queries that arrived and
        the answers that left, and nothing else (the neighbour entry is
        permanent, so no ARP crosses it)."""
        stats = _link_stats(self.server_device)["stats64"]
        return int(stats["rx"]["packets"]), int(stats["tx"]["packets"])


@contextlib.contextmanager
def server_namespace(wanted: bool, say: Callable[[str], None]) -> Iterator[Link | None]:
    """With ``wanted``, a fresh link with this process moved into its server
    namespace for the block, both namespaces deleted after it; None when not
    wanted or when the link cannot be made here (said, and the run goes on)."""
    link: Link | None = None
    if wanted:
        try:
            for name in remove_stale():
                say(f"flood: deleted namespace {name}, left by a harness that was killed")
            link = Link.create()
            link.enter_server()
        except TargetError as exc:
            say(f"flood ladder SKIPPED: {exc}")
            if link:
                link.close()
            link = None
    if link is None:
        yield None
        return
    say(
        f"flood: this harness now runs in namespace {link.server}; kxdpgun in "
        f"{link.client}, reaching {SERVER_ADDRESS} over a veth"
    )
    try:
        yield link
    finally:
        link.close()


@dataclass(frozen=True, slots=True)
class Flood:
    """One kxdpgun run at an offered rate, and what the server side saw meanwhile."""

    offered: int
    sent: int
    sent_qps: float
    """Queries per second kxdpgun sent: the offered rate, unless the client fell short."""
    answered: int
    qps: float
    """Answers per second, as kxdpgun computes it over its sending time."""
    wall_s: float
    rcodes: dict[str, int]
    arrived: int
    """Queries the veth delivered to the server namespace."""
    refused: int
    """Datagrams the namespace's sockets refused for want of buffer
    (/proc/net/snmp RcvbufErrors): the server's share of the loss."""
    server_sent: int
    """Answers that left the server namespace over the veth."""
    server_core_busy: float
    server_core_steal: float

    @property
    def answered_share(self) -> float:
        """Answers per second over the offered rate: a step where kxdpgun
        fell short of it cannot count as served."""
        return self.qps / self.offered if self.offered else 0.0

    @property
    def cpu_us_per_answer(self) -> float:
        """The server core's busy time over the answers. The window is the
        whole kxdpgun run, its ~2 s of start and stop included, when the
        server idles and whatever else runs on the core counts (about 1 %)."""
        return 1e6 * self.server_core_busy * self.wall_s / self.answered if self.answered else 0.0

    @property
    def lost_before_server(self) -> int:
        """Queries kxdpgun sent that never reached the server namespace."""
        return max(0, self.sent - self.arrived)

    @property
    def lost_after_server(self) -> int:
        """Answers that left the server that kxdpgun did not count: the
        client's share of the loss (0 when the client was not the limit)."""
        return max(0, self.server_sent - self.answered)


def refused_datagrams() -> int:
    """RcvbufErrors of this namespace's UDP, from /proc/net/snmp."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    for head, values in itertools.pairwise(lines):
        if head[0] == "Udp:" and values[0] == "Udp:" and not values[1].isalpha():
            return int(dict(zip(head[1:], values[1:], strict=True))["RcvbufErrors"])
    raise TargetError("/proc/net/snmp has no Udp: counters")


def parse_kxdpgun(text: str) -> tuple[int, float, int, float, dict[str, int]]:
    """(sent, sent per second, answered, answered per second, rcodes) from
    kxdpgun 3.2's summary."""
    totals = {kind: (int(n), int(pps)) for kind, n, pps in _TOTAL.findall(text)}
    if "queries" not in totals or "replies" not in totals:
        raise TargetError(f"kxdpgun printed no summary:\n{text[-1500:]}")
    rcodes = {code: int(n) for code, n in _RCODE.findall(text)}
    (sent, sent_pps), (answered, answered_pps) = totals["queries"], totals["replies"]
    return sent, float(sent_pps), answered, float(answered_pps), rcodes


def flood(
    link: Link,
    port: int,
    queries: Path,
    *,
    rate: int,
    seconds: int,
    cpu: int,
    server_cpu: int,
    output: Path,
) -> Flood:
    """One bounded kxdpgun run (``-t seconds`` at ``-Q rate``) from the client
    namespace on ``cpu``, against ``port`` on the server side of the veth."""
    cmd = [
        "ip", "netns", "exec", link.client, "taskset", "-c", str(cpu),
        "kxdpgun", "-t", str(seconds), "-Q", str(rate), "-F", str(cpu),
        "-I", link.client_device, "-l", SOURCES,
        "-L", link.client_mac, "-R", link.server_mac,
        "-p", str(port), "-i", str(queries), SERVER_ADDRESS,
    ]  # fmt: skip
    (rx0, tx0), refused0 = link.server_packets(), refused_datagrams()
    stat0, t0 = cpu_times(), time.monotonic()
    done = subprocess.run(
        cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False,
        timeout=seconds + 120, preexec_fn=die_with_parent,
    )  # fmt: skip
    busy, steal = busy_since(stat0, server_cpu)
    wall = time.monotonic() - t0
    (rx1, tx1), refused1 = link.server_packets(), refused_datagrams()
    text = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    output.write_text(" ".join(cmd) + "\n" + text)
    if done.returncode != 0:
        raise TargetError(f"kxdpgun exited {done.returncode}:\n{text[-1500:]}")
    sent, sent_qps, answered, qps, rcodes = parse_kxdpgun(text)
    return Flood(
        offered=rate,
        sent=sent,
        sent_qps=sent_qps,
        answered=answered,
        qps=qps,
        wall_s=wall,
        rcodes=rcodes,
        arrived=rx1 - rx0,
        refused=refused1 - refused0,
        server_sent=tx1 - tx0,
        server_core_busy=busy,
        server_core_steal=steal,
    )
