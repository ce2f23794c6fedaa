"""End to end: a real filterd process between real clients and a real upstream.

One daemon serves every test in this module (starting one costs about a
second); each test queries names no other test uses, or only reads.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.conftest import UPSTREAM_ZONE, standard_config, write_lists
from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.add_zone_text(UPSTREAM_ZONE)
    server.add_large_txt("large.example.com")
    server.add("ttl.example.com", "A", "192.0.2.30", ttl=300)
    server.add("tc.example.com", "A", "192.0.2.31")
    server.behave("tc.example.com", udp_truncate=True)
    with server:
        yield server


@pytest.fixture(scope="module")
def daemon(
    module_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    directory: Path = tmp_path_factory.mktemp("resolving")
    write_lists(directory)
    with Daemon(directory, standard_config(module_upstream.endpoint)) as running:
        yield running


def ede(message: dns.message.Message) -> tuple[int, str]:
    (option,) = [o for o in message.options if isinstance(o, dns.edns.EDEOption)]
    return int(option.code), option.text or ""


# ------------------------------------------------------------------ allowed


@pytest.mark.parametrize(
    ("rdtype", "expected"),
    [
        ("A", "192.0.2.10"),
        ("AAAA", "2001:db8::10"),
        ("MX", "10 mail.example.com."),
        ("TXT", '"v=spf1 -all"'),
    ],
)
def test_allowed_names_resolve(daemon: Daemon, rdtype: str, expected: str) -> None:
    answer = daemon.query("www.example.com", rdtype)
    assert answer.rcode() == dns.rcode.NOERROR
    assert [str(rdata) for rdata in answer.answer[0]] == [expected]
    assert answer.flags & dns.flags.RA


def test_dig_sees_the_same_answer(daemon: Daemon) -> None:
    assert daemon.dig("www.example.com", "A", "+short").split() == ["192.0.2.10"]
    assert daemon.dig("www.example.com", "AAAA", "+short", "+tcp").split() == ["2001:db8::10"]


def test_large_answer_truncated_over_udp_complete_over_tcp(
    daemon: Daemon, module_upstream: FakeUpstream
) -> None:
    over_udp = daemon.query("large.example.com", "TXT")
    assert over_udp.flags & dns.flags.TC and not over_udp.answer
    over_tcp = daemon.query("large.example.com", "TXT", tcp=True)
    assert len(over_tcp.answer[0]) >= 30
    assert len(over_tcp.to_wire()) > 4096
    # The upstream truncated its UDP answer: filterd retried it over TCP.
    assert any(r.transport == "tcp" for r in module_upstream.queries_for("large.example.com"))


def test_truncated_upstream_answer_is_retried_over_tcp(
    daemon: Daemon, module_upstream: FakeUpstream
) -> None:
    answer = daemon.query("tc.example.com")
    assert [str(r) for r in answer.answer[0]] == ["192.0.2.31"]
    transports = [r.transport for r in module_upstream.queries_for("tc.example.com")]
    assert transports == ["udp", "tcp"]


def test_client_without_edns_gets_no_opt_and_512_limit(daemon: Daemon) -> None:
    answer = daemon.query("www.example.com", edns=False)
    assert answer.edns == -1 and answer.answer
    big = daemon.query("large.example.com", "TXT", edns=False)
    assert big.flags & dns.flags.TC and len(big.to_wire()) <= 512


def test_question_case_is_echoed(daemon: Daemon) -> None:
    answer = daemon.query("WwW.ExAmPlE.cOm")
    assert str(answer.question[0].name) == "WwW.ExAmPlE.cOm."
    assert str(answer.answer[0][0]) == "192.0.2.10"


# ---------------------------------------------------------------- blocking


@pytest.mark.parametrize(
    "name", ["gambling.example", "www.gambling.example", "a.b.gambling.example"]
)
def test_mandatory_block_and_subdomains(daemon: Daemon, name: str) -> None:
    answer = daemon.query(name)
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert answer.authority[0].rdtype == dns.rdatatype.SOA
    assert answer.authority[0].ttl == 5
    code, text = ede(answer)
    assert code == 16  # Censored: an authority's list
    assert text.startswith("list=national version=") and text.endswith("category=gambling")


def test_dig_shows_the_extended_error(daemon: Daemon) -> None:
    out = daemon.dig("www.gambling.example")
    assert "status: NXDOMAIN" in out
    assert "EDE: 16 (Censored)" in out and "list=national" in out


def test_kdig_sees_the_extended_error(daemon: Daemon) -> None:
    if shutil.which("kdig") is None:
        pytest.skip("kdig (knot-dnsutils) not installed")
    out = subprocess.run(
        [
            "kdig",
            f"@127.0.0.1:{daemon.port}",
            "+edns",
            "+timeout=5",
            "+retry=0",
            "adult.example",
            "A",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    assert "NOERROR" in out and "192.0.2.80" in out
    assert "EDE: 16 (Censored)" in out and "list=national" in out


def test_operator_list_blocks_with_ede_15(daemon: Daemon) -> None:
    answer = daemon.query("phishing.example.com")
    assert answer.rcode() == dns.rcode.NXDOMAIN
    code, text = ede(answer)
    assert code == 15 and "list=local" in text and "category=malware" in text


def test_allowlisted_subdomain_of_operator_block_resolves(daemon: Daemon) -> None:
    answer = daemon.query("login.phishing.example.com")
    assert answer.rcode() == dns.rcode.NOERROR
    assert str(answer.answer[0][0]) == "192.0.2.20"


def test_operator_allowlist_cannot_lift_a_mandatory_block(daemon: Daemon) -> None:
    answer = daemon.query("safe.gambling.example")
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert ede(answer)[0] == 16


def test_category_action_sinkhole(daemon: Daemon) -> None:
    answer = daemon.query("www.adult.example")
    assert answer.rcode() == dns.rcode.NOERROR
    assert [str(r) for r in answer.answer[0]] == ["192.0.2.80"]
    assert answer.answer[0].ttl == 5
    aaaa = daemon.query("www.adult.example", "AAAA")  # no IPv6 sinkhole: NODATA
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
    assert ede(aaaa)[0] == 16


def test_exact_and_below_scopes(daemon: Daemon) -> None:
    assert daemon.query("games.example").rcode() == dns.rcode.NXDOMAIN
    assert str(daemon.query("sub.games.example").answer[0][0]) == "192.0.2.23"
    assert str(daemon.query("wild.example").answer[0][0]) == "192.0.2.24"
    assert daemon.query("x.wild.example").rcode() == dns.rcode.NXDOMAIN


def test_cname_to_blocked_target_is_blocked(daemon: Daemon) -> None:
    answer = daemon.query("alias.example.com")
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert "list=local" in ede(answer)[1]
    # ... also when the answer comes from the cache.
    assert daemon.query("alias.example.com").rcode() == dns.rcode.NXDOMAIN


def test_bypass_canaries(daemon: Daemon) -> None:
    assert daemon.query("use-application-dns.net").rcode() == dns.rcode.NXDOMAIN
    ddr = daemon.query("_dns.resolver.arpa", "SVCB")
    assert ddr.rcode() == dns.rcode.NOERROR and not ddr.answer


def test_block_applies_to_every_type(daemon: Daemon) -> None:
    for rdtype in ("AAAA", "HTTPS", "MX", "TXT"):
        assert daemon.query("gambling.example", rdtype).rcode() == dns.rcode.NXDOMAIN


# ------------------------------------------------------------------- cache


def test_cache_hit_has_decremented_ttl(daemon: Daemon, module_upstream: FakeUpstream) -> None:
    first = daemon.query("ttl.example.com")
    assert first.answer[0].ttl == 300
    time.sleep(2.1)
    second = daemon.query("ttl.example.com")
    assert 296 <= second.answer[0].ttl <= 298
    assert len(module_upstream.queries_for("ttl.example.com")) == 1


# -------------------------------------------------------------- bad input


def raw_udp(daemon: Daemon, payload: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, ("127.0.0.1", daemon.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_malformed_packets_get_formerr_or_nothing(daemon: Daemon) -> None:
    good = dns.message.make_query("www.example.com", "A").to_wire()
    assert raw_udp(daemon, b"\x12\x34") is None  # shorter than a header: dropped
    response_bit = bytearray(good)
    response_bit[2] |= 0x80
    assert raw_udp(daemon, bytes(response_bit)) is None  # a response: never answered
    cut = raw_udp(daemon, good[:20])
    assert cut is not None and dns.message.from_wire(cut).rcode() == dns.rcode.FORMERR
    two_questions = bytearray(good)
    two_questions[5] = 2
    reply = raw_udp(daemon, bytes(two_questions))
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    update = bytearray(good)
    update[2] = 0x28  # opcode UPDATE
    reply = raw_udp(daemon, bytes(update))
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP
    # Still serving, and nothing went to the error log.
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    assert "Traceback" not in daemon.log and "ERROR" not in daemon.log


def test_edns_version_1_gets_badvers(daemon: Daemon) -> None:
    query = dns.message.make_query("www.example.com", "A", use_edns=1)
    answer = dns.query.udp(query, "127.0.0.1", port=daemon.port, timeout=5)
    assert answer.rcode() == dns.rcode.BADVERS and answer.edns == 0


def test_zone_transfer_and_chaos_class_are_refused(daemon: Daemon) -> None:
    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    answer = dns.query.udp(chaos, "127.0.0.1", port=daemon.port, timeout=5)
    assert answer.rcode() == dns.rcode.REFUSED
    axfr = dns.message.make_query("example.com", "AXFR")
    assert (
        dns.query.tcp(axfr, "127.0.0.1", port=daemon.port, timeout=5).rcode() == dns.rcode.REFUSED
    )


def test_client_outside_access_list_is_refused(daemon: Daemon) -> None:
    query = dns.message.make_query("www.example.com", "A", use_edns=0)
    answer = dns.query.udp(query, "127.0.0.1", port=daemon.port, timeout=5, source="127.0.0.9")
    assert answer.rcode() == dns.rcode.REFUSED and not answer.answer
    assert ede(answer)[0] == 18  # Prohibited


# --------------------------------------------------------------------- TCP


def test_tcp_pipelined_queries_on_one_connection(daemon: Daemon) -> None:
    names = ["www.example.com", "gambling.example", "login.phishing.example.com"]
    queries = [dns.message.make_query(n, "A") for n in names]
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(
            b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
        )
        replies = {}
        reader = sock.makefile("rb")
        for _ in queries:
            (length,) = struct.unpack("!H", reader.read(2))
            reply = dns.message.from_wire(reader.read(length))
            replies[reply.id] = reply
    by_name = {str(q.question[0].name): replies[q.id] for q in queries}
    assert by_name["www.example.com."].answer
    assert by_name["gambling.example."].rcode() == dns.rcode.NXDOMAIN
    assert by_name["login.phishing.example.com."].answer
