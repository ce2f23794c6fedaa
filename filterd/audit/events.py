"""The fields of the supervisor's events, built from what it holds.

Pure code: the supervisor passes in its sources, merged worker counters and
clock, and gets back the JSON-ready fields of one record. Nothing here ever
takes a client address or a client's queried name: the counters it reads
are aggregates by list, category, action and outcome (``blocked_top``, if
present, holds names from the lists with counts, never who asked).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from filterd import __version__
from filterd.audit.chain import format_time, parse_time
from filterd.model.sources import SourceInfo
from filterd.stats import QueryKey, WorkerStats


def start_fields(config_path: Path | None, node: str) -> dict[str, Any]:
    return {
        "version": __version__,
        "config": str(config_path) if config_path is not None else None,
        "node": node,
        "pid": os.getpid(),
    }


def lists_fields(generation: int, cause: str, sources: Iterable[SourceInfo]) -> dict[str, Any]:
    """Every source now enforced. ``version`` is what EDE text and metrics show
    (the authority's serial for a synced list, else the first 12 hex digits
    of the file's SHA-256); ``sha256`` is the full hash of the bytes compiled
    (for a synced list, the authority's canonical snapshot), null for the
    built-in rules."""
    return {
        "generation": generation,
        "cause": cause,
        "lists": [
            {
                "name": source.name,
                "version": source.version,
                "sha256": source.sha256 or None,
                "format": source.format,
                "entries": source.entries,
                "accepted": source.accepted,
                "mandatory": source.mandatory,
            }
            for source in sources
        ],
    }


def stats_fields(
    stats: WorkerStats, blocked_top: Sequence[Mapping[str, Any]], boundary: float | None
) -> dict[str, Any]:
    """Counters since the daemon started, from the supervisor's merged worker
    stats (the numbers behind ``filterd_queries_total`` and
    ``filterd_blocked_total``), and the most blocked list entries if kept
    (rows ``{name, category, count}``). ``boundary``: the wall-clock
    multiple of ``stats_interval`` this record was scheduled for (None at stop)."""
    blocked = [
        {"list": source, "category": category, "action": action, "count": count}
        for (source, category, action), count in sorted(stats.blocked.items())
    ]
    fields: dict[str, Any] = {
        "boundary": format_time(datetime.fromtimestamp(boundary, UTC)) if boundary else None,
        "queries": _query_counts(stats.queries),
        "blocked": blocked,
    }
    if blocked_top:  # statistics.blocked_names is set
        fields["blocked_top"] = [
            {"name": str(row["name"]), "category": str(row["category"]), "count": int(row["count"])}
            for row in blocked_top
        ]
    return fields


def _query_counts(queries: Mapping[QueryKey, int]) -> dict[str, dict[str, dict[str, int]]]:
    """``protocol`` -> ``qtype`` -> ``outcome`` -> count (the labels of
    ``filterd_queries_total``, in that order, as the report reads them), keys
    sorted. Zeros are left out (an absent counter is zero), which keeps an
    hourly record small."""
    nested: dict[str, dict[str, dict[str, int]]] = {}
    for (protocol, qtype, outcome), count in sorted(queries.items()):
        if count:
            nested.setdefault(protocol, {}).setdefault(qtype, {})[outcome] = count
    return nested


def next_boundary(now: float, interval: float) -> float:
    """The next wall-clock multiple of ``interval`` strictly after ``now``: hourly
    records land on the hour, so a report for whole days starts and ends on one."""
    return (math.floor(now / interval) + 1) * interval


PRIVACY_INTERVAL: Final = 3600
"""Seconds: the shortest period a record's counts of blocked list entries
(``blocked_top``) may cover, whatever ``audit.stats_interval`` is."""


def privacy_floor(fields: Mapping[str, Any], run_started: float | None) -> dict[str, Any]:
    """``fields`` of a ``stats`` record without ``blocked_top`` unless the
    record lands on a whole multiple of ``PRIVACY_INTERVAL`` (UTC hours) at
    least that long after the run started (``run_started``, Unix time).

    The counts of a name are totals since the start, so the difference
    between two records is what was asked in between: with records a second
    apart (``stats_interval: 1``) the trail would say which listed site was
    asked for in which second, which joined with a subscriber's NAT log
    names the subscriber. Keeping names only in records on the hour, the
    first a full hour into the run, makes every difference cover an hour or
    more of everyone's queries. The record written at stop never carries
    them (it would cover the last, partial interval)."""
    out = dict(fields)
    if "blocked_top" not in out:
        return out
    boundary = out.get("boundary")
    keep = False
    if isinstance(boundary, str) and run_started is not None:
        at = parse_time(boundary).timestamp()
        keep = at % PRIVACY_INTERVAL == 0 and at - run_started >= PRIVACY_INTERVAL
    if not keep:
        del out["blocked_top"]
    return out
