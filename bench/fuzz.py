"""Fuzz campaign (``bench/fuzz``): the packet path and the list parsers, bounded.

**Packets.** A real ``Pipeline`` (``build_pipeline``, the one the workers
run) over a real compiled index of small lists in every format, forwarding
cache misses to a real ``FakeUpstream`` on 127.0.0.1 (port 0): nothing
leaves loopback. It is fed DNS messages that start as valid queries built
with dnspython (names on and off the lists, many types and classes, flags,
opcodes, EDNS versions, sizes and options) and are then mutated: bit flips,
interesting bytes, truncation, junk, splices, header counts that lie, label
length games (zero, 63, 64, 0xff, names past 255 octets), compression
pointers (to themselves, forward, into the header, loops of two), EDNS games
(options with lying lengths, two OPT records, OPT rdlength lies, OPT with an
owner name) and structured random messages. Each packet goes through
``Pipeline.handle`` as UDP or TCP, from an allowed or a refused client
address. Checked for every packet:

- nothing raises (``handle``, and the event loop's callbacks: upstream I/O,
  the resume path);
- every answer, synchronous or later from upstream, parses with dnspython,
  has the query's ID and QR set, and a UDP answer fits the classic 512
  octets or the EDNS size the query asked for (RFC 6891 §7), never beyond
  ``server.max_udp_size``;
- every query that went upstream is answered exactly once within the
  upstream deadline (no lost client, no double answer).

**Lists.** ``filterd.formats.parse`` in every ``Format`` (and
``detect_format``) on mutated list text: the sample lists and snippets of
each format, mutated by lines (duplicated, dropped, swapped, tokens from
every format spliced in, long lines, CR, NUL, UTF-8 and broken UTF-8) and
by bytes. The parsers document that they raise on nothing: every line is
accepted, invalid or ignored. Checked: nothing raises, the counts are
non-negative, and every name produced is canonical (``normalise`` returns
it unchanged).

Why neither hypothesis nor atheris drives it: hypothesis costs about 0.4 ms
per example before the test body runs (measured here on ``st.binary``),
more than the pipeline spends on a packet, so a million packets would be
mostly hypothesis; atheris (3.0.0 installs on Python 3.11) runs a
synchronous libFuzzer loop that exits the process when it ends, while a
cache miss needs the event loop to run until the upstream answers. Instead
the generator is seeded (``--seed``) and deterministic: the same command
produces the same inputs, every failing input is written to ``--out``, and
a failure reproduces from its bytes alone. The hypothesis property tests
(``tests/property``) keep covering the decoder with shrinking; the suite also
runs this campaign at a small count (``tests/property/test_fuzz_campaign.py``).

Bounded: by the ``--packets`` and ``--lists`` counts and by ``--max-seconds``
per campaign; the final wait for forwarded queries is at most the upstream
deadline plus 2 s; a generated packet is at most 65,535 octets, a list text
256 KiB. Nothing is written but ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import struct
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype

from bench.runs import RESULTS, timestamp
from filterd.config import Config
from filterd.config.load import parse_config
from filterd.formats import Format, ParseOptions, detect_format, parse
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.model.rules import Scope
from filterd.pipeline.pipeline import Pipeline, build_pipeline
from filterd.pipeline.policy import Policy
from filterd.pipeline.tally import Counters
from filterd.wire.names import InvalidName, normalise
from tests.peers.authoritative import FakeUpstream

REPO: Final = Path(__file__).resolve().parents[1]
MAX_UDP_SIZE: Final = 1232
CLASSIC_UDP: Final = 512
BATCH: Final = 256
"""Packets handled before the harness lets forwarded queries finish."""
UPSTREAM_DEADLINE: Final = 1.0
DRAIN_MARGIN: Final = 2.0
MAX_PACKET: Final = 65535
MAX_LIST_INPUT: Final = 256 * 1024
KEPT_FAILURES: Final = 50
"""Failing inputs written to ``--out`` (all are counted)."""

ALLOWED_V4: Final = b"\x7f\x00\x00\x01"
ALLOWED_V6: Final = bytes(15) + b"\x01"
REFUSED_V4: Final = b"\xc6\x33\x64\x07"  # 198.51.100.7, outside access.allow

NATIVE_LIST: Final = """#filterd-list 1
gambling.example      block        gambling   decision-001
adult.example         block        adult      decision-002
games.example         block-exact  games      decision-003
wild.example          block-below  fraud      decision-004
okay.gambling.example allow        -          decision-005
"""
DOMAINS_LIST: Final = (
    "phishing.example.com\ntracker.example.net\n# comment\nxn--bcher-kva.example\n"
)
HOSTS_LIST: Final = "127.0.0.1 localhost\n0.0.0.0 ads.example.org\n0.0.0.0 a.example b.example\n"
ADBLOCK_LIST: Final = (
    "[Adblock Plus 2.0]\n! title\n||malware.example^\n||pop.example^$important\n"
    "@@||good.malware.example^\n##.banner\n"
)
RPZ_LIST: Final = """$TTL 300
@ SOA localhost. root.localhost. 1 3600 600 86400 300
@ NS localhost.
nx.rpz.example CNAME .
*.nx.rpz.example CNAME .
nodata.rpz.example CNAME *.
pass.nx.rpz.example CNAME rpz-passthru.
dropped.rpz.example CNAME rpz-drop.
tcp.rpz.example CNAME rpz-tcp-only.
local.rpz.example A 192.0.2.1
"""
ALLOW_LIST: Final = "safe.gambling.example\nlogin.phishing.example.com\n"

UPSTREAM_ZONE: Final = """
www.example.com.          300 IN A     192.0.2.10
www.example.com.          300 IN AAAA  2001:db8::10
www.example.com.          300 IN MX    10 mail.example.com.
www.example.com.          300 IN TXT   "v=spf1 -all"
login.phishing.example.com. 300 IN A   192.0.2.20
safe.gambling.example.    300 IN A     192.0.2.21
alias.example.com.        300 IN CNAME ads.example.org.
ads.example.org.          300 IN A     192.0.2.22
sub.games.example.        300 IN A     192.0.2.23
wild.example.             300 IN A     192.0.2.24
short.example.            5   IN A     192.0.2.25
"""

SEED_NAMES: Final = (
    "www.example.com",
    "alias.example.com",
    "login.phishing.example.com",
    "phishing.example.com",
    "x.y.phishing.example.com",
    "tracker.example.net",
    "gambling.example",
    "okay.gambling.example",
    "safe.gambling.example",
    "adult.example",
    "games.example",
    "sub.games.example",
    "wild.example",
    "deep.below.wild.example",
    "ads.example.org",
    "malware.example",
    "good.malware.example",
    "nx.rpz.example",
    "a.nx.rpz.example",
    "nodata.rpz.example",
    "pass.nx.rpz.example",
    "dropped.rpz.example",
    "tcp.rpz.example",
    "xn--bcher-kva.example",
    "large.example.com",
    "short.example",
    "use-application-dns.net",
    "_dns.resolver.arpa",
    "missing.example.org",
    "WwW.ExAmPlE.CoM",
    "under_score.example",
    "-dash.example",
    "a" * 63 + ".example",
    ".".join(["b" * 63] * 3) + "." + "c" * 61,
    "x",
    ".",
    "1.2.0.192.in-addr.arpa",
    *(
        f"{fault}.fault.example"
        for fault in ("servfail", "drop", "tc", "wrongid", "wrongq", "slow")
    ),
)
FAULTS: Final = {
    "servfail": {"servfail": True},
    "drop": {"drop": True},
    "tc": {"udp_truncate": True},
    "wrongid": {"wrong_id": True, "then_correct": True},
    "wrongq": {"wrong_question": True, "then_correct": True},
    "slow": {"delay": 0.3},
}
"""Upstream misbehaviour per name (``FakeUpstream.behave``): the failure paths
of the exchange (SERVFAIL, timeout, TCP retry, a reply to ignore, a slow
answer) are reached by packets too."""
SEED_TYPES: Final = (1, 28, 15, 16, 5, 6, 2, 12, 33, 64, 65, 255, 252, 251, 41, 0, 99, 65535)
SEED_CLASSES: Final = (1, 3, 4, 254, 255, 0, 2)


# ------------------------------------------------------------------ packets


def _seed_packets() -> list[bytes]:
    """Valid queries made with dnspython, the starting points for mutation."""
    rng = random.Random(0)
    packets: list[bytes] = []
    for index, name in enumerate(SEED_NAMES):
        for rdtype in SEED_TYPES:
            rdclass = 1 if rdtype % 3 else SEED_CLASSES[index % len(SEED_CLASSES)]
            edns: int | bool = [False, 0, 0, 1][(index + rdtype) % 4]
            options: list[dns.edns.Option] = []
            if edns is not False and rdtype % 2:
                options.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, rng.randbytes(8)))
            if edns is not False and rdtype % 5 == 0:
                options.append(dns.edns.ECSOption("192.0.2.0", 24))
            message = dns.message.make_query(
                dns.name.from_text(name),
                dns.rdatatype.RdataType.make(rdtype),
                dns.rdataclass.RdataClass.make(rdclass),
                use_edns=edns,
                want_dnssec=bool(index % 2),
                payload=[512, 1232, 4096, 65535, 0][index % 5],
                options=options,
            )
            message.id = rng.randrange(65536)
            if index % 3 == 0:
                message.flags |= dns.flags.CD
            if index % 11 == 0:
                message.flags &= ~dns.flags.RD
            if (index + rdtype) % 17 == 0:
                message.set_opcode(dns.opcode.Opcode(rng.choice((1, 2, 4, 5))))
            packets.append(message.to_wire())
    return packets


def _wire_name(rng: random.Random) -> bytes:
    """A question name with label-length games, or a compression pointer."""
    shape = rng.randrange(8)
    if shape == 0:
        return b"\xc0" + bytes([rng.choice((0, 2, 12, 13, 255))])  # pointer anywhere
    labels = []
    for _ in range(rng.randrange(1, 8 if shape != 1 else 130)):
        size = rng.choice((1, 3, 7, 63, 63, 64, 0x3F, 0x40, 0x7F, 0xBF))
        label = bytes(rng.choice(b"abcxyz019-_*.\x00\xff A") for _ in range(min(size, 70)))
        labels.append(bytes([size & 0xFF]) + label[: size & 0x3F])
    name = b"".join(labels)
    if shape == 2:
        return name + b"\xc0\x0c"  # back to the question itself: a loop
    if shape == 3:
        return name  # no terminating root label
    return name + b"\x00"


def _opt_record(rng: random.Random) -> bytes:
    options = b""
    for _ in range(rng.randrange(4)):
        code = rng.choice((3, 8, 10, 11, 12, 15, 0, 65001, 65535))
        data = rng.randbytes(rng.choice((0, 1, 2, 4, 8, 40)))
        length = len(data) if rng.random() < 0.7 else rng.randrange(65536)
        options += struct.pack("!HH", code, length) + data
    owner = b"\x00" if rng.random() < 0.9 else b"\x01a\x00"
    size = rng.choice((0, 1, 511, 512, 1232, 4096, 65535))
    ttl = rng.choice((0, 0x8000, 0x00010000, 0xFF000000, rng.randrange(1 << 32)))
    rdlength = len(options) if rng.random() < 0.8 else rng.randrange(65536)
    return owner + struct.pack("!HHIH", 41, size, ttl, rdlength) + options


def _structured(rng: random.Random) -> bytes:
    """A message built from parts, each part possibly wrong."""
    ident = rng.randrange(65536)
    flags = rng.choice((0x0100, 0x0000, 0x8100, 0x0110, 0x0900, 0x2100, 0x7800))
    if rng.random() < 0.2:
        flags = rng.randrange(65536)
    questions = [
        _wire_name(rng) + struct.pack("!HH", rng.choice(SEED_TYPES), rng.choice(SEED_CLASSES))
        for _ in range(rng.choice((0, 1, 1, 1, 2)))
    ]
    additional = [_opt_record(rng) for _ in range(rng.choice((0, 1, 1, 2)))]
    counts = [len(questions), 0, 0, len(additional)]
    if rng.random() < 0.3:
        counts[rng.randrange(4)] = rng.choice((0, 1, 2, 255, 65535))
    header = struct.pack("!HHHHHH", ident, flags, *counts)
    return header + b"".join(questions) + b"".join(additional)


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        kind = rng.randrange(12)
        if kind <= 2 and buf:  # bit flips
            for _ in range(rng.randrange(1, 9)):
                position = rng.randrange(len(buf))
                buf[position] ^= 1 << rng.randrange(8)
        elif kind == 3 and buf:  # interesting bytes
            position = rng.randrange(len(buf))
            buf[position] = rng.choice((0, 1, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF))
        elif kind == 4:  # truncation
            del buf[rng.randrange(len(buf) + 1) :]
        elif kind == 5:  # junk at the end
            buf += rng.randbytes(rng.randrange(1, 64))
        elif kind == 6 and len(buf) >= 12:  # header counts that lie
            which = rng.randrange(4)
            struct.pack_into("!H", buf, 4 + 2 * which, rng.choice((0, 1, 2, 3, 255, 65535)))
        elif kind == 7 and len(buf) > 13:  # compression pointer inside the question
            position = rng.randrange(12, len(buf) - 1)
            target = rng.choice((position, 0, 12, position + 2, rng.randrange(len(buf))))
            struct.pack_into("!H", buf, position, 0xC000 | (target & 0x3FFF))
        elif kind == 8 and len(buf) > 12:  # a label length game at the first label
            buf[12] = rng.choice((0, 1, 62, 63, 64, 0x80, 0xBF, 0xFF))
        elif kind == 9:  # an OPT record appended (counted or not)
            buf += _opt_record(rng)
            if len(buf) >= 12 and rng.random() < 0.8:
                struct.pack_into("!H", buf, 10, struct.unpack_from("!H", buf, 10)[0] + 1 & 0xFFFF)
        elif kind == 10:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(buf) + 1)
            buf = buf[:cut] + other[rng.randrange(len(other) + 1) :]
        elif kind == 11 and buf:  # insert or delete a few bytes
            position = rng.randrange(len(buf) + 1)
            if rng.random() < 0.5:
                buf[position:position] = rng.randbytes(rng.randrange(1, 8))
            else:
                del buf[position : position + rng.randrange(1, 8)]
    return bytes(buf[:MAX_PACKET])


def _fresh(rng: random.Random) -> bytes:
    label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(12))
    message = dns.message.make_query(
        f"f{label}.{rng.choice(SEED_NAMES[:24])}",
        dns.rdatatype.RdataType.make(rng.choice((1, 28, 16, 15, 65, 255))),
        use_edns=rng.choice((False, 0)),
        want_dnssec=rng.random() < 0.3,
        payload=rng.choice((512, 1232, 4096)),
    )
    message.id = rng.randrange(65536)
    return message.to_wire()


def packet_stream(seed: int, count: int) -> Iterator[bytes]:
    """``count`` packets, the same for the same seed."""
    rng = random.Random(seed)
    seeds = _seed_packets()
    for _ in range(count):
        draw = rng.random()
        if draw < 0.08:
            yield rng.choice(seeds)  # a valid query (cache hits, blocks, upstream)
        elif draw < 0.12:
            yield _fresh(rng)  # a valid query for a name not asked before: upstream
        elif draw < 0.60:
            yield _mutate(rng, rng.choice(seeds), seeds)
        elif draw < 0.85:
            packet = _structured(rng)
            yield _mutate(rng, packet, seeds) if rng.random() < 0.3 else packet
        elif draw < 0.97:
            yield rng.randbytes(rng.randrange(0, 600))
        else:
            yield rng.randbytes(rng.randrange(600, MAX_PACKET + 1))


@dataclass
class Tally:
    inputs: int = 0
    answered_now: int = 0
    answered_later: int = 0
    failures: int = 0
    rcodes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    kept: list[tuple[str, bytes]] = field(default_factory=list)

    def fail(self, reason: str, data: bytes) -> None:
        self.failures += 1
        self.kinds[reason.split(":", maxsplit=1)[0]] += 1
        if len(self.kept) < KEPT_FAILURES:
            self.kept.append((reason, data))


def answer_problem(query: bytes, answer: bytes, udp: bool) -> str | None:
    """Why ``answer`` is not an acceptable answer to ``query`` (None: it is)."""
    if answer[:2] != query[:2]:
        return "answer ID differs from the query's"
    if len(answer) < 12 or not answer[2] & 0x80:
        return "answer without QR"
    try:
        message = dns.message.from_wire(answer)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        return f"answer does not parse: {type(exc).__name__}: {exc}"
    if udp:
        limit = CLASSIC_UDP
        with contextlib.suppress(dns.exception.DNSException, ValueError):
            asked = dns.message.from_wire(query, question_only=True)
            if asked.edns >= 0:
                limit = max(CLASSIC_UDP, min(asked.payload, MAX_UDP_SIZE))
        if len(answer) > limit:
            return f"UDP answer of {len(answer)} octets over the limit {limit}"
    return None if message.id == int.from_bytes(query[:2], "big") else "answer ID mismatch"


class _Reply:
    """One waiting client: records the later answer, and how many were sent."""

    __slots__ = ("address", "harness", "query", "received", "sent", "udp")

    def __init__(
        self, harness: PacketHarness, query: bytes, udp: bool, received: float, address: bytes
    ) -> None:
        self.harness = harness
        self.query = query
        self.udp = udp
        self.received = received
        self.address = address
        self.sent = 0

    def send(self, answer: bytes) -> None:
        self.sent += 1
        self.harness.later(self, answer)


class PacketHarness:
    """A real pipeline, a real index, a real upstream on loopback."""

    def __init__(self, directory: Path, upstream: FakeUpstream) -> None:
        for name, text in (
            ("national.txt", NATIVE_LIST),
            ("local.txt", DOMAINS_LIST),
            ("hosts.txt", HOSTS_LIST),
            ("adblock.txt", ADBLOCK_LIST),
            ("policy.rpz", RPZ_LIST),
            ("allow.txt", ALLOW_LIST),
        ):
            (directory / name).write_text(text)
        self.config: Config = parse_config(
            f"""
access: {{allow: ["127.0.0.0/8", "::1/128"]}}
server: {{max_udp_size: {MAX_UDP_SIZE}, max_inflight: 1000}}
upstream: {{servers: ["{upstream.endpoint}"], timeout: 0.4, attempts: 2,
            deadline: {UPSTREAM_DEADLINE}}}
blocking:
  sinkhole: {{ipv4: 192.0.2.80, ipv6: "2001:db8::80"}}
  category_actions: {{adult: sinkhole, games: nodata, fraud: refused}}
lists:
  - {{name: national, path: national.txt, format: native, mandatory: true}}
  - {{name: local, path: local.txt, format: domains, category: malware}}
  - {{name: hosts, path: hosts.txt, format: hosts}}
  - {{name: adblock, path: adblock.txt, format: adblock}}
  - {{name: policy, path: policy.rpz, format: rpz}}
  - {{name: exceptions, path: allow.txt, format: domains, kind: allow}}
state_dir: state
""",
            base=directory,
        )
        self.report = compile_lists(self.config)
        matcher, sources = open_matcher(self.report.index_path)
        self.policy = Policy(matcher, sources, self.config.blocking, MAX_UDP_SIZE, {})
        self.tally = Tally()
        self.waiting: deque[_Reply] = deque()
        self.pipeline: Pipeline | None = None

    def reply(self, client: object, received: float) -> _Reply:
        assert isinstance(client, tuple)
        query, udp, address = client
        waiting = _Reply(self, query, udp, received, address)
        self.waiting.append(waiting)
        return waiting

    def later(self, reply: _Reply, answer: bytes) -> None:
        self.tally.answered_later += 1
        if reply.sent > 1:
            self.tally.fail("answered twice", reply.query)
            return
        self.check(reply.query, answer, reply.udp)

    def check(self, query: bytes, answer: bytes, udp: bool) -> None:
        problem = answer_problem(query, answer, udp)
        if problem is not None:
            self.tally.fail(problem, query)
        else:
            self.tally.rcodes[str(answer[3] & 0x0F)] += 1

    def loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exception = context.get("exception")
        self.tally.fail(f"event loop: {context.get('message')}: {exception!r}", b"")

    async def run(self, packets: Iterator[bytes], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.loop_error)
        pipeline = build_pipeline(self.config, self.policy, loop, Counters())
        self.pipeline = pipeline
        tally = self.tally
        addresses = (ALLOWED_V4, ALLOWED_V4, ALLOWED_V4, ALLOWED_V6, REFUSED_V4)
        batch_index = 0
        exhausted = False
        while not exhausted and time.monotonic() < deadline:
            now = time.monotonic()
            for i in range(BATCH):
                data = next(packets, None)
                if data is None:
                    exhausted = True
                    break
                tally.inputs += 1
                udp = (i + batch_index) % 4 != 3
                address = addresses[(i * 7 + batch_index) % len(addresses)]
                try:
                    out = pipeline.handle(data, address, udp, self, (data, udp, address), now)
                except Exception as exc:  # every exception is a finding
                    tally.fail(f"handle raised: {type(exc).__name__}: {exc}", data)
                    continue
                if out is not None:
                    tally.answered_now += 1
                    self.check(data, out, udp)
            batch_index += 1
            # Upstream exchanges run on while the next batch is handled: one
            # pass of the loop for their I/O, then the overdue ones are checked.
            await asyncio.sleep(0)
            self.overdue(time.monotonic() - UPSTREAM_DEADLINE - DRAIN_MARGIN)
        await self.drain()

    def overdue(self, before: float) -> None:
        """Every forwarded query received before ``before`` must be answered by now."""
        waiting = self.waiting
        while waiting and (waiting[0].received < before or before == math.inf):
            reply = waiting.popleft()
            if reply.sent == 0:
                self.tally.fail("forwarded query never answered", reply.query)

    async def drain(self) -> None:
        """Let the last forwarded queries be answered (bounded), then check them all."""
        assert self.pipeline is not None
        for _ in range(int((UPSTREAM_DEADLINE + DRAIN_MARGIN) / 0.002)):
            if not self.pipeline.forwarder.inflight:
                break
            await asyncio.sleep(0.002)
        await asyncio.sleep(0)
        self.overdue(math.inf)


def run_packets(count: int, seed: int, max_seconds: float) -> tuple[Tally, float]:
    started = time.monotonic()
    upstream = FakeUpstream()
    upstream.add_zone_text(UPSTREAM_ZONE)
    upstream.add_large_txt("large.example.com")
    for fault, behaviour in FAULTS.items():
        upstream.add(f"{fault}.fault.example", "A", "192.0.2.99")
        upstream.behave(f"{fault}.fault.example", **behaviour)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="filterd-fuzz-") as scratch, upstream:
        harness = PacketHarness(Path(scratch), upstream)
        deadline = started + max_seconds
        stream = packet_stream(seed, count)
        # The upstream's query log would grow with every forwarded packet.
        while True:
            before = harness.tally.inputs
            asyncio.run(harness.run(_take(stream, 20_000), deadline))
            upstream.clear_log()
            if harness.tally.inputs - before < 20_000 or time.monotonic() >= deadline:
                break
    return harness.tally, time.monotonic() - started


def _take(stream: Iterator[bytes], count: int) -> Iterator[bytes]:
    for _ in range(count):
        item = next(stream, None)
        if item is None:
            return
        yield item


# -------------------------------------------------------------------- lists


LIST_SEEDS: Final = (NATIVE_LIST, DOMAINS_LIST, HOSTS_LIST, ADBLOCK_LIST, RPZ_LIST, ALLOW_LIST)
LIST_TOKENS: Final = (
    b"#filterd-list 1",
    b"block",
    b"block-exact",
    b"block-below",
    b"allow",
    b"allow-exact",
    b"-",
    b"0.0.0.0",
    b"::",
    b"127.0.0.1",
    b"fe80::1%lo",
    b"||",
    b"^",
    b"$important",
    b"$third-party",
    b"@@",
    b"##",
    b"#@#",
    b"!",
    b"$TTL",
    b"$ORIGIN",
    b"$INCLUDE",
    b"@",
    b"*.",
    b"CNAME",
    b"SOA",
    b"NS",
    b"A",
    b"rpz-passthru.",
    b"rpz-drop.",
    b"rpz-tcp-only.",
    b"rpz-nsdname",
    b"rpz-ip",
    b".",
    b"*",
    b"(",
    b")",
    b";",
    b"\\",
    b'"',
    b"\t",
    b"\r",
    b"\x00",
    b"\xff\xfe",
    "bücher.example".encode(),
    "例え.テスト".encode(),
    "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\u3002com".encode(),  # full-width
    b"xn--",
    b"xn--zz",
    b"a" * 64,
    b"b." * 130,
    b"192.0.2.1",
    b"1e100",
    b"example",
    b"ads.example.com",
)
FORMATS: Final = tuple(Format)


def list_stream(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    seeds = [text.encode() for text in LIST_SEEDS]
    samples = sorted((REPO / "blocklists").glob("*.txt"))
    seeds += [path.read_bytes()[:20_000] for path in samples]
    for _ in range(count):
        lines = rng.choice(seeds).split(b"\n")
        for _ in range(rng.randrange(1, 12)):
            kind = rng.randrange(9)
            position = rng.randrange(len(lines) + 1)
            if kind == 0 and lines:
                del lines[min(position, len(lines) - 1)]
            elif kind == 1 and lines:
                lines.insert(position, rng.choice(lines))
            elif kind == 2:
                tokens = [rng.choice(LIST_TOKENS) for _ in range(rng.randrange(1, 6))]
                lines.insert(position, rng.choice((b" ", b"\t", b"")).join(tokens))
            elif kind == 3 and lines:
                line = lines[min(position, len(lines) - 1)]
                cut = rng.randrange(len(line) + 1)
                lines[min(position, len(lines) - 1)] = (
                    line[:cut] + rng.choice(LIST_TOKENS) + line[cut:]
                )
            elif kind == 4 and lines:
                edited = bytearray(lines[min(position, len(lines) - 1)])
                for _ in range(rng.randrange(1, 4)):
                    if edited:
                        edited[rng.randrange(len(edited))] = rng.randrange(256)
                lines[min(position, len(lines) - 1)] = bytes(edited)
            elif kind == 5:
                lines.insert(position, rng.randbytes(rng.randrange(1, 200)))
            elif kind == 6:
                lines.insert(position, rng.choice(LIST_TOKENS) * rng.randrange(1, 3000))
            elif kind == 7 and len(lines) > 1:
                i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            elif kind == 8:
                lines = [line.upper() if rng.random() < 0.5 else line for line in lines]
        separator = rng.choice((b"\n", b"\n", b"\r\n", b"\r"))
        yield separator.join(lines)[:MAX_LIST_INPUT]


def list_problem(data: bytes, fmt: Format, options: ParseOptions) -> str | None:
    parsed = parse(data, fmt, options)
    if min(parsed.accepted, parsed.invalid, parsed.ignored) < 0:
        return "negative count"
    for names in parsed.groups.values():
        for name in names:
            try:
                canonical = normalise(name)
            except InvalidName as exc:
                return f"{fmt}: produced an invalid name {name[:80]!r}: {exc}"
            if canonical != name:
                return f"{fmt}: produced a non-canonical name {name[:80]!r}"
    return None


def run_lists(count: int, seed: int, max_seconds: float) -> tuple[Tally, float]:
    started = time.monotonic()
    deadline = started + max_seconds
    tally = Tally()
    rng = random.Random(seed + 1)
    for data in list_stream(seed, count):
        if time.monotonic() >= deadline:
            break
        tally.inputs += 1
        options = ParseOptions(
            "fuzz",
            plain_scope=rng.choice((Scope.SUBTREE, Scope.EXACT)),
            allow_tld=rng.random() < 0.3,
            join_rpz_pairs=rng.random() < 0.5,
        )
        try:
            detect_format(data)
            for fmt in FORMATS:
                problem = list_problem(data, fmt, options)
                if problem is not None:
                    tally.fail(problem, data)
        except Exception as exc:  # the parsers document no exception
            tally.fail(f"parser raised: {type(exc).__name__}: {exc}", data)
    return tally, time.monotonic() - started


# ---------------------------------------------------------------------- main


def _save(out: Path, kind: str, tally: Tally) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for number, (reason, data) in enumerate(tally.kept):
        (out / f"{kind}-{number:03d}.bin").write_bytes(data)
        (out / f"{kind}-{number:03d}.txt").write_text(reason + "\n")


def campaign(
    packets: int, lists: int, seed: int, max_seconds: float, out: Path | None = None
) -> dict[str, Any]:
    packet_tally, packet_seconds = run_packets(packets, seed, max_seconds)
    list_tally, list_seconds = run_lists(lists, seed, max_seconds)
    if out is not None and (packet_tally.kept or list_tally.kept):
        _save(out, "packet", packet_tally)
        _save(out, "list", list_tally)
    return {
        "seed": seed,
        "packets": {
            "inputs": packet_tally.inputs,
            "answered_at_once": packet_tally.answered_now,
            "answered_from_upstream": packet_tally.answered_later,
            "failures": packet_tally.failures,
            "failure_kinds": dict(packet_tally.kinds),
            "rcodes": dict(sorted(packet_tally.rcodes.items(), key=lambda kv: int(kv[0]))),
            "seconds": round(packet_seconds, 1),
        },
        "lists": {
            "inputs": list_tally.inputs,
            "parses": list_tally.inputs * len(FORMATS),
            "failures": list_tally.failures,
            "failure_kinds": dict(list_tally.kinds),
            "seconds": round(list_seconds, 1),
        },
        "failure_examples": [reason for reason, _ in packet_tally.kept[:10] + list_tally.kept[:10]],
    }


def summary(figures: dict[str, Any]) -> list[str]:
    """The figures as the lines ``bench/fuzz`` prints."""
    p, li = figures["packets"], figures["lists"]
    lines = [
        f"packets: {p['inputs']:,} inputs, {p['failures']} failures, "
        f"{p['answered_at_once']:,} answered at once, "
        f"{p['answered_from_upstream']:,} answered from upstream, {p['seconds']} s",
        f"packets: answer rcodes {p['rcodes']}",
        f"lists:   {li['inputs']:,} inputs x {len(FORMATS)} formats = {li['parses']:,} "
        f"parses, {li['failures']} failures, {li['seconds']} s",
    ]
    return lines + [f"failure: {reason}" for reason in figures["failure_examples"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--lists", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="per campaign")
    parser.add_argument(
        "--out", type=Path, default=None, help="failing inputs (default: bench/results/fuzz-<UTC>/)"
    )
    args = parser.parse_args(argv)
    stamp = timestamp()
    out = args.out or RESULTS / f"fuzz-{stamp}"
    figures = campaign(args.packets, args.lists, args.seed, args.max_seconds, out)
    figures["command"] = "bench/fuzz " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = summary(figures)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fuzz-{stamp}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"fuzz-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"results: {RESULTS / f'fuzz-{stamp}.md'}")
    failed = figures["packets"]["failures"] or figures["lists"]["failures"]
    if failed:
        print(f"failing inputs: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
