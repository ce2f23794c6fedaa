"""The authority's Prometheus metrics: what the compliance view says, as numbers.

``GET /metrics`` on the authority (admin token required, as for the
compliance view) exposes, per (operator, node, list) of the latest receipts,
the serials behind, the seconds overdue (since the first publication the node
has not acknowledged: a node whose receipts stopped arriving), the time of
the last receipt and whether it was signed; the registered operators that
never sent a receipt; and receipts accepted and refused. So a node that goes
quiet alerts at the authority (``FilterdAuthorityNodeOverdue``), not only at
the node. Labels are operator ids, node names and list ids: registered
names, bounded by what the authority registers. Documented in
docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from filterd.authority.compliance import Report

NODE_LABELS: Final = ("operator", "node", "list")


class AuthorityCollector(Collector):
    def __init__(self, report: Callable[[], Report], receipts: dict[str, int]) -> None:
        self._report = report
        self._receipts = receipts
        """Receipts by result: ``accepted``, ``refused``."""

    def collect(self) -> Iterator[Metric]:
        report = self._report()
        behind = GaugeMetricFamily(
            "filterd_authority_node_serials_behind",
            "Serials published after the one the node's latest receipt acknowledges.",
            labels=NODE_LABELS,
        )
        overdue = GaugeMetricFamily(
            "filterd_authority_node_overdue_seconds",
            "Seconds since the first serial the node has not acknowledged was published.",
            labels=NODE_LABELS,
        )
        last = GaugeMetricFamily(
            "filterd_authority_node_last_receipt_timestamp_seconds",
            "When the node's latest receipt arrived (Unix time).",
            labels=NODE_LABELS,
        )
        signed = GaugeMetricFamily(
            "filterd_authority_node_receipt_signed",
            "1 if the node's latest receipt was signed by its registered key.",
            labels=NODE_LABELS,
        )
        for node in report.nodes:
            labels = [node.operator, node.node, node.list_id]
            behind.add_metric(labels, node.serials_behind or 0)
            overdue.add_metric(labels, node.overdue_seconds or 0)
            last.add_metric(labels, node.last_seen.timestamp())
            signed.add_metric(labels, 1 if node.signed else 0)
        yield from (behind, overdue, last, signed)
        yield GaugeMetricFamily(
            "filterd_authority_operators_silent",
            "Registered operators that never sent a receipt.",
            value=len(report.silent_operators),
        )
        receipts = CounterMetricFamily(
            "filterd_authority_receipts",
            "Receipts posted, by result (refused: 403, 409, 413 or 422).",
            labels=("result",),
        )
        for result in ("accepted", "refused"):
            receipts.add_metric([result], self._receipts.get(result, 0))
        yield receipts


def build_registry(report: Callable[[], Report], receipts: dict[str, int]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuthorityCollector(report, receipts))
    return registry
