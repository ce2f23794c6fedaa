"""Prometheus exposition, assembled at scrape time from worker counters.

Workers count with plain integers on the hot path and report them when the
supervisor asks (one control-channel round trip per scrape); this module
turns the summed reports, plus the supervisor's own state, into metric
families on a private registry (never the global default registry, whose
duplicate-timeseries errors bite tests and embedders).

Labels are bounded by construction: protocol, outcome, list name (from the
configuration), category, action, upstream address (from the
configuration), error reason (a fixed set). A queried name or a client
address is never a label. The full list is in docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from filterd import __version__
from filterd.compiled import query_path_compiled
from filterd.lists.guard import REASONS as GUARD_REASONS
from filterd.stats import LATENCY_BOUNDS, Buckets, WorkerStats
from filterd.sync.model import REASONS


@dataclass(slots=True)
class SupervisorState:
    """What the supervisor knows that workers do not."""

    generation: int = 0
    ready: bool = False
    workers_configured: int = 0
    workers_running: int = 0
    worker_restarts: int = 0
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    last_reload_success: float = 0.0
    install_failures: int = 0
    supervision_errors: int = 0
    admin_refused: int = 0
    fd_limit: int = 0
    list_refusals: dict[tuple[str, str], int] = field(default_factory=dict)
    """(list name, guard reason) -> list files refused (filterd/lists/guard.py)."""
    index_names: int = 0
    compile_seconds: float = 0.0
    sources: list[dict[str, Any]] = field(default_factory=list)
    notifies_refused: int = 0
    sync_limits: tuple[float, float] | None = None  # sync.stale_after, sync.lag_sla


class SyncedList(Protocol):
    """What the sync metrics read of one synced list (``filterd.sync.client.ListStatus``)."""

    @property
    def list_id(self) -> str: ...
    @property
    def serial(self) -> int: ...
    @property
    def authority_serial(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def published_at(self) -> float: ...
    @property
    def applied_at(self) -> float: ...
    @property
    def lag(self) -> float: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def last_success(self) -> float: ...
    @property
    def failures(self) -> Mapping[str, int]: ...
    @property
    def receipts(self) -> Mapping[str, int]: ...
    @property
    def notifies(self) -> int: ...


class AuditCounts(Protocol):
    """What the audit metrics read of the trail's writer (``filterd.audit.recorder``)."""

    @property
    def records_written(self) -> int: ...
    @property
    def write_failures(self) -> int: ...
    @property
    def last_write(self) -> float: ...


class FilterdCollector(Collector):
    """Yields every filterd metric from the latest merged stats and supervisor state."""

    def __init__(self, state: SupervisorState, stats: Callable[[], WorkerStats]) -> None:
        self._state = state
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        state = self._state
        yield from self._queries(stats)
        yield from self._cache(stats)
        yield from self._upstreams(stats)
        yield from self._lists(state)
        yield from self._process(state)

    def _queries(self, stats: WorkerStats) -> Iterator[Metric]:
        queries = CounterMetricFamily(
            "filterd_queries",
            "DNS queries, by transport, query type and outcome.",
            labels=["protocol", "qtype", "outcome"],
        )
        for labels, count in sorted(stats.queries.items()):
            queries.add_metric(list(labels), count)
        yield queries
        duration = HistogramMetricFamily(
            "filterd_query_duration_seconds",
            "Time from reading a query to handing its answer to the kernel, by transport "
            "and path (fast: cache hit, block or error; upstream: after an upstream exchange).",
            labels=["protocol", "path"],
        )
        for (protocol, path), histogram in sorted(stats.latency.items()):
            _add_histogram(duration, [protocol, path], histogram)
        yield duration
        pauses = HistogramMetricFamily(
            "filterd_gc_pause_seconds",
            "Pauses of the workers' cyclic garbage collector (a worker answers nothing "
            "meanwhile), by generation collected.",
            labels=["generation"],
        )
        for generation, histogram in sorted(stats.gc_pauses.items()):
            _add_histogram(pauses, [generation], histogram)
        yield pauses
        blocked = CounterMetricFamily(
            "filterd_blocked",
            "Blocked answers, by deciding list, category and action.",
            labels=["list", "category", "action"],
        )
        for (source, category, action), count in sorted(stats.blocked.items()):
            blocked.add_metric([source, category, action], count)
        yield blocked
        yield from self._groups(stats)
        forward = stats.forward
        yield _gauge("filterd_upstream_inflight", "Upstream exchanges in flight.", forward.inflight)
        yield _counter(
            "filterd_forward_coalesced",
            "Queries that joined an identical one in flight.",
            forward.coalesced,
        )
        yield _counter(
            "filterd_forward_overload",
            "Queries answered SERVFAIL because max_inflight was reached.",
            forward.overloaded,
        )
        yield _counter(
            "filterd_forward_client_overload",
            "Queries answered SERVFAIL because their client prefix had "
            "max_inflight_per_client upstream exchanges in flight.",
            forward.client_overloaded,
        )
        udp = stats.udp
        yield _counter(
            "filterd_udp_send_errors",
            "UDP answers the socket refused to send.",
            udp.send_errors,
        )
        yield _counter(
            "filterd_udp_receive_errors",
            "Errors reading the UDP socket.",
            udp.recv_errors,
        )
        limited = stats.rate_limit
        yield _counter(
            "filterd_rate_limit_dropped",
            "UDP answers dropped by the response rate limit.",
            limited.dropped,
        )
        yield _counter(
            "filterd_rate_limit_slipped",
            "UDP answers over the response rate limit sent as an empty truncated answer "
            "(rate_limit.slip), so a real client retries over TCP.",
            limited.slipped,
        )
        tcp = stats.tcp
        yield _gauge("filterd_tcp_connections", "Open client TCP connections.", tcp.connections)
        yield _counter(
            "filterd_tcp_connections_rejected",
            "TCP connections closed at once because tcp_max_connections was reached.",
            tcp.rejected,
        )
        yield _counter(
            "filterd_tcp_client_rejected",
            "TCP connections closed at once because their client prefix had "
            "tcp_max_per_client open.",
            tcp.client_rejected,
        )
        yield _counter(
            "filterd_tcp_connections_denied",
            "TCP connections closed at accept: the client is not in access.allow.",
            tcp.denied,
        )
        yield _counter(
            "filterd_tcp_idle_closed",
            "TCP connections closed for idleness.",
            tcp.idle_closed,
        )
        yield _counter(
            "filterd_tcp_slow_closed",
            "TCP connections closed because a query did not arrive whole in tcp_message_timeout.",
            tcp.slow_closed,
        )

    def _groups(self, stats: WorkerStats) -> Iterator[Metric]:
        """Per client group (docs/profiles.md): the label is a group name
        from the configuration, never a client address."""
        families = {
            "queries": ("filterd_group_queries", "Queries decoded, by the client's group."),
            "blocked": ("filterd_group_blocked", "Blocked answers, by the client's group."),
            "rewritten": (
                "filterd_group_rewritten",
                "Safe-search rewrites (CNAME to the restricted host), by the client's group.",
            ),
        }
        for key, (name, documentation) in families.items():
            family = CounterMetricFamily(name, documentation, labels=["group"])
            for group, counts in sorted(stats.groups.items()):
                family.add_metric([group], getattr(counts, key))
            yield family

    def _cache(self, stats: WorkerStats) -> Iterator[Metric]:
        cache = stats.cache
        yield _gauge("filterd_cache_entries", "Answers held in the cache.", cache.entries)
        yield _gauge(
            "filterd_cache_bytes",
            "Memory the cache accounts for its answers (bounded by cache.max_bytes).",
            cache.bytes,
        )
        yield _counter("filterd_cache_hits", "Cache lookups that found a live answer.", cache.hits)
        yield _counter(
            "filterd_cache_misses", "Cache lookups that found nothing live.", cache.misses
        )
        yield _counter("filterd_cache_expired", "Entries found expired on lookup.", cache.expired)
        yield _counter(
            "filterd_cache_evictions",
            "Entries evicted to respect cache.max_bytes.",
            cache.evictions,
        )

    def _upstreams(self, stats: WorkerStats) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "filterd_upstream_up", "1 if the upstream is considered healthy.", labels=["upstream"]
        )
        queries = CounterMetricFamily(
            "filterd_upstream_queries", "Queries sent upstream.", labels=["upstream"]
        )
        answers = CounterMetricFamily(
            "filterd_upstream_answers", "Usable upstream answers.", labels=["upstream"]
        )
        rtt = HistogramMetricFamily(
            "filterd_upstream_rtt_seconds",
            "Round-trip time of usable upstream answers.",
            labels=["upstream"],
        )
        errors = CounterMetricFamily(
            "filterd_upstream_errors",
            "Failed upstream attempts by reason.",
            labels=["upstream", "reason"],
        )
        for name, row in sorted(stats.upstreams.items()):
            up.add_metric([name], 1 if row.up else 0)
            queries.add_metric([name], row.queries)
            answers.add_metric([name], row.answers)
            _add_histogram(rtt, [name], row.rtt)
            for reason, count in sorted(row.errors.items()):
                errors.add_metric([name, reason], count)
        yield from (up, queries, answers, rtt, errors)

    def _lists(self, state: SupervisorState) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "filterd_list_info",
            "Enforced list: version and format (value 1).",
            labels=["list", "version", "format", "mandatory"],
        )
        entries = GaugeMetricFamily(
            "filterd_list_entries", "Data lines of a list, by result.", labels=["list", "result"]
        )
        for source in state.sources:
            info.add_metric(
                [
                    source["name"],
                    source["version"],
                    source["format"],
                    str(source["mandatory"]).lower(),
                ],
                1,
            )
            for result in ("accepted", "invalid", "ignored"):
                entries.add_metric([source["name"], result], source[result])
        yield info
        yield entries
        yield _gauge(
            "filterd_index_names", "Distinct names in the enforced index.", state.index_names
        )
        yield _gauge(
            "filterd_index_compile_seconds",
            "Duration of the last list compile.",
            state.compile_seconds,
        )

    def _process(self, state: SupervisorState) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "filterd_build_info",
            "filterd version, and whether the query path runs compiled (value 1).",
            labels=["version", "compiled"],
        )
        build.add_metric([__version__, "true" if query_path_compiled() else "false"], 1)
        yield build
        yield _gauge(
            "filterd_ready",
            "1 when every worker serves the current configuration.",
            1 if state.ready else 0,
        )
        yield _gauge(
            "filterd_config_generation",
            "Generation of the configuration being served.",
            state.generation,
        )
        yield _gauge("filterd_workers", "Worker processes running.", state.workers_running)
        yield _counter(
            "filterd_worker_restarts",
            "Workers restarted after an unexpected exit.",
            state.worker_restarts,
        )
        yield _counter(
            "filterd_worker_restart_failures",
            "Worker restarts that failed (no descriptor left, index not mappable) and were "
            "tried again.",
            state.supervision_errors,
        )
        yield _counter(
            "filterd_admin_connections_refused",
            "Admin HTTP connections closed at accept because admin.max_connections were open.",
            state.admin_refused,
        )
        yield _gauge(
            "filterd_fd_limit",
            "Open-file limit of the daemon's processes (raised to the hard limit at start).",
            state.fd_limit,
        )
        reloads = CounterMetricFamily(
            "filterd_config_reloads", "Reloads (SIGHUP), by result.", labels=["result"]
        )
        for result, count in sorted(state.reloads.items()):
            reloads.add_metric([result], count)
        yield reloads
        refusals = CounterMetricFamily(
            "filterd_list_refusals",
            "List files refused by a guard (empty, mostly invalid, shrunk), by list and reason.",
            labels=["list", "reason"],
        )
        # Every list file has its series from the start (at 0), so that an
        # alert on increase() sees the first refusal too.
        names = {str(s["name"]) for s in state.sources if s.get("format") != "builtin"}
        names |= {name for name, _ in state.list_refusals}
        for name in sorted(names):
            for reason in GUARD_REASONS:
                refusals.add_metric([name, reason], state.list_refusals.get((name, reason), 0))
        yield refusals
        yield _counter(
            "filterd_install_failures",
            "New generations no worker switched to, because one could not prepare it.",
            state.install_failures,
        )
        yield _gauge(
            "filterd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load of configuration and lists.",
            state.last_reload_success,
        )


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Buckets) -> None:
    """Add one series from per-bucket counts as cumulative buckets."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*LATENCY_BOUNDS, math.inf), histogram.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == math.inf else repr(bound), running))
    family.add_metric(labels, buckets, histogram.total)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class SyncCollector(Collector):
    """Authority sync: what each synced list enforces, how fast, and what failed."""

    def __init__(self, state: SupervisorState, lists: Callable[[], Sequence[SyncedList]]) -> None:
        self._state = state
        self._lists = lists

    def collect(self) -> Iterator[Metric]:
        families = {
            "serial": ("filterd_sync_serial", "Serial of the authority list enforced."),
            "authority_serial": ("filterd_sync_authority_serial",
                                 "Newest serial seen in a verified manifest of the authority."),
            "entries": ("filterd_sync_entries", "Entries of the authority list enforced."),
            "published_at": ("filterd_sync_published_timestamp_seconds",
                             "Publication time of the serial enforced."),
            "applied_at": ("filterd_sync_applied_timestamp_seconds",
                           "When the serial enforced was applied here."),
            "lag": ("filterd_sync_lag_seconds",
                    "Applied minus published time of the serial enforced (enforcement lag)."),
            "expires_at": ("filterd_sync_manifest_expires_timestamp_seconds",
                           "When the manifest of the serial enforced goes stale."),
            "last_success": ("filterd_sync_last_success_timestamp_seconds",
                             "Last sync that verified the authority's current manifest."),
        }  # fmt: skip
        statuses = self._lists()
        for attribute, (name, documentation) in families.items():
            family = GaugeMetricFamily(name, documentation, labels=["list"])
            for status in statuses:
                family.add_metric([status.list_id], getattr(status, attribute))
            yield family
        failures = CounterMetricFamily(
            "filterd_sync_failures", "Failed syncs, by reason.", labels=["list", "reason"]
        )
        receipts = CounterMetricFamily(
            "filterd_sync_receipts", "Receipts sent, by result.", labels=["list", "result"]
        )
        notifies = CounterMetricFamily(
            "filterd_sync_notifies", "Verified push notifications received.", labels=["list"]
        )
        for status in statuses:
            for reason in REASONS:
                failures.add_metric([status.list_id, reason], status.failures.get(reason, 0))
            for result, count in sorted(status.receipts.items()):
                receipts.add_metric([status.list_id, result], count)
            notifies.add_metric([status.list_id], status.notifies)
        yield from (failures, receipts, notifies)
        if self._state.sync_limits is not None:
            stale_after, lag_sla = self._state.sync_limits
            yield _gauge(
                "filterd_sync_stale_after_seconds",
                "Configured seconds without a successful sync before a list counts as stale.",
                stale_after,
            )
            yield _gauge(
                "filterd_sync_lag_sla_seconds",
                "Configured enforcement lag agreed with the authority.",
                lag_sla,
            )
        yield _counter(
            "filterd_sync_notifies_refused",
            "Push notifications refused (bad signature, unknown list, malformed).",
            self._state.notifies_refused,
        )


class AuditCollector(Collector):
    """The audit trail's writer: every failed write is an event missing from reports."""

    def __init__(self, audit: AuditCounts) -> None:
        self._audit = audit

    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "filterd_audit_records",
            "Records appended to the audit trail.",
            self._audit.records_written,
        )
        yield _counter(
            "filterd_audit_write_failures",
            "Audit records that could not be written (disk full, permissions, lock).",
            self._audit.write_failures,
        )
        yield _gauge(
            "filterd_audit_last_write_timestamp_seconds",
            "Unix time of the last record appended to the audit trail.",
            self._audit.last_write,
        )  # fmt: skip


def build_registry(
    state: SupervisorState,
    stats: Callable[[], WorkerStats],
    sync: Callable[[], Sequence[SyncedList]],
    audit: AuditCounts,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FilterdCollector(state, stats))
    registry.register(SyncCollector(state, sync))
    registry.register(AuditCollector(audit))
    return registry
