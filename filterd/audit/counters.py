"""Counters of ``stats`` records, and their increase over a window.

A ``stats`` record holds counters since its run started; the report needs
their increase between records, the way Prometheus' ``increase()`` sees a
counter (a value lower than the one before means a restart). Pure code.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
QueryKey = tuple[str, ...]  # protocol, (qtype,) outcome: the labels of filterd_queries_total
BlockKey = tuple[str, str, str]  # list, category, action
TopKey = tuple[str, str]  # name, category


@dataclass(slots=True)
class Counters:
    """One reading of the counters of a ``stats`` record (or their increase)."""

    queries: dict[QueryKey, int] = field(default_factory=dict)
    blocked: dict[BlockKey, int] = field(default_factory=dict)
    top: dict[TopKey, int] = field(default_factory=dict)

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Counters:
        queries = _summed(_paths(record.get("queries") or {}, ()))
        blocked = _summed(
            ((str(row["list"]), str(row["category"]), str(row["action"])), row["count"])
            for row in record.get("blocked") or ()
        )
        top = _summed(
            ((str(row["name"]), str(row["category"])), row["count"])
            for row in record.get("blocked_top") or ()
        )
        return cls(queries, blocked, top)

    def add_increase(self, before: Counters, now: Counters) -> None:
        _increase(self.queries, before.queries, now.queries)
        _increase(self.blocked, before.blocked, now.blocked)
        _increase(self.top, before.top, now.top)


def _paths(value: Any, prefix: QueryKey) -> Iterable[tuple[QueryKey, Any]]:
    """Nested counters as (key path, count)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _paths(item, (*prefix, str(key)))
    else:
        yield prefix, value


def _increase(total: dict[K, int], before: Mapping[K, int], now: Mapping[K, int]) -> None:
    """Prometheus' ``increase()``: a value below the one before means a restart."""
    for key, value in now.items():
        previous = before.get(key, 0)
        total[key] = total.get(key, 0) + (value - previous if value >= previous else value)


def _summed(rows: Iterable[tuple[K, Any]]) -> dict[K, int]:
    out: dict[K, int] = {}
    for key, count in rows:
        out[key] = out.get(key, 0) + int(count)
    return out
