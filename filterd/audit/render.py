"""The report as JSON, CSV or a self-contained HTML page.

- JSON is the report itself (report.py), for machines and for the record.
- CSV is *long*: one rectangular table ``section,row,field,value`` that
  every spreadsheet and CSV tool reads without knowing where one table
  ends, and that a pivot turns back into any table (``row`` numbers the
  items of a list section, ``1_2`` for the second version of the first list:
  not ``1.2``, which a spreadsheet reads as the number that ``1.20`` also is).
- HTML is one page, inline CSS, no script and nothing fetched: it can be
  mailed, archived or printed to PDF as it is. It is also well-formed XML
  (after the doctype), which keeps it easy to check.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from html import escape
from typing import Any, Final

FORMATS: Final = ("json", "csv", "html")


def render(report: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format {fmt!r}")


# -------------------------------------------------------------------- CSV


def render_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "row", "field", "value"])
    for section, value in report.items():
        writer.writerows(_flatten(section, "", value))
    return out.getvalue()


def _flatten(section: str, row: str, value: Any) -> Iterator[list[str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list):
                yield from _flatten(f"{section}.{key}", row, item)
            else:
                yield [section, row, str(key), _cell(item)]
    elif isinstance(value, list):
        for i, item in enumerate(value, 1):
            number = f"{row}_{i}" if row else str(i)  # "2_10" is not "2_1"; "2.10" was
            if isinstance(item, Mapping | list):
                yield from _flatten(section, number, item)
            else:
                yield [section, number, "", _cell(item)]
    else:
        yield [section, row, "", _cell(value)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ------------------------------------------------------------------- HTML

STYLE: Final = """
body { font-family: sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.4em 0; }
th, td { border: 1px solid #999; padding: 0.2em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #a00; font-weight: bold; } .ok { color: #060; }
code { font-size: 0.9em; word-break: break-all; }
"""


RUN_COLUMNS: Final = ("started", "ended", "end", "version", "node", "serving_hours", "error")
UPDATE_COLUMNS: Final = (
    "list", "serial", "entries", "published_at", "applied_at", "via", "lag_seconds",
    "sla_seconds", "sla_met", "sha256",
)  # fmt: skip
REJECTED_COLUMNS: Final = ("time", "list", "reason", "enforced_serial", "message")
RELOAD_COLUMNS: Final = ("time", "result", "generation", "error")


def render_html(report: Mapping[str, Any]) -> str:
    head = report["report"]
    title = f"filterd report {head['from']} to {head['to']}"
    queries = report["queries"]
    blocked = report["blocked"]
    intervals = sorted(
        (
            [lst["list"], lst["mandatory"], v["version"], v["sha256"], *_pick(i, SPAN_COLUMNS)]
            for lst in report["lists"]
            for v in lst["versions"]
            for i in v["intervals"]
        ),
        key=lambda row: (row[0], row[4]),
    )
    gaps = [[lst["list"], *_pick(g, SPAN_COLUMNS)] for lst in report["lists"] for g in lst["gaps"]]
    totals = [_pick(lst, LIST_COLUMNS) for lst in report["lists"]]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _table("Report", ["field", "value"], list(head.items())),
        _trail(report["trail"]),
        _table("Runs", RUN_COLUMNS, [_pick(r, RUN_COLUMNS) for r in report["runs"]]),
        _table("Lists enforced", LIST_COLUMNS, totals),
        _table(
            "Versions enforced, interval by interval",
            ["list", "mandatory", "version", "sha256", *SPAN_COLUMNS],
            intervals,
        ),
        _table(
            "Gaps: lists not enforced (node down or not serving)", ["list", *SPAN_COLUMNS], gaps
        ),
        _table(
            "Authority updates and enforcement lag",
            UPDATE_COLUMNS,
            [_pick(u, UPDATE_COLUMNS) for u in report["updates"]],
        ),
        _table("Lag SLA", ["field", "value"], list(report["sla"].items())),
        _table(
            "Sync failures",
            ["list", "reason", "count"],
            [_pick(f, ("list", "reason", "count")) for f in report["sync_failures"]],
        ),
        _table(
            "Rejected updates",
            REJECTED_COLUMNS,
            [_pick(r, REJECTED_COLUMNS) for r in report["rejected_updates"]],
        ),
        _table(
            "Configuration reloads",
            RELOAD_COLUMNS,
            [_pick(r, RELOAD_COLUMNS) for r in report["reloads"]["events"]],
        ),
        _table(
            "Queries",
            ["outcome", "count"],
            [
                *queries["by_outcome"].items(),
                ("total", queries["total"]),
                ("truncated (also counted above)", queries["truncated"]),
            ],
        ),
        _table(
            "Blocked answers by category",
            ["category", "count"],
            [
                *(_pick(r, ("category", "count")) for r in blocked["by_category"]),
                ("total", blocked["total"]),
            ],
        ),
        _table(
            "Blocked answers by list",
            ["list", "count"],
            [_pick(r, ("list", "count")) for r in blocked["by_list"]],
        ),
    ]
    if "blocked_top" in report:
        columns = ("name", "category", "count")
        rows = [_pick(r, columns) for r in report["blocked_top"]]
        parts.append(_table("Most blocked names", columns, rows))
    if report["trail_events"]:
        rows = [
            [e["time"], e["seq"], e["event"], json.dumps(_details(e), ensure_ascii=False)]
            for e in report["trail_events"]
        ]
        parts.append(_table("Trail events", ["time", "seq", "event", "details"], rows))
    parts.append("</body></html>\n")
    return "\n".join(parts)


SPAN_COLUMNS: Final = ("from", "to", "seconds")
LIST_COLUMNS: Final = ("list", "mandatory", "from", "to", "hours_enforced", "seconds_enforced")


def _pick(row: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    return [row.get(column) for column in columns]


def _details(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("time", "seq", "event")}


def _trail(trail: Mapping[str, Any]) -> str:
    css = "ok" if trail["verdict"] == "ok" else "bad"
    verdict = f'<p class="{css}">{escape(str(trail["statement"]))}</p>'
    shown = ("verdict", "records", "first_seq", "last_seq", "head", "anchors_checked",
             "anchored_seq", "anchored_at")  # fmt: skip
    rows = [[key, trail[key]] for key in shown]
    if trail["not_yet_anchored"]:
        first, last = trail["not_yet_anchored"]
        rows.append(["not yet anchored", f"seq {first}..{last}"])
    rows += [["unverified", f"seq {row['seq']}: {row['why']}"] for row in trail["unverified"]]
    rows += [["note", note] for note in trail["notes"]]
    return verdict + "\n" + _table("Audit trail", ["field", "value"], rows)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = (
        "\n".join("<tr>" + "".join(_td(value) for value in row) + "</tr>" for row in rows)
        or f'<tr><td colspan="{len(columns)}">none</td></tr>'
    )
    return f"<h2>{escape(title)}</h2>\n<table><tr>{head}</tr>\n{body}\n</table>"


def _td(value: Any) -> str:
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | float):
        return f'<td class="n">{value}</td>'
    if isinstance(value, str) and len(value) == 64 and value.isalnum():
        return f"<td><code>{value}</code></td>"
    return f"<td>{escape(_cell(value))}</td>"
