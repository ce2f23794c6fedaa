"""The operator's periodic report, computed from the trail alone.

``ReportBuilder`` takes the records in trail order (one pass, nothing kept
but running sums) and gives the report for a window ``[start, end)``:

- **runs**: each ``start`` to its ``stop``; a run without a ``stop`` (the
  daemon crashed, was killed, or is still running) ends at its last record.
  That under-claims rather than over-claims: enforcement is never counted
  past the last moment the daemon wrote anything;
- **lists**: from each ``lists`` record until the next one, or the end of
  the run, the lists it names are enforced at the versions it names: exact
  intervals per version, gaps between them, sums per list and per version,
  clipped to the window (enforcement.py);
- **updates**: every ``sync_applied`` in the window with its lag against the
  SLA (the record's ``lag_sla_seconds``, or ``--sla``), met when lag <= SLA;
- **sync failures** (every ``sync_rejected``, by list and reason) and the
  **rejected updates** among them (the reasons where the authority's answer
  arrived and was refused, i.e. not ``network``, ``timeout`` or ``http``);
- **reloads** (SIGHUP), with their result;
- **queries** and **blocked answers** by list, category and action: the
  increase of the ``stats`` counters over the window, the way Prometheus'
  ``increase()`` sees a counter (counters restart from zero at each
  ``start``; a value lower than the one before also counts as a restart).
  A ``stats`` record accounts for the interval that ends at it, so it counts
  in the window when its ``boundary`` (its scheduled wall-clock time, or its
  time for the record written at stop) is in ``(start, end]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from filterd import __version__
from filterd.audit.chain import format_time, parse_time
from filterd.audit.counters import Counters
from filterd.audit.enforcement import Enforced, Enforcement
from filterd.audit.verify import Result

TRANSPORT_REASONS: Final = frozenset({"network", "timeout", "http"})
"""Sync failures where no answer of the authority's was judged (not a rejection)."""
TOP_ROWS: Final = 100


@dataclass(slots=True)
class _Run:
    started: datetime
    version: str
    node: str
    last: datetime
    serving_from: datetime | None = None
    enforced: dict[str, Enforced] = field(default_factory=dict)
    baseline: Counters = field(default_factory=Counters)


class ReportBuilder:
    def __init__(self, start: datetime, end: datetime, sla: float | None = None) -> None:
        self.start = start
        self.end = end
        self.sla = sla
        self._run: _Run | None = None
        self._runs: list[dict[str, Any]] = []
        self._enforcement = Enforcement(start, end)
        self._updates: list[dict[str, Any]] = []
        self._failures: Counter[tuple[str, str]] = Counter()
        self._rejected: list[dict[str, Any]] = []
        self._reloads: list[dict[str, Any]] = []
        self._trail_events: list[dict[str, Any]] = []
        self._increase = Counters()

    # ------------------------------------------------------------- records

    def add(self, record: Mapping[str, Any]) -> None:
        moment = parse_time(record["time"])
        event = record["event"]
        if event == "start":
            self._end_run(None)
            self._run = _Run(
                moment, str(record.get("version")), str(record.get("node") or ""), moment
            )
            return
        run = self._run
        if run is None:  # records before the first start kept (pruned trail): a run of its own
            run = self._run = _Run(moment, "", "", moment)
        run.last = moment
        if event == "stop":
            self._end_run(record)
        elif event == "lists":
            self._lists(run, moment, record)
        elif event == "stats":
            self._stats(run, moment, record)
        elif self._in_window(moment):
            self._event(moment, record)

    def _in_window(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def _event(self, moment: datetime, record: Mapping[str, Any]) -> None:
        event = record["event"]
        when = format_time(moment)
        if event == "sync_applied":
            sla = self.sla if self.sla is not None else float(record.get("lag_sla_seconds", 0))
            lag = float(record.get("lag_seconds", 0))
            self._updates.append(
                {
                    "list": record.get("list"),
                    "serial": record.get("serial"),
                    "sha256": record.get("sha256"),
                    "entries": record.get("entries"),
                    "published_at": record.get("published_at"),
                    "applied_at": record.get("applied_at"),
                    "via": record.get("via"),
                    "lag_seconds": round(lag, 3),
                    "sla_seconds": sla,
                    "sla_met": lag <= sla,
                }
            )
        elif event == "sync_rejected":
            reason = str(record.get("reason"))
            self._failures[(str(record.get("list")), reason)] += 1
            if reason not in TRANSPORT_REASONS:
                self._rejected.append(
                    {
                        "time": when,
                        "list": record.get("list"),
                        "reason": reason,
                        "message": record.get("message"),
                        "enforced_serial": record.get("enforced_serial"),
                    }
                )
        elif event == "reload":
            self._reloads.append(
                {
                    "time": when,
                    "result": record.get("result"),
                    "generation": record.get("generation"),
                    "error": record.get("error"),
                }
            )
        elif event in ("recover", "rotate"):
            fields = {k: v for k, v in record.items() if k not in ("time", "prev")}
            self._trail_events.append({"time": when, **fields})

    # ---------------------------------------------------------- enforcement

    def _lists(self, run: _Run, moment: datetime, record: Mapping[str, Any]) -> None:
        if run.serving_from is None:
            run.serving_from = moment
        now: dict[str, Enforced] = {}
        for row in record.get("lists") or ():
            name, version = str(row["name"]), str(row["version"])
            current = run.enforced.get(name)
            if current is not None and current.version == version:
                now[name] = current
            else:
                now[name] = Enforced(version, row.get("sha256"), bool(row["mandatory"]), moment)
        for name, interval in run.enforced.items():
            if now.get(name) is not interval:
                self._enforcement.close(name, interval, moment)
        run.enforced = now

    def _end_run(self, stop: Mapping[str, Any] | None) -> None:
        run = self._run
        if run is None:
            return
        self._run = None
        for name, interval in run.enforced.items():
            self._enforcement.close(name, interval, run.last)
        ending = "open" if stop is None else ("stop" if stop.get("clean") else "error")
        serving = 0.0
        if run.serving_from is not None:
            serving = _overlap(run.serving_from, run.last, self.start, self.end)
        if _overlap(run.started, run.last, self.start, self.end) or self._in_window(run.started):
            self._runs.append(
                {
                    "started": format_time(run.started),
                    "ended": format_time(run.last),
                    "end": ending,
                    "error": stop.get("error") if stop is not None else None,
                    "version": run.version,
                    "node": run.node,
                    "serving_seconds": round(serving, 3),
                    "serving_hours": round(serving / 3600, 3),
                }
            )

    # ---------------------------------------------------------------- stats

    def _stats(self, run: _Run, moment: datetime, record: Mapping[str, Any]) -> None:
        boundary = record.get("boundary")
        at = parse_time(boundary) if isinstance(boundary, str) else moment
        now = Counters.of(record)
        if "blocked_top" not in record:  # the privacy floor: names only hourly
            now.top = run.baseline.top
        if self.start < at <= self.end:
            self._increase.add_increase(run.baseline, now)
        run.baseline = now

    # --------------------------------------------------------------- result

    def build(self, trail: Result) -> dict[str, Any]:
        self._end_run(None)
        queries = self._increase.queries
        blocked = self._increase.blocked
        by_outcome: Counter[str] = Counter()
        by_protocol: Counter[str] = Counter()
        by_qtype: Counter[str] = Counter()
        truncated = 0
        for path, count in queries.items():
            if path[-1] == "truncated":  # also counted under its outcome
                truncated += count
                continue
            by_outcome[path[-1]] += count
            by_protocol[path[0]] += count
            if len(path) == 3:
                by_qtype[path[1]] += count
        by_category: Counter[str] = Counter()
        by_list: Counter[str] = Counter()
        for (source, category, _), count in blocked.items():
            by_category[category] += count
            by_list[source] += count
        updates = sorted(self._updates, key=lambda u: (str(u["applied_at"]), str(u["list"])))
        missed = [u for u in updates if not u["sla_met"]]
        report: dict[str, Any] = {
            "report": {
                "from": format_time(self.start),
                "to": format_time(self.end),
                "hours": round((self.end - self.start).total_seconds() / 3600, 3),
                "generated_at": format_time(datetime.now(UTC)),
                "software": f"filterd {__version__}",
                "sla_seconds": self.sla,
            },
            "trail": trail_section(trail),
            "runs": self._runs,
            "lists": self._enforcement.report(),
            "updates": updates,
            "sla": {
                "updates": len(updates),
                "met": len(updates) - len(missed),
                "missed": len(missed),
                "max_lag_seconds": max((u["lag_seconds"] for u in updates), default=None),
            },
            "sync_failures": [
                {"list": name, "reason": reason, "count": count}
                for (name, reason), count in sorted(self._failures.items())
            ],
            "rejected_updates": self._rejected,
            "reloads": {
                "success": sum(r["result"] == "success" for r in self._reloads),
                "failure": sum(r["result"] == "failure" for r in self._reloads),
                "events": self._reloads,
            },
            "queries": {
                "total": sum(by_outcome.values()),
                "by_outcome": {k: n for k, n in sorted(by_outcome.items()) if n},
                "by_protocol": {k: n for k, n in sorted(by_protocol.items()) if n},
                "by_qtype": {k: n for k, n in sorted(by_qtype.items()) if n},
                "truncated": truncated,
            },
            "blocked": {
                "total": sum(blocked.values()),
                "by_category": _rows("category", by_category),
                "by_list": _rows("list", by_list),
                "by_list_category_action": [
                    {"list": s, "category": c, "action": a, "count": n}
                    for (s, c, a), n in sorted(blocked.items())
                    if n
                ],
            },
            "trail_events": self._trail_events,
        }
        top = sorted(self._increase.top.items(), key=lambda row: (-row[1], row[0]))
        if top:
            report["blocked_top"] = [
                {"name": name, "category": category, "count": count}
                for (name, category), count in top[:TOP_ROWS]
                if count
            ]
        return report


def trail_section(trail: Result) -> dict[str, Any]:
    """What was verified, and how far anchors vouch for it (docs/audit.md)."""
    unanchored = None
    if trail.records and trail.anchored_seq < trail.last_seq:
        unanchored = [max(trail.anchored_seq + 1, trail.first_seq), trail.last_seq]
    return {
        "ok": trail.ok,
        "verdict": trail.verdict,
        "records": trail.records,
        "first_seq": trail.first_seq,
        "last_seq": trail.last_seq,
        "head": trail.head,
        "problem": trail.problem or None,
        "unverified": [{"seq": seq, "why": why} for seq, why in sorted(trail.unvouched.items())],
        "anchors_given": trail.anchored,
        "anchors_checked": trail.anchors_checked,
        "anchored_seq": trail.anchored_seq or None,
        "anchored_at": trail.anchored_at,
        "not_yet_anchored": unanchored,
        "statement": statement(trail),
        "notes": trail.notes,
    }


def statement(trail: Result) -> str:
    """One sentence an authority can read: what was checked, against what."""
    if trail.problem:
        return f"The audit trail does NOT verify: {trail.problem}"
    text = (
        f"The hash chain of records seq {trail.first_seq}..{trail.last_seq} is intact "
        "and ends at the node's own head"
    )
    if trail.unvouched:
        seqs = ", ".join(str(seq) for seq in sorted(trail.unvouched))
        text += f", except seq {seqs}: vouched for by nothing, left out of this report"
    if not trail.anchored:
        return text + "; no anchors were given: nothing off the node vouches for it."
    if not trail.anchored_seq:
        return text + "; none of the anchors given is in the trail: nothing is anchored."
    when = f" (taken {trail.anchored_at})" if trail.anchored_at else ""
    text += (
        f"; records up to seq {trail.anchored_seq} match {trail.anchors_checked} "
        f"anchor(s) held off the node, the last at seq {trail.anchored_seq}{when}"
    )
    if trail.anchored_seq < trail.last_seq:
        text += f"; seq {trail.anchored_seq + 1}..{trail.last_seq} are not yet anchored"
    return text + "."


def _rows(name: str, counts: Counter[str]) -> list[dict[str, Any]]:
    return [{name: key, "count": count} for key, count in sorted(counts.items()) if count]


def _overlap(first: datetime, last: datetime, start: datetime, end: datetime) -> float:
    return max(0.0, (min(last, end) - max(first, start)).total_seconds())


# ------------------------------------------------------------------ dates


def parse_date(text: str, *, end: bool = False) -> datetime:
    """``YYYY-MM-DD`` (UTC midnight; for the end of a window, the end of that
    day, so ``--from 2026-11-01 --to 2026-11-30`` is all of November) or a
    full RFC 3339 time, which is taken as it is."""
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None
        return day + timedelta(days=1) if end else day
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
