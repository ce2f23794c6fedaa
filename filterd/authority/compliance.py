"""Who enforces what, and how fast: the authority's view of its operators.

Built from three sources the authority already has: each list's publication
history (serial, time, SHA-256), the registered operators, and the latest
receipt of every (operator, node, list). For each of those it reports the
serial enforced, how many serials behind the latest publication it is, the
lag between publication and application (``applied_at - published_at`` of
that serial, as the protocol defines it), how long ago the first serial it
has not acknowledged was published (a node whose receipts stopped arriving
shows here, and in ``filterd_authority_node_overdue_seconds``), whether the
SHA-256 the node reports is the one published for that serial (the
effective list is then exactly the published one), when the node was last heard from, whether
that receipt was signed by the node's registered key, and the node's audit
head it carried (its latest anchor; ``filterd authority heads`` exports
them all).
Operators that never sent a receipt are listed too: silence is the first
thing a Department needs to see.

Pure code (no I/O), so the JSON and the HTML page cannot disagree, and both
are tested without a server. The page is plain HTML: every value is escaped,
no script, no external resource, so it renders anywhere, offline included.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from filterd.authority.store import Publication, ReceiptRecord
from filterd.sync.model import AuditHead, format_time


@dataclass(frozen=True, slots=True)
class NodeStatus:
    operator: str
    node: str
    list_id: str
    enforced_serial: int
    published_serial: int | None
    """The latest serial of the list (None: the list was never published)."""
    serials_behind: int | None
    applied_at: datetime
    published_at: datetime | None
    """Publication time of the enforced serial (None: unknown to the history)."""
    lag_seconds: int | None
    sha256: str
    sha256_matches: bool | None
    """None when the enforced serial is unknown to the history."""
    entries: int
    software: str
    last_seen: datetime
    overdue_seconds: int | None = None
    """Seconds since the first serial the node has not acknowledged was
    published (None: up to date, or the history is unknown)."""
    signed: bool = False
    """The latest receipt was signed by the node's registered key."""
    audit_head: AuditHead | None = None
    """The node's audit head in that receipt: its latest anchor."""

    @property
    def compliant(self) -> bool:
        return self.serials_behind == 0 and self.sha256_matches is True

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "node": self.node,
            "list": self.list_id,
            "enforced_serial": self.enforced_serial,
            "published_serial": self.published_serial,
            "serials_behind": self.serials_behind,
            "applied_at": format_time(self.applied_at),
            "published_at": _time(self.published_at),
            "lag_seconds": self.lag_seconds,
            "sha256": self.sha256,
            "sha256_matches": self.sha256_matches,
            "entries": self.entries,
            "software": self.software,
            "last_seen": format_time(self.last_seen),
            "compliant": self.compliant,
            "overdue_seconds": self.overdue_seconds,
            "signed": self.signed,
            "audit_head": self.audit_head.to_json() if self.audit_head is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: datetime
    lists: dict[str, Publication | None]
    """Each list's latest publication."""
    nodes: list[NodeStatus]
    silent_operators: list[str]
    """Registered operators with no receipt at all."""

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": format_time(self.generated_at),
            "lists": {
                list_id: None
                if latest is None
                else {
                    "serial": latest.serial,
                    "published_at": format_time(latest.published_at),
                    "sha256": latest.sha256,
                    "entries": latest.entries,
                }
                for list_id, latest in self.lists.items()
            },
            "nodes": [node.to_json() for node in self.nodes],
            "silent_operators": self.silent_operators,
        }


def latest_receipts(
    records: Iterable[ReceiptRecord],
) -> dict[tuple[str, str, str], ReceiptRecord]:
    """The last receipt received from each (operator, node, list)."""
    latest: dict[tuple[str, str, str], ReceiptRecord] = {}
    for record in records:
        r = record.receipt
        latest[(record.authenticated_operator, r.node, r.list_id)] = record
    return latest


def build_report(
    histories: dict[str, list[Publication]],
    operators: Iterable[str],
    latest: dict[tuple[str, str, str], ReceiptRecord],
    now: datetime,
) -> Report:
    """The compliance report; receipts of operators no longer registered are left out."""
    registered = set(operators)
    nodes = []
    heard = set()
    for (operator, node, list_id), record in sorted(latest.items()):
        if operator not in registered:
            continue
        heard.add(operator)
        receipt = record.receipt
        history = histories.get(list_id, [])
        by_serial = {p.serial: p for p in history}
        published = history[-1].serial if history else None
        enforced = by_serial.get(receipt.serial)
        pending = [p.published_at for p in history if p.serial > receipt.serial]
        overdue = int((now - min(pending)).total_seconds()) if pending else None
        nodes.append(
            NodeStatus(
                operator=operator,
                node=node,
                list_id=list_id,
                enforced_serial=receipt.serial,
                published_serial=published,
                serials_behind=None if published is None else published - receipt.serial,
                applied_at=receipt.applied_at,
                published_at=enforced.published_at if enforced else None,
                lag_seconds=None
                if enforced is None
                else int((receipt.applied_at - enforced.published_at).total_seconds()),
                sha256=receipt.sha256,
                sha256_matches=None if enforced is None else enforced.sha256 == receipt.sha256,
                entries=receipt.entries,
                software=receipt.software,
                last_seen=record.received_at,
                overdue_seconds=overdue,
                signed=record.signed,
                audit_head=receipt.audit_head,
            )
        )
    return Report(
        generated_at=now,
        lists={list_id: (h[-1] if h else None) for list_id, h in sorted(histories.items())},
        nodes=nodes,
        silent_operators=sorted(registered - heard),
    )


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


_STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #999; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
tr.late td { background: #fff3cd; }
tr.wrong td { background: #f8d7da; }
"""

_COLUMNS = (
    "Operator",
    "Node",
    "List",
    "Enforced serial",
    "Published serial",
    "Serials behind",
    "Overdue (s)",
    "Lag (s)",
    "SHA-256 matches",
    "Last seen",
    "Software",
    "Signed",
    "Audit head (seq, time)",
)


def render_html(report: Report) -> str:
    """The report as one self-contained page (escaped values, no script)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>filterd authority: compliance</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Compliance</h1>",
        f"<p>Generated {e(format_time(report.generated_at))}.</p>",
        "<h2>Lists</h2>",
        "<table><tr><th>List</th><th>Serial</th><th>Published</th><th>Entries</th></tr>",
    ]
    for list_id, latest in report.lists.items():
        if latest is None:
            parts.append(f"<tr><td>{e(list_id)}</td><td colspan=3>not published</td></tr>")
        else:
            parts.append(
                f"<tr><td>{e(list_id)}</td><td>{latest.serial}</td>"
                f"<td>{e(format_time(latest.published_at))}</td><td>{latest.entries}</td></tr>"
            )
    parts.append("</table><h2>Nodes</h2>")
    parts.append('<table id="nodes"><tr>' + "".join(f"<th>{c}</th>" for c in _COLUMNS) + "</tr>")
    for node in report.nodes:
        state = "ok" if node.compliant else ("wrong" if node.sha256_matches is False else "late")
        cells = (
            node.operator,
            node.node,
            node.list_id,
            str(node.enforced_serial),
            _text(node.published_serial),
            _text(node.serials_behind),
            _text(node.overdue_seconds),
            _text(node.lag_seconds),
            {True: "yes", False: "NO", None: "unknown serial"}[node.sha256_matches],
            format_time(node.last_seen),
            node.software,
            "yes" if node.signed else "NO (unsigned)",
            "-"
            if node.audit_head is None
            else f"{node.audit_head.seq}, {format_time(node.audit_head.time)}",
        )
        parts.append(f'<tr class="{state}">' + "".join(f"<td>{e(c)}</td>" for c in cells))
        parts.append("</tr>")
    parts.append("</table><h2>Operators without any receipt</h2>")
    if report.silent_operators:
        items = "".join(f"<li>{e(op)}</li>" for op in report.silent_operators)
        parts.append(f'<ul id="silent">{items}</ul>')
    else:
        parts.append("<p>None.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)
