"""Max qps with a load generator that is not the limit: kxdpgun over a veth
pair between two network namespaces the harness creates.

Why: on this two-core machine dnsperf has one core, and against the faster
server it is itself the limit (the *client ceiling*, bench/README.md): a
closed loop then measures dnsperf as much as the server. kxdpgun (Knot DNS's
AF_XDP traffic generator) writes queries straight into the veth's queue and
reads answers from it with an XDP program, bypassing the client's socket
layer, so one core offers several times what dnsperf sends. It is open loop:
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
from typing import Final

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
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose harness is gone (killed
    before its cleanup ran): ``filterd-bench-PID-…`` with no process PID."""
    removed = []
    for name in _ip("netns", "list").split():
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _ip("netns", "delete", name)
            removed.append(name)
    return removed


def _mac(namespace: str, device: str) -> str:
    links = json.loads(_ip("-n", namespace, "-j", "link", "show", "dev", device))
    return str(links[0]["address"])


@dataclass(frozen=True, slots=True)
class Link:
    """The two namespaces and the veth between them."""

    server: str
    client: str
    server_device: str
    client_device: str

    @classmethod
    def create(cls) -> Link:
        pid = os.getpid()
        link = cls(
            server=f"{PREFIX}{pid}-server",
            client=f"{PREFIX}{pid}-client",
            server_device=f"fb{pid}s"[-15:],
            client_device=f"fb{pid}c"[-15:],
        )
        _ip("netns", "add", link.server)
        try:
            _ip("netns", "add", link.client)
            s, c = link.server, link.client
            _ip("link", "add", link.client_device, "netns", c,
                "type", "veth", "peer", "name", link.server_device, "netns", s)  # fmt: skip
            _ip("-n", s, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", link.server_device)
            _ip("-n", c, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", link.client_device)
            for ns, dev in ((s, link.server_device), (c, link.client_device), (s, "lo")):
                _ip("-n", ns, "link", "set", dev, "up")
            # Answers to kxdpgun's sources go to the client's MAC without ARP:
            # kxdpgun answers no ARP for the addresses it makes up.
            _ip("-n", s, "route", "add", SOURCES, "via", CLIENT_ADDRESS)
            mac = _mac(c, link.client_device)
            _ip("-n", s, "neigh", "replace", CLIENT_ADDRESS, "lladdr", mac,
                "dev", link.server_device, "nud", "permanent")  # fmt: skip
        except BaseException:
            link.close()
            raise
        return link

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
        for name in (self.client, self.server):
            if Path(f"/run/netns/{name}").exists():
                subprocess.run(["ip", "netns", "delete", name], capture_output=True,
                               timeout=30, check=False)  # fmt: skip

    def server_mac(self) -> str:
        return _mac(self.server, self.server_device)

    def client_mac(self) -> str:
        return _mac(self.client, self.client_device)


@contextlib.contextmanager
def server_namespace(wanted: bool, say: Callable[[str], None]) -> Iterator[Link | None]:
    """With ``wanted``, a fresh link with this process moved into its server
    namespace for the block, both namespaces deleted after it; else None."""
    if not wanted:
        yield None
        return
    for name in remove_stale():
        say(f"flood: deleted namespace {name}, left by a harness that was killed")
    link = Link.create()
    try:
        link.enter_server()
        say(
            f"flood: this harness now runs in namespace {link.server}; kxdpgun in "
            f"{link.client}, reaching {SERVER_ADDRESS} over a veth"
        )
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
    server_received: int
    """Datagrams the server namespace's UDP took in (/proc/net/snmp InDatagrams)."""
    server_dropped: int
    """Datagrams its sockets refused for want of buffer (RcvbufErrors)."""
    server_sent: int
    """Datagrams it sent (OutDatagrams): the answers, and any upstream queries."""
    server_core_busy: float
    server_core_steal: float

    @property
    def answered_share(self) -> float:
        return self.answered / self.sent if self.sent else 0.0

    @property
    def cpu_us_per_answer(self) -> float:
        """Server-core time per answer over the whole run (kxdpgun's start and
        stop, when the server idles, add no busy time)."""
        return 1e6 * self.server_core_busy * self.wall_s / self.answered if self.answered else 0.0

    @property
    def lost_after_server(self) -> int:
        """Answers the server sent that kxdpgun did not count: the client's
        share of the loss (near 0 when the client was not the limit)."""
        return max(0, self.server_sent - self.answered)


def udp_counters() -> dict[str, int]:
    """This namespace's UDP counters from /proc/net/snmp."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    for head, values in itertools.pairwise(lines):
        if head[0] == "Udp:" and values[0] == "Udp:" and not values[1].isalpha():
            return {k: int(v) for k, v in zip(head[1:], values[1:], strict=True)}
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
        "-L", link.client_mac(), "-R", link.server_mac(),
        "-p", str(port), "-i", str(queries), SERVER_ADDRESS,
    ]  # fmt: skip
    udp0, stat0, t0 = udp_counters(), cpu_times(), time.monotonic()
    done = subprocess.run(
        cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False,
        timeout=seconds + 120, preexec_fn=die_with_parent,
    )  # fmt: skip
    busy, steal = busy_since(stat0, server_cpu)
    udp1, wall = udp_counters(), time.monotonic() - t0
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
        server_received=udp1["InDatagrams"] - udp0["InDatagrams"],
        server_dropped=udp1["RcvbufErrors"] - udp0["RcvbufErrors"],
        server_sent=udp1["OutDatagrams"] - udp0["OutDatagrams"],
        server_core_busy=busy,
        server_core_steal=steal,
    )
