"""The /metrics endpoint of a running daemon counts real traffic exactly."""

from __future__ import annotations

import json
import socket

import dns.message
import dns.query
import dns.rcode

from filterd.compiled import query_path_compiled
from tests.integration.conftest import DaemonFactory, standard_config
from tests.peers.authoritative import FakeUpstream


def test_counters_match_the_traffic_sent(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    for _ in range(3):  # one miss, then two hits
        assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    assert daemon.query("www.example.com", tcp=True).rcode() == dns.rcode.NOERROR  # a hit over TCP
    for name in ("gambling.example", "www.gambling.example"):
        assert daemon.query(name).rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("phishing.example.com").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("www.adult.example").answer  # sinkhole
    refused = dns.message.make_query("www.example.com", "A")
    dns.query.udp(refused, "127.0.0.1", port=daemon.port, timeout=5, source="127.0.0.5")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(refused.to_wire()[:15], ("127.0.0.1", daemon.port))
        assert dns.message.from_wire(sock.recv(512)).rcode() == dns.rcode.FORMERR

    metrics = daemon.metrics()
    queries = {k: v for k, v in metrics.items() if k.startswith("filterd_queries_total") and v}
    # The refused client and the malformed packet never had their question read.
    assert queries == {
        'filterd_queries_total{outcome="forwarded",protocol="udp",qtype="A"}': 1,
        'filterd_queries_total{outcome="cached",protocol="udp",qtype="A"}': 2,
        'filterd_queries_total{outcome="cached",protocol="tcp",qtype="A"}': 1,
        'filterd_queries_total{outcome="blocked",protocol="udp",qtype="A"}': 4,
        'filterd_queries_total{outcome="refused",protocol="udp",qtype="none"}': 1,
        'filterd_queries_total{outcome="formerr",protocol="udp",qtype="none"}': 1,
    }
    # Every answer is in the latency histogram once, under the path it took.
    duration = "filterd_query_duration_seconds"
    assert metrics[f'{duration}_count{{path="fast",protocol="udp"}}'] == 2 + 4 + 1 + 1
    assert metrics[f'{duration}_count{{path="upstream",protocol="udp"}}'] == 1
    assert metrics[f'{duration}_count{{path="fast",protocol="tcp"}}'] == 1
    assert metrics[f'{duration}_count{{path="upstream",protocol="tcp"}}'] == 0
    assert metrics[f'{duration}_bucket{{le="+Inf",path="fast",protocol="udp"}}'] == 8
    assert 0 < metrics[f'{duration}_sum{{path="upstream",protocol="udp"}}'] < 5
    rtt = f'filterd_upstream_rtt_seconds_count{{upstream="{upstream.endpoint}"}}'
    assert metrics[rtt] == 1
    blocked = {k: v for k, v in metrics.items() if k.startswith("filterd_blocked_total")}
    assert blocked == {
        'filterd_blocked_total{action="nxdomain",category="gambling",list="national"}': 2,
        'filterd_blocked_total{action="nxdomain",category="malware",list="local"}': 1,
        'filterd_blocked_total{action="sinkhole",category="adult",list="national"}': 1,
    }
    assert metrics["filterd_cache_hits_total"] == 3
    assert metrics["filterd_cache_misses_total"] == 1
    assert metrics["filterd_cache_entries"] == 1
    assert metrics[f'filterd_upstream_queries_total{{upstream="{upstream.endpoint}"}}'] == 1
    assert metrics[f'filterd_upstream_answers_total{{upstream="{upstream.endpoint}"}}'] == 1
    assert metrics[f'filterd_upstream_up{{upstream="{upstream.endpoint}"}}'] == 1
    assert metrics['filterd_list_entries{list="national",result="accepted"}'] == 4
    assert metrics['filterd_list_entries{list="local",result="accepted"}'] == 2
    assert metrics["filterd_index_names"] == 4 + 2 + 2 + 4  # national, local, allow, canaries
    assert metrics["filterd_ready"] == 1 and metrics["filterd_workers"] == 1
    compiled = "true" if query_path_compiled() else "false"
    assert metrics[f'filterd_build_info{{compiled="{compiled}",version="0.1.0"}}'] == 1
    said = "query path: compiled" if query_path_compiled() else "query path: not compiled"
    assert said in daemon.log
    # The audit trail holds "start" and "lists" (and a "stats" if an hour turned).
    assert metrics["filterd_audit_records_total"] in (2, 3)
    assert metrics["filterd_audit_write_failures_total"] == 0
    info = [k for k in metrics if k.startswith("filterd_list_info")]
    assert len(info) == 4 and any('list="national"' in k and 'mandatory="true"' in k for k in info)
    # Privacy: no queried name and no client address anywhere in the exposition.
    assert daemon.http("/stats/blocked")[0] == 404  # statistics.blocked_names: 0 by default
    text = daemon.http("/metrics")[1]
    for leak in ("example", "127.0.0.5", "gambling.example"):
        assert leak not in text.replace(upstream.endpoint, "")


def test_counters_stay_monotonic_across_a_reload_that_rebuilds_the_pipeline(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = standard_config(upstream.endpoint)
    daemon = make_daemon(config).start()
    for _ in range(3):  # one miss, two hits
        daemon.query("www.example.com")
    # A new cache size builds a new pipeline (and an empty cache) in the worker.
    daemon.write_config(config + "cache: {max_bytes: 5000000}\n")
    assert daemon.reload()
    daemon.query("www.example.com")  # a miss again: the new cache is empty
    metrics = daemon.metrics()
    assert metrics['filterd_queries_total{outcome="forwarded",protocol="udp",qtype="A"}'] == 2
    assert metrics['filterd_queries_total{outcome="cached",protocol="udp",qtype="A"}'] == 2
    assert metrics["filterd_cache_hits_total"] == 2
    assert metrics["filterd_cache_misses_total"] == 2
    assert metrics[f'filterd_upstream_answers_total{{upstream="{upstream.endpoint}"}}'] == 2
    assert metrics[f'filterd_upstream_rtt_seconds_count{{upstream="{upstream.endpoint}"}}'] == 2


def test_most_blocked_list_entries_are_counted_when_asked_for(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = standard_config(upstream.endpoint, extra="statistics: {blocked_names: 2}\n")
    daemon = make_daemon(config).start()
    for name, times in (
        ("gambling.example", 2),
        ("www.gambling.example", 3),  # counted under the entry: gambling.example
        ("phishing.example.com", 2),
        ("www.adult.example", 1),  # third: beyond the top 2
    ):
        for _ in range(times):
            daemon.query(name)
    status, body = daemon.http("/stats/blocked")
    assert status == 200
    assert json.loads(body) == {
        "blocked": [
            {"name": "gambling.example", "category": "gambling", "count": 5},
            {"name": "phishing.example.com", "category": "malware", "count": 2},
        ]
    }
    assert "www.gambling.example" not in body
