"""The loopback DNS peers themselves work: FakeUpstream and a real Unbound.

Every test talks to the peers over real sockets with dnspython and is bounded
by short client timeouts; every peer is stopped by its fixture or `with` block.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.peers.authoritative import EDNS_PAYLOAD, WRONG_QUESTION_NAME, FakeUpstream
from tests.peers.ports import free_port, ipv6_loopback_available
from tests.peers.unbound import (
    UNBOUND_MISSING,
    UnboundPeer,
    UnboundStartError,
    UnboundUnavailable,
    rpz_nxdomain,
    unbound_available,
)

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 2.0
needs_unbound = pytest.mark.skipif(not unbound_available(), reason=UNBOUND_MISSING)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A running FakeUpstream; records and behaviours are added by each test."""
    with FakeUpstream() as peer:
        yield peer


def udp(
    peer: FakeUpstream | UnboundPeer,
    name: str,
    rdtype: str = "A",
    *,
    timeout: float = TIMEOUT,
    use_edns: int | bool | None = None,
    want_dnssec: bool = False,
    payload: int | None = None,
) -> dns.message.Message:
    """One UDP exchange with a peer, on a fresh socket."""
    query = dns.message.make_query(
        name, rdtype, use_edns=use_edns, want_dnssec=want_dnssec, payload=payload
    )
    return dns.query.udp(query, peer.address, port=peer.port, timeout=timeout)


def tcp(peer: FakeUpstream | UnboundPeer, name: str, rdtype: str = "A") -> dns.message.Message:
    """One TCP exchange with a peer, on its own connection."""
    query = dns.message.make_query(name, rdtype)
    return dns.query.tcp(query, peer.address, port=peer.port, timeout=TIMEOUT)


def texts(message: dns.message.Message) -> list[str]:
    """The answer section's rdata as presentation text."""
    return [rdata.to_text() for rrset in message.answer for rdata in rrset]


def soa_minimum(message: dns.message.Message) -> int:
    """MINIMUM of the single SOA in the authority section (fails if absent)."""
    (rrset,) = message.authority
    assert rrset.rdtype == dns.rdatatype.SOA
    return int(rrset[0].minimum)


# --------------------------------------------------------------- FakeUpstream


def test_answers_each_type_with_authoritative_flags(upstream: FakeUpstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1", ttl=300)
    upstream.add("www.example.com", "AAAA", "2001:db8::1")
    upstream.add("example.com", "MX", "10 mail.example.com.")
    upstream.add("example.com", "TXT", '"v=spf1 -all"')
    upstream.add("svc.example.com", "HTTPS", "1 . alpn=h2")
    upstream.add("alias.example.com", "CNAME", "www.example.com.")

    response = udp(upstream, "WwW.ExAmple.COM")
    assert response.question[0].name.to_text() == "WwW.ExAmple.COM."  # case kept
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD and not response.flags & dns.flags.RA
    assert texts(response) == ["192.0.2.1"] and response.answer[0].ttl == 300
    assert texts(udp(upstream, "www.example.com", "AAAA")) == ["2001:db8::1"]
    assert texts(udp(upstream, "example.com", "MX")) == ["10 mail.example.com."]
    assert texts(udp(upstream, "example.com", "TXT")) == ['"v=spf1 -all"']
    assert texts(udp(upstream, "svc.example.com", "HTTPS")) == ['1 . alpn="h2"']
    assert texts(udp(upstream, "alias.example.com")) == ["www.example.com.", "192.0.2.1"]

    no_rd = dns.message.make_query("www.example.com", "A")
    no_rd.flags &= ~dns.flags.RD
    reply = dns.query.udp(no_rd, upstream.address, port=upstream.port, timeout=TIMEOUT)
    assert not reply.flags & dns.flags.RD


def test_nxdomain_and_nodata_carry_an_soa(upstream: FakeUpstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    upstream.add("deep.a.example.com", "A", "192.0.2.2")

    missing = udp(upstream, "nope.example.com")
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer
    assert soa_minimum(missing) == 60 and missing.authority[0].ttl == 60

    nodata = udp(upstream, "www.example.com", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert soa_minimum(nodata) == 60

    empty_non_terminal = udp(upstream, "a.example.com")
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR and not empty_non_terminal.answer

    upstream.add_zone_text(
        "$ORIGIN example.org.\n@ 900 IN SOA ns hostmaster 7 3600 600 86400 30\nwww A 192.0.2.3\n"
    )
    zone_nx = udp(upstream, "nope.example.org")
    assert zone_nx.rcode() == dns.rcode.NXDOMAIN
    assert zone_nx.authority[0].name.to_text() == "example.org." and soa_minimum(zone_nx) == 30
    assert texts(udp(upstream, "www.example.org")) == ["192.0.2.3"]


def test_negative_ttl_is_configurable() -> None:
    with FakeUpstream(negative_ttl=5) as peer:
        response = udp(peer, "nope.example.com")
        assert response.rcode() == dns.rcode.NXDOMAIN
        assert soa_minimum(response) == 5 and response.authority[0].ttl == 5


def test_udp_truncate_then_tcp_gets_the_full_answer(upstream: FakeUpstream) -> None:
    upstream.add("tc.example.com", "A", "192.0.2.7").behave("tc.example.com", udp_truncate=True)
    over_udp = udp(upstream, "tc.example.com")
    assert over_udp.flags & dns.flags.TC and not over_udp.answer
    over_tcp = tcp(upstream, "tc.example.com")
    assert not over_tcp.flags & dns.flags.TC and texts(over_tcp) == ["192.0.2.7"]
    assert (upstream.queries_udp, upstream.queries_tcp) == (1, 1)


def test_large_txt_truncates_over_udp_and_arrives_whole_over_one_tcp_connection(
    upstream: FakeUpstream,
) -> None:
    upstream.add_large_txt("big.example.com").add("www.example.com", "A", "192.0.2.1")
    over_udp = udp(upstream, "big.example.com", "TXT", use_edns=0, payload=4096)
    assert over_udp.flags & dns.flags.TC and not over_udp.answer
    assert over_udp.payload == EDNS_PAYLOAD

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((upstream.address, upstream.port))
        for name, rdtype in [("big.example.com", "TXT"), ("www.example.com", "A")] * 2:
            query = dns.message.make_query(name, rdtype)
            response = dns.query.tcp(
                query, upstream.address, port=upstream.port, timeout=TIMEOUT, sock=sock
            )
            assert response.id == query.id and not response.flags & dns.flags.TC
            if rdtype == "TXT":
                assert len(response.to_wire()) > 4096 and len(texts(response)) > 20
            else:
                assert texts(response) == ["192.0.2.1"]
    tcp_log = [record for record in upstream.log if record.transport == "tcp"]
    assert len(tcp_log) == 4 and len({record.source_port for record in tcp_log}) == 1


def test_delay_answers_late_and_drop_never_answers(upstream: FakeUpstream) -> None:
    upstream.add("slow.example.com", "A", "192.0.2.8").behave("slow.example.com", delay=1.0)
    with pytest.raises(dns.exception.Timeout):
        udp(upstream, "slow.example.com", timeout=0.2)
    assert texts(udp(upstream, "slow.example.com", timeout=5.0)) == ["192.0.2.8"]

    upstream.add("gone.example.com", "A", "192.0.2.9").behave("gone.example.com", drop=True)
    with pytest.raises(dns.exception.Timeout):
        udp(upstream, "gone.example.com", timeout=0.3)
    with pytest.raises(dns.exception.Timeout):
        tcp_query = dns.message.make_query("gone.example.com", "A")
        dns.query.tcp(tcp_query, upstream.address, port=upstream.port, timeout=0.3)
    assert len(upstream.queries_for("GONE.example.com")) == 2


def test_servfail_refused_and_limited_times(upstream: FakeUpstream) -> None:
    upstream.add("a.example.com", "A", "192.0.2.1").add("b.example.com", "A", "192.0.2.2")
    upstream.behave("a.example.com", servfail=True, times=1).behave("B.EXAMPLE.com", refused=True)
    assert udp(upstream, "a.example.com").rcode() == dns.rcode.SERVFAIL
    assert texts(udp(upstream, "a.example.com")) == ["192.0.2.1"]  # times=1 used up
    refused = udp(upstream, "b.example.com")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    upstream.behave("b.example.com")  # no arguments: back to normal
    assert texts(udp(upstream, "b.example.com")) == ["192.0.2.2"]
    upstream.behave("*", servfail=True)
    assert tcp(upstream, "b.example.com").rcode() == dns.rcode.SERVFAIL


def raw_udp_replies(peer: FakeUpstream, query: dns.message.Message, count: int) -> list[bytes]:
    """Send one query from a plain socket and collect up to `count` raw replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(query.to_wire(), (peer.address, peer.port))
        replies: list[bytes] = []
        try:
            while len(replies) < count:
                replies.append(sock.recv(65535))
        except TimeoutError:
            pass
        return replies


def test_wrong_id_then_correct_reply(upstream: FakeUpstream) -> None:
    upstream.add("id.example.com", "A", "192.0.2.1")
    upstream.behave("id.example.com", wrong_id=True, then_correct=True)
    query = dns.message.make_query("id.example.com", "A")
    first, second = (dns.message.from_wire(w) for w in raw_udp_replies(upstream, query, 2))
    assert first.id != query.id and second.id == query.id
    assert texts(second) == ["192.0.2.1"]

    upstream.behave("id.example.com", wrong_id=True)  # without then_correct: nothing valid
    only = raw_udp_replies(upstream, dns.message.make_query("id.example.com", "A"), 2)
    assert len(only) == 1


def test_wrong_question_reply_keeps_the_id(upstream: FakeUpstream) -> None:
    upstream.add("q.example.com", "A", "192.0.2.1").behave("q.example.com", wrong_question=True)
    query = dns.message.make_query("q.example.com", "A")
    (wire,) = raw_udp_replies(upstream, query, 2)
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id
    assert reply.question[0].name.to_text() == WRONG_QUESTION_NAME
    assert not query.is_response(reply)  # what a careful resolver must notice


def test_edns_is_echoed_only_when_asked(upstream: FakeUpstream) -> None:
    upstream.add("www.example.com", "A", "192.0.2.1")
    with_do = udp(upstream, "www.example.com", use_edns=0, want_dnssec=True, payload=4096)
    assert with_do.edns == 0 and with_do.payload == EDNS_PAYLOAD
    assert with_do.ednsflags & dns.flags.DO
    plain_edns = udp(upstream, "www.example.com", use_edns=0, payload=1400)
    assert plain_edns.edns == 0 and not plain_edns.ednsflags & dns.flags.DO
    without = udp(upstream, "www.example.com", use_edns=False)
    assert without.edns == -1
    assert [(r.had_edns, r.do_bit) for r in upstream.log] == [
        (True, True),
        (True, False),
        (False, False),
    ]


def test_query_log_records_transport_name_type_port_and_id(upstream: FakeUpstream) -> None:
    ids_and_ports: list[tuple[int, int]] = []
    for name in ["One.example.com", "two.example.com"]:
        query = dns.message.make_query(name, "AAAA")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            ids_and_ports.append((query.id, int(sock.getsockname()[1])))
            dns.query.udp(query, upstream.address, port=upstream.port, timeout=TIMEOUT, sock=sock)
    tcp(upstream, "three.example.com", "MX")
    assert (upstream.queries_udp, upstream.queries_tcp) == (2, 1)
    log = upstream.log
    assert [(r.transport, r.qname, r.qtype) for r in log] == [
        ("udp", "One.example.com.", "AAAA"),
        ("udp", "two.example.com.", "AAAA"),
        ("tcp", "three.example.com.", "MX"),
    ]
    assert [(r.query_id, r.source_port) for r in log[:2]] == ids_and_ports
    upstream.clear_log()
    assert upstream.log == [] and upstream.wait_for_queries(0, timeout=0.1)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_serves_on_ipv6_loopback() -> None:
    with FakeUpstream(host="::1") as peer:
        peer.add("www.example.com", "AAAA", "2001:db8::5")
        assert peer.endpoint == f"[::1]:{peer.port}"
        assert texts(udp(peer, "www.example.com", "AAAA")) == ["2001:db8::5"]
        assert texts(tcp(peer, "www.example.com", "AAAA")) == ["2001:db8::5"]


def test_stop_releases_the_port_and_the_thread() -> None:
    threads_before = threading.active_count()
    for _ in range(5):
        peer = FakeUpstream().add("www.example.com", "A", "192.0.2.1").start()
        # An open TCP connection and an in-flight delayed query must not block stop().
        peer.behave("slow.example.com", delay=30)
        idle = socket.create_connection((peer.address, peer.port), timeout=TIMEOUT)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(
                dns.message.make_query("slow.example.com", "A").to_wire(), (peer.address, peer.port)
            )
        assert peer.wait_for_queries(1, timeout=TIMEOUT)
        port = peer.port
        peer.stop()
        idle.close()
        assert not peer.running
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rebind:
            rebind.bind(("127.0.0.1", port))  # the UDP socket really is closed
    assert threading.active_count() == threads_before


def test_free_port_is_free_for_udp_and_tcp() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", port))


# -------------------------------------------------------------------- Unbound

LOCAL_DATA = [
    "www.example.com. 300 IN A 192.0.2.1",
    "www.example.com. 300 IN AAAA 2001:db8::1",
    "ads.example.com. 300 IN A 192.0.2.66",
    'txt.example.com. 300 IN TXT "hello world"',
]


@needs_unbound
def test_unbound_serves_local_data_and_refuses_the_rest() -> None:
    with UnboundPeer(local_data=LOCAL_DATA, zones=["example.com"]) as unbound:
        assert unbound.data_mode == "local-zone" and unbound.pid is not None
        assert texts(udp(unbound, "www.example.com")) == ["192.0.2.1"]
        assert texts(tcp(unbound, "www.example.com", "AAAA")) == ["2001:db8::1"]
        assert texts(udp(unbound, "txt.example.com", "TXT")) == ['"hello world"']
        missing = udp(unbound, "nope.example.com")
        assert missing.rcode() == dns.rcode.NXDOMAIN and soa_minimum(missing) == 60
        nodata = udp(unbound, "txt.example.com", "A")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        assert udp(unbound, "www.example.net").rcode() == dns.rcode.REFUSED


@needs_unbound
def test_unbound_rpz_blocks_one_name_while_another_resolves() -> None:
    rpz = rpz_nxdomain(["ads.example.com"])
    with UnboundPeer(LOCAL_DATA, ["example.com"], rpz_zone_text=rpz) as unbound:
        assert unbound.data_mode == "auth-zone"
        assert texts(udp(unbound, "www.example.com")) == ["192.0.2.1"]
        for blocked in ["ads.example.com", "cdn.ads.example.com"]:
            response = udp(unbound, blocked)
            assert response.rcode() == dns.rcode.NXDOMAIN and not response.answer
        assert udp(unbound, "nope.example.com").rcode() == dns.rcode.NXDOMAIN
        assert udp(unbound, "www.example.net").rcode() == dns.rcode.REFUSED


@needs_unbound
def test_unbound_forwards_to_fake_upstream_and_rpz_stops_blocked_names_first(
    upstream: FakeUpstream,
) -> None:
    upstream.add("www.example.net", "A", "192.0.2.9").add("ads.example.net", "A", "192.0.2.10")
    rpz = rpz_nxdomain(["ads.example.net"])
    with UnboundPeer(rpz_zone_text=rpz, forward_to=upstream.endpoint) as unbound:
        assert texts(udp(unbound, "www.example.net")) == ["192.0.2.9"]
        assert udp(unbound, "ads.example.net").rcode() == dns.rcode.NXDOMAIN
    assert [r.qname.lower() for r in upstream.log] == ["www.example.net."]
    assert upstream.log[0].had_edns


@needs_unbound
def test_unbound_stop_reaps_exactly_its_process() -> None:
    unbound = UnboundPeer(LOCAL_DATA, ["example.com"]).start()
    pid = unbound.pid
    assert pid is not None
    unbound.stop()
    assert unbound.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    unbound.stop()  # idempotent


def test_unbound_rejects_data_outside_its_zones() -> None:
    with pytest.raises(ValueError, match="outside every zone"):
        UnboundPeer(["www.example.org. 300 IN A 192.0.2.1"], zones=["example.com"])


@needs_unbound
def test_unbound_start_failure_reports_its_log() -> None:
    peer = UnboundPeer(extra_server_config=["no-such-option: yes"], startup_timeout=5.0)
    with pytest.raises(UnboundStartError, match="no-such-option"):
        peer.start()
    assert peer.pid is None


def test_missing_unbound_binary_is_a_clear_error() -> None:
    peer = UnboundPeer(binary=Path("/nonexistent/unbound"))
    with pytest.raises(UnboundUnavailable, match="not installed"):
        peer.start()
