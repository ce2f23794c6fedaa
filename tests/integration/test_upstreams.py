"""End to end: what filterd does when upstreams misbehave or die."""

from __future__ import annotations

import concurrent.futures
import time

import dns.edns
import dns.rcode

from filterd.upstream.sockets import MIN_CHOICE
from tests.integration.conftest import DaemonFactory, standard_config
from tests.peers.authoritative import FakeUpstream
from tests.peers.ports import free_port


def test_dead_upstream_gives_servfail_within_the_deadline(make_daemon: DaemonFactory) -> None:
    # Nothing listens on this port: every attempt fails (ICMP refusal or timeout).
    daemon = make_daemon(standard_config(f"127.0.0.1:{free_port()}")).start()
    started = time.monotonic()
    answer = daemon.query("www.example.com", timeout=10)
    elapsed = time.monotonic() - started
    assert answer.rcode() == dns.rcode.SERVFAIL
    assert elapsed < 1.5 + 1.0  # upstream.deadline plus slack: never a hung client
    (option,) = answer.options
    assert isinstance(option, dns.edns.EDEOption) and option.code == 22


def test_silent_upstream_gives_servfail_within_the_deadline(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    upstream.behave("*", drop=True)
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    started = time.monotonic()
    answer = daemon.query("www.example.com", timeout=10)
    assert answer.rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started < 1.5 + 1.0
    assert (
        daemon.metrics()[
            f'filterd_upstream_errors_total{{reason="timeout",upstream="{upstream.endpoint}"}}'
        ]
        >= 2
    )
    # SERVFAIL is never cached: once the upstream answers again, so does filterd.
    upstream.clear_behaviours()
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR


def test_failover_marks_the_dead_upstream_down(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    dead_port = free_port()
    config = standard_config(
        f"127.0.0.1:{dead_port}", upstream.endpoint, upstream=", down_after: 2, probe_interval: 60"
    )
    daemon = make_daemon(config).start()
    for i in range(4):
        upstream.add(f"n{i}.example.com", "A", "192.0.2.1")
        assert daemon.query(f"n{i}.example.com").rcode() == dns.rcode.NOERROR
    metrics = daemon.metrics()
    assert metrics[f'filterd_upstream_up{{upstream="127.0.0.1:{dead_port}"}}'] == 0
    assert metrics[f'filterd_upstream_up{{upstream="{upstream.endpoint}"}}'] == 1
    # Once down, the dead one is skipped: the next query goes straight to the live one.
    dead_errors = sum(
        v
        for k, v in metrics.items()
        if k.startswith("filterd_upstream_errors_total") and str(dead_port) in k
    )
    upstream.add("n9.example.com", "A", "192.0.2.1")
    assert daemon.query("n9.example.com").rcode() == dns.rcode.NOERROR
    after = daemon.metrics()
    assert (
        sum(
            v
            for k, v in after.items()
            if k.startswith("filterd_upstream_errors_total") and str(dead_port) in k
        )
        == dead_errors
    )


def test_spoofed_replies_are_ignored(make_daemon: DaemonFactory, upstream: FakeUpstream) -> None:
    upstream.add("spoof.example.com", "A", "192.0.2.40")
    upstream.behave("spoof.example.com", wrong_id=True, then_correct=True)
    upstream.add("spoof2.example.com", "A", "192.0.2.41")
    upstream.behave("spoof2.example.com", wrong_question=True, then_correct=True)
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    assert str(daemon.query("spoof.example.com").answer[0][0]) == "192.0.2.40"
    assert str(daemon.query("spoof2.example.com").answer[0][0]) == "192.0.2.41"
    key = f'filterd_upstream_errors_total{{reason="mismatch",upstream="{upstream.endpoint}"}}'
    assert daemon.metrics()[key] == 2


def test_random_source_port_and_id_per_upstream_query(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """Sockets are pooled (filterd.upstream.sockets), but even one query at a
    time draws its port among at least MIN_CHOICE sockets on random ports."""
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    for i in range(20):
        upstream.add(f"p{i}.example.com", "A", "192.0.2.1")
        assert daemon.query(f"p{i}.example.com").answer
    records = [r for r in upstream.log if r.qname.startswith("p")]
    assert len(records) == 20
    ports = [r.source_port for r in records]
    assert len(set(ports[:MIN_CHOICE])) == MIN_CHOICE  # the first ones open the pool
    assert len(set(ports)) >= MIN_CHOICE
    assert len({r.query_id for r in records}) >= 19  # 16-bit IDs: a repeat is possible, not likely
    assert all(r.had_edns for r in records)


def test_identical_questions_in_flight_are_coalesced(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    upstream.add("slow.example.com", "A", "192.0.2.50")
    upstream.behave("slow.example.com", delay=0.5)
    config = standard_config(upstream.endpoint).replace("timeout: 0.5", "timeout: 1.0")
    daemon = make_daemon(config).start()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: daemon.query("slow.example.com"), range(8)))
    assert all(str(a.answer[0][0]) == "192.0.2.50" for a in answers)
    assert len(upstream.queries_for("slow.example.com")) == 1
    assert daemon.metrics()["filterd_forward_coalesced_total"] == 7


def test_expired_answers_are_served_stale_while_upstreams_fail(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """RFC 8767 with cache.serve_stale: an expired answer, TTL 30 and EDE 3,
    instead of SERVFAIL; without it (``other.example``, never cached) SERVFAIL."""
    upstream.add("short.example", "A", "192.0.2.44", ttl=1)
    config = standard_config(upstream.endpoint, extra="cache: {serve_stale: 3600}\n")
    daemon = make_daemon(config).start()
    fresh = daemon.query("short.example")
    assert str(fresh.answer[0][0]) == "192.0.2.44" and fresh.answer[0].ttl <= 1
    daemon.query("short.example", edns=False)  # the non-EDNS variant is cached apart
    upstream.behave("*", drop=True)
    time.sleep(1.2)  # expired
    stale = daemon.query("short.example", timeout=10)
    assert stale.rcode() == dns.rcode.NOERROR
    assert str(stale.answer[0][0]) == "192.0.2.44" and stale.answer[0].ttl == 30
    (option,) = stale.options
    assert isinstance(option, dns.edns.EDEOption) and option.code == 3
    plain = daemon.query("short.example", edns=False, timeout=10)  # no OPT for a non-EDNS client
    assert str(plain.answer[0][0]) == "192.0.2.44" and plain.edns < 0
    assert daemon.query("other.example", timeout=10).rcode() == dns.rcode.SERVFAIL
    metrics = daemon.metrics()
    assert metrics['filterd_queries_total{outcome="stale",protocol="udp",qtype="A"}'] == 2
    assert metrics['filterd_queries_total{outcome="servfail",protocol="udp",qtype="A"}'] == 1
    # Upstreams back: fresh answers again.
    upstream.clear_behaviours()
    assert daemon.query("short.example").answer[0].ttl <= 1
