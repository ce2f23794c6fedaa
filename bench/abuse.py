"""Abuse from one source, measured (``bench/abuse``): amplification, response
rate limiting, and TCP slots an attacker can hold.

Everything runs on loopback: a real ``filterd run`` (defaults, except that
the rate limit's loopback exemption is emptied, since here the "victim" is
a loopback address) in front of the test suite's authoritative peer
(``tests/peers/authoritative.py``), which serves one name with every record
type an ANY query would collect. Three figures:

1. **Amplification of ANY**: bytes of the answer over bytes of the query,
   for the upstream's full ANY answer (what filterd forwarded before RFC
   8482's minimal answer) and for filterd's answer now.
2. **Reflection under the response rate limit**: one source (the victim's
   address, as a spoofer would write it) floods identical queries for a
   large TXT answer for ``--seconds``; answers and bytes per second that
   reach it, with the limit off (``responses_per_second: 0``, as before)
   and with the defaults.
3. **TCP slots**: 1,000 connections that send nothing, from an address
   outside ``access.allow`` and from an allowed one; how many are still open
   a second later, and whether another allowed client gets an answer.

Bounded: every flood and wait has a count and a time limit; processes are
stopped by the PID they were started with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import dns.exception
import dns.message
import dns.query

from bench.sync import wait_ready
from bench.targets import FILTERD_BIN, LOOPBACK, free_port, spawn
from tests.peers.authoritative import FakeUpstream

NAME: Final = "big.example"
SERVER_CPU: Final = 0
DURATION_LIMIT: Final = 30.0


@dataclass(frozen=True, slots=True)
class Amplification:
    query_bytes: int
    upstream_answer_bytes: int
    filterd_answer_bytes: int

    @property
    def before(self) -> float:
        return self.upstream_answer_bytes / self.query_bytes

    @property
    def after(self) -> float:
        return self.filterd_answer_bytes / self.query_bytes


@dataclass(frozen=True, slots=True)
class Flood:
    limit: str
    seconds: float
    sent: int
    answers: int
    truncated: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True, slots=True)
class Slots:
    source: str
    opened: int
    open_after_1s: int
    other_client_answered: bool


@dataclass(frozen=True, slots=True)
class AbuseResult:
    amplification: dict[str, Any]
    floods: list[Flood]
    slots: list[Slots]


CONFIG: Final = """server: {{listen: ["{dns}"]}}
access: {{allow: ["127.0.0.1/32", "127.0.2.0/24"]}}
upstream: {{servers: ["{upstream}"]}}
lists: [{{name: local, path: "{list}", format: domains}}]
rate_limit: {{responses_per_second: {rate}, exempt: []}}
admin: {{listen: "{admin}"}}
state_dir: "{state}"
"""


class Node:
    """One ``filterd run`` for the measurement, stopped by its PID."""

    def __init__(self, work: Path, upstream: str, rate: float) -> None:
        self.port = free_port()
        self.admin = f"{LOOPBACK}:{free_port()}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "list.txt").write_text("blocked.example\n")
        config = work / "filterd.yaml"
        config.write_text(
            CONFIG.format(
                dns=f"{LOOPBACK}:{self.port}",
                upstream=upstream,
                list=work / "list.txt",
                rate=rate,
                admin=self.admin,
                state=work / "state",
            )
        )
        # The harness's own process handling: a session of its own, stopped
        # by its PID, pinned like every server of bench/run.
        self.process = spawn(
            "filterd",
            [str(FILTERD_BIN), "run", "-c", str(config)],
            SERVER_CPU,
            work / "filterd.log",
            work,
        )
        try:
            wait_ready(self.process, self.admin)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.stop()


def amplification(upstream: FakeUpstream, node: Node) -> Amplification:
    query = dns.message.make_query(NAME, "ANY", use_edns=0, payload=4096)
    wire = query.to_wire()
    direct = dns.query.tcp(query, LOOPBACK, port=int(upstream.endpoint.rsplit(":", 1)[1]))
    via = dns.query.udp(query, LOOPBACK, port=node.port, timeout=5)
    return Amplification(len(wire), len(direct.to_wire()), len(via.to_wire()))


def flood(node: Node, source: str, seconds: float, limit: str) -> Flood:
    """Identical queries for the large TXT answer from ``source``, as fast as
    one socket sends them, for ``seconds``; count what comes back."""
    query = dns.message.make_query(NAME, "TXT", use_edns=0, payload=1232).to_wire()
    sent = answers = truncated = bytes_out = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        started = time.monotonic()
        end = started + min(seconds, DURATION_LIMIT)
        while time.monotonic() < end:
            for _ in range(32):
                number = sent & 0xFFFF
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(number.to_bytes(2, "big") + query[2:], (LOOPBACK, node.port))
                    sent += 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    data = sock.recv(65535)
                    answers += 1
                    bytes_out += len(data)
                    truncated += bool(data[2] & 0x02)
        elapsed = time.monotonic() - started
    return Flood(limit, elapsed, sent, answers, truncated, sent * len(query), bytes_out)


def slots(node: Node, source: str, count: int = 1000) -> Slots:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(
                    (LOOPBACK, node.port), timeout=2, source_address=(source, 0)
                )
                opened.append(sock)
        time.sleep(1.0)
        still = 0
        for sock in opened:
            sock.setblocking(False)
            try:
                still += sock.recv(1) != b""
            except BlockingIOError:
                still += 1
            except OSError:
                pass
        other = dns.message.make_query("www.example.com", "A")
        try:
            answer = dns.query.tcp(other, LOOPBACK, port=node.port, timeout=3, source="127.0.2.1")
            answered = bool(answer.answer)
        except (OSError, dns.exception.DNSException):
            answered = False
        return Slots(source, len(opened), still, answered)
    finally:
        for sock in opened:
            sock.close()


def table(result: AbuseResult) -> str:
    a = result.amplification
    lines = [
        "| ANY for one name | query | answer | amplification |",
        "|---|---|---|---|",
        f"| upstream's full answer (forwarded before) | {a['query_bytes']} B "
        f"| {a['upstream_answer_bytes']} B | {a['before']:.1f}x |",
        f"| filterd now (RFC 8482 minimal) | {a['query_bytes']} B "
        f"| {a['filterd_answer_bytes']} B | {a['after']:.2f}x |",
        "",
        "| flood of identical TXT queries from one source | s | sent | answers/s "
        "| of them truncated | bytes in/s | bytes out/s | out/in |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in result.floods:
        lines.append(
            f"| rate limit {f.limit} | {f.seconds:.1f} | {f.sent:,} | {f.answers / f.seconds:,.0f} "
            f"| {f.truncated:,} | {f.bytes_in / f.seconds:,.0f} | {f.bytes_out / f.seconds:,.0f} "
            f"| {f.bytes_out / max(f.bytes_in, 1):.2f} |"
        )
    lines += [
        "",
        "| 1,000 idle TCP connections from | opened | still open after 1 s "
        "| another allowed client answered |",
        "|---|---|---|---|",
    ]
    for s in result.slots:
        lines.append(f"| {s.source} | {s.opened} | {s.open_after_1s} | {s.other_client_answered} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="amplification, rate limiting, TCP slots")
    parser.add_argument("--seconds", type=float, default=5.0, help="each flood (at most 30)")
    args = parser.parse_args()
    if not FILTERD_BIN.exists():
        print(f"bench: SKIPPED: {FILTERD_BIN} not installed")
        return 0
    work = Path(tempfile.mkdtemp(prefix="filterd-abuse-"))
    upstream = FakeUpstream()
    upstream.add_large_txt(NAME, min_bytes=800)  # an answer that fits 1,232 B
    for rtype, rdata in (("A", "192.0.2.1"), ("AAAA", "2001:db8::1"), ("MX", "10 mx.example.")):
        upstream.add(NAME, rtype, rdata)
    upstream.add("www.example.com", "A", "192.0.2.2")
    floods: list[Flood] = []
    with upstream:
        off = Node(work / "off", upstream.endpoint, 0)
        try:
            measured = amplification(upstream, off)
            floods.append(flood(off, "127.0.2.9", args.seconds, "off (as before)"))
        finally:
            off.stop()
        on = Node(work / "on", upstream.endpoint, 100)
        try:
            floods.append(flood(on, "127.0.2.9", args.seconds, "on (defaults)"))
            held = [slots(on, "127.0.9.9"), slots(on, "127.0.0.1")]
        finally:
            on.stop()
    amp = {**asdict(measured), "before": measured.before, "after": measured.after}
    result = AbuseResult(amp, floods, held)
    text = table(result)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"abuse-{stamp}.md").write_text(text + "\n")
    (out / f"abuse-{stamp}.json").write_text(json.dumps(asdict(result), indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
