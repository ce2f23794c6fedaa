"""Worker reports add field by field, and cross the control channel intact."""

from __future__ import annotations

import pickle

from filterd.histogram import Histogram
from filterd.stats import (
    Buckets,
    CacheStats,
    ForwardStats,
    TcpStats,
    UdpStats,
    UpstreamStats,
    WorkerStats,
)


def histogram(*seconds: float) -> Buckets:
    observed = Histogram()
    for value in seconds:
        observed.observe(value)
    return observed.snapshot()


def report(up: bool, blocked: int, candidate: int) -> WorkerStats:
    return WorkerStats(
        queries={("udp", "A", "blocked"): blocked, ("udp", "A", "cached"): 0},
        latency={("udp", "fast"): histogram(0.0002, 0.003)},
        blocked={("national", "gambling", "nxdomain"): blocked},
        blocked_top=((b"\x06casino\x07example\x00", "gambling", candidate),),
        cache=CacheStats(entries=10, hits=4, misses=1),
        forward=ForwardStats(inflight=1, coalesced=2),
        upstreams={
            "192.0.2.1:53": UpstreamStats(up, 5, 4, histogram(0.01), {"timeout": 1}),
        },
        udp=UdpStats(send_errors=1),
        tcp=TcpStats(connections=2, accepted=3),
    )


def test_reports_add_field_by_field() -> None:
    merged = WorkerStats.merge([report(True, 2, 5), report(False, 3, 1)])
    assert merged.queries == {("udp", "A", "blocked"): 5, ("udp", "A", "cached"): 0}
    assert merged.blocked == {("national", "gambling", "nxdomain"): 5}
    assert merged.blocked_top == ((b"\x06casino\x07example\x00", "gambling", 6),)
    assert merged.cache == CacheStats(entries=20, hits=8, misses=2)
    assert merged.forward == ForwardStats(inflight=2, coalesced=4)
    assert merged.udp == UdpStats(send_errors=2) and merged.tcp == TcpStats(4, 6)
    fast = merged.latency["udp", "fast"]
    assert sum(fast.counts) == 4 and abs(fast.total - 2 * 0.0032) < 1e-12
    upstream = merged.upstreams["192.0.2.1:53"]
    assert not upstream.up  # down if any worker finds it down
    assert (upstream.queries, upstream.answers, upstream.errors) == (10, 8, {"timeout": 2})
    assert sum(upstream.rtt.counts) == 2


def test_a_key_of_one_report_only_is_kept() -> None:
    one = WorkerStats(upstreams={"a": UpstreamStats(queries=1)}, queries={("tcp", "A", "x"): 1})
    other = WorkerStats(upstreams={"b": UpstreamStats(up=False)})
    merged = one + other
    assert merged.upstreams == {"a": UpstreamStats(queries=1), "b": UpstreamStats(up=False)}
    assert merged.queries == {("tcp", "A", "x"): 1}


def test_merging_nothing_is_an_empty_report() -> None:
    assert WorkerStats.merge([]) == WorkerStats()
    assert WorkerStats.merge([report(True, 1, 1)]) == report(True, 1, 1)


def test_a_report_survives_the_control_channel() -> None:
    original = report(True, 2, 5)
    assert pickle.loads(pickle.dumps(original, protocol=pickle.HIGHEST_PROTOCOL)) == original
