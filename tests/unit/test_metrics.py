"""Worker tallies are summed exactly and exposed as Prometheus histograms and counters."""

from __future__ import annotations

import gc
from bisect import bisect_left
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from filterd.audit.recorder import AuditRecorder
from filterd.config import AuditConfig
from filterd.histogram import Histogram
from filterd.metrics import SupervisorState, build_registry
from filterd.pipeline.tally import QTYPE_SLOT, Counters
from filterd.stats import LATENCY_BOUNDS, WorkerStats
from filterd.worker import CollectorPauses


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    histogram = Histogram()
    histogram.observe(LATENCY_BOUNDS[0])  # exactly on a bound: that bucket (le)
    histogram.observe(LATENCY_BOUNDS[0] * 1.01)
    histogram.observe(60.0)  # beyond the last bound: +Inf
    histogram.observe(0.001, times=5)
    counts = histogram.counts
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1
    assert counts[LATENCY_BOUNDS.index(0.001)] == 5
    assert sum(counts) == 8
    assert abs(histogram.total - (LATENCY_BOUNDS[0] * 2.01 + 60.0 + 0.005)) < 1e-9


@given(st.floats(min_value=-1.0, max_value=100.0, allow_nan=False))
def test_an_observation_lands_in_the_bucket_bisect_would_pick(seconds: float) -> None:
    """The scan in ``observe`` is ``bisect_left``: the first bound not below."""
    histogram = Histogram()
    histogram.observe(seconds)
    assert histogram.counts.index(1) == bisect_left(LATENCY_BOUNDS, seconds)


def worker(answers: int, seconds: float, qtype: int) -> WorkerStats:
    counters = Counters()
    counters.udp[QTYPE_SLOT[qtype]].cached += answers
    counters.tcp[0].formerr += 1
    counters.udp_fast.observe(seconds, answers)
    return WorkerStats(queries=counters.queries(), latency=counters.latency())


def test_reports_of_workers_are_summed_and_rendered(tmp_path: Path) -> None:
    stats = WorkerStats.merge([worker(3, 0.0002, 1), worker(4, 0.003, 28), worker(1, 0.0002, 1)])
    assert stats.queries["udp", "A", "cached"] == 4
    assert stats.queries["udp", "AAAA", "cached"] == 4
    assert stats.queries["tcp", "none", "formerr"] == 3
    assert ("udp", "MX", "cached") not in stats.queries  # types never seen are left out
    audit = AuditRecorder(AuditConfig(enabled=False), tmp_path)
    registry = build_registry(SupervisorState(), lambda: stats, list, audit)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    name = "filterd_query_duration_seconds"
    fast = (("path", "fast"), ("protocol", "udp"))
    assert samples[(f"{name}_count", fast)] == 8
    assert samples[(f"{name}_bucket", (("le", "0.00025"), *fast))] == 4  # cumulative
    assert samples[(f"{name}_bucket", (("le", "0.005"), *fast))] == 8
    assert samples[(f"{name}_bucket", (("le", "+Inf"), *fast))] == 8
    assert abs(samples[(f"{name}_sum", fast)] - (4 * 0.0002 + 4 * 0.003)) < 1e-9
    key = (("outcome", "cached"), ("protocol", "udp"), ("qtype", "AAAA"))
    assert samples[("filterd_queries_total", key)] == 4


def test_collector_pauses_are_timed_per_generation_and_summed_over_workers(
    tmp_path: Path,
) -> None:
    """Real collections, timed by the worker's ``gc.callbacks`` entry, reach
    /metrics as ``filterd_gc_pause_seconds`` with every generation present."""
    reports = []
    for collections in ((0, 2), (2,)):
        pauses = CollectorPauses()
        gc.callbacks.append(pauses)
        try:
            for generation in collections:
                gc.collect(generation)
        finally:
            gc.callbacks.remove(pauses)
        reports.append(WorkerStats(gc_pauses=pauses.snapshot()))
    stats = WorkerStats.merge(reports)
    assert set(stats.gc_pauses) == {"0", "1", "2"}
    audit = AuditRecorder(AuditConfig(enabled=False), tmp_path)
    registry = build_registry(SupervisorState(), lambda: stats, list, audit)
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name.startswith("filterd_gc_pause_seconds")
    }
    # At least the collections asked for; an automatic one may add to any generation.
    assert samples["filterd_gc_pause_seconds_count", (("generation", "0"),)] >= 1
    assert samples["filterd_gc_pause_seconds_count", (("generation", "2"),)] >= 2
    assert ("filterd_gc_pause_seconds_count", (("generation", "1"),)) in samples
    total = samples["filterd_gc_pause_seconds_sum", (("generation", "2"),)]
    assert total == sum(report.gc_pauses["2"].total for report in reports) > 0
