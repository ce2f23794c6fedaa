"""The report's arithmetic, its dates and its three renderings, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from filterd.audit.chain import encode_record, line_hash
from filterd.audit.render import render
from filterd.audit.report import ReportBuilder, parse_date
from filterd.audit.trail import TrailWriter
from filterd.audit.verify import verify
from filterd.cli import main

DAY = datetime(2026, 11, 23, tzinfo=UTC)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def stats(queries: int, gambling: int, malware: int = 0, boundary: float | None = None) -> Any:
    fields: dict[str, Any] = {
        "boundary": f"{at(boundary).isoformat()}" if boundary is not None else None,
        "queries": {"udp": {"A": {"forwarded": queries - gambling - malware,
                                  "blocked": gambling + malware, "truncated": 1}}},
        "blocked": [
            {"list": "national", "category": "gambling", "action": "nxdomain", "count": gambling},
            {"list": "local", "category": "malware", "action": "nxdomain", "count": malware},
        ],
    }  # fmt: skip
    return "stats", fields


def lists(national: str) -> Any:
    rows = [
        {"name": "national", "version": national, "sha256": "ab" * 32, "format": "native",
         "entries": 2, "accepted": 2, "mandatory": True},
        {"name": "local", "version": "0123456789ab", "sha256": None, "format": "domains",
         "entries": 1, "accepted": 1, "mandatory": False},
    ]  # fmt: skip
    return "lists", {"generation": 1, "cause": "start", "lists": rows}


def applied(serial: int, lag: float) -> Any:
    return "sync_applied", {
        "list": "national", "serial": serial, "sha256": "cd" * 32, "entries": 3,
        "published_at": "2026-11-23T01:29:00Z", "applied_at": "2026-11-23T01:30:00Z",
        "lag_seconds": lag, "lag_sla_seconds": 60.0, "via": "delta",
    }  # fmt: skip


def rejected(reason: str) -> Any:
    return "sync_rejected", {"list": "national", "reason": reason, "message": "m",
                             "enforced_serial": 2, "authority_serial": 3}  # fmt: skip


# Two runs: the first stops cleanly, the second crashes after its first
# hourly record (counters restart from zero in it).
HISTORY = [
    (0.0, ("start", {"version": "0.1.0", "config": None, "node": "n1", "pid": 1})),
    (0.0, lists("1")),
    (1.0, stats(10, 2, 1, boundary=1.0)),
    (1.5, applied(2, 30.0)),
    (1.5, lists("2")),
    (1.6, rejected("network")),
    (1.7, rejected("hash")),
    (1.8, ("reload", {"result": "failure", "generation": 2, "error": "bad"})),
    (1.9, ("reload", {"result": "success", "generation": 3, "error": None})),
    (2.0, stats(15, 4, 1)),
    (2.0, ("stop", {"clean": True, "error": None})),
    (3.0, ("start", {"version": "0.1.0", "config": None, "node": "n1", "pid": 2})),
    (3.0, lists("2")),
    (3.2, applied(3, 120.0)),
    (3.2, lists("3")),
    (4.0, stats(5, 1, 0, boundary=4.0)),
]


def write_history(path: Path, history: list[tuple[float, Any]] = HISTORY) -> None:
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(0))
    for hours, (event, fields) in history:
        writer.append(event, fields, at(hours))
    writer.close()


def report_of(path: Path, start: float, end: float, sla: float | None = None) -> dict[str, Any]:
    builder = ReportBuilder(at(start), at(end), sla)
    result = verify(path, on_record=builder.add)
    return builder.build(result)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_history(path)
    return path


# ------------------------------------------------------------- arithmetic


def test_counts_add_up_across_a_restart(trail: Path) -> None:
    report = report_of(trail, 0, 24)
    assert report["trail"]["ok"]
    assert report["queries"] == {
        "total": 20,
        "by_outcome": {"blocked": 6, "forwarded": 14},
        "by_protocol": {"udp": 20},
        "by_qtype": {"A": 20},
        "truncated": 2,  # 1 in each run (the second run's counters start from zero)
    }
    assert report["blocked"]["by_category"] == [
        {"category": "gambling", "count": 5},
        {"category": "malware", "count": 1},
    ]
    assert report["blocked"]["by_list"] == [
        {"list": "local", "count": 1},
        {"list": "national", "count": 5},
    ]
    assert report["blocked"]["total"] == 6


def test_a_window_counts_the_increase_of_the_records_inside_it(trail: Path) -> None:
    # (1h, 24h]: the 1h record is the window's baseline, not part of it.
    report = report_of(trail, 1, 24)
    assert report["queries"]["total"] == 5 + 5
    assert report["blocked"]["by_category"][0] == {"category": "gambling", "count": 2 + 1}
    # (0h, 1h]: only the first hourly record.
    assert report_of(trail, 0, 1)["queries"]["total"] == 10


def test_a_counter_that_drops_without_a_start_counts_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_history(path, [*HISTORY[:3], (1.2, stats(4, 1)), (1.4, stats(6, 1))])
    report = report_of(path, 0, 24)
    assert report["queries"]["total"] == 10 + 4 + 2


def test_hours_enforced_per_list_and_version(trail: Path) -> None:
    report = report_of(trail, 0, 24)
    national = next(lst for lst in report["lists"] if lst["list"] == "national")
    assert national["mandatory"] is True
    versions = {v["version"]: v for v in national["versions"]}
    assert versions["1"]["hours"] == 1.5
    assert versions["2"]["hours"] == pytest.approx(0.5 + 0.2)  # across two runs
    assert versions["3"]["hours"] == pytest.approx(0.8)  # the crash: up to the last record
    assert versions["1"]["sha256"] == "ab" * 32
    assert national["hours_enforced"] == pytest.approx(3.0)
    local = next(lst for lst in report["lists"] if lst["list"] == "local")
    assert local["hours_enforced"] == pytest.approx(3.0)
    # exact intervals, not first-seen/last-seen: version 2 was enforced in
    # both runs, not while the node was down in between
    assert versions["2"]["intervals"] == [
        {"from": "2026-11-23T01:30:00.000Z", "to": "2026-11-23T02:00:00.000Z", "seconds": 1800.0},
        {"from": "2026-11-23T03:00:00.000Z", "to": "2026-11-23T03:12:00.000Z", "seconds": 720.0},
    ]
    assert versions["1"]["intervals"] == [
        {"from": "2026-11-23T00:00:00.000Z", "to": "2026-11-23T01:30:00.000Z", "seconds": 5400.0}
    ]
    assert national["gaps"] == [
        {"from": "2026-11-23T02:00:00.000Z", "to": "2026-11-23T03:00:00.000Z", "seconds": 3600.0}
    ]
    assert (national["from"], national["to"]) == (
        "2026-11-23T00:00:00.000Z",
        "2026-11-23T04:00:00.000Z",
    )
    runs = report["runs"]
    assert [r["end"] for r in runs] == ["stop", "open"]
    assert [r["serving_hours"] for r in runs] == [2.0, 1.0]
    # Clipped to a window that starts in the middle of the first run.
    clipped = report_of(trail, 1.75, 3.5)
    national = next(lst for lst in clipped["lists"] if lst["list"] == "national")
    assert national["hours_enforced"] == pytest.approx(0.25 + 0.5)


def test_updates_against_the_sla_failures_and_reloads(trail: Path) -> None:
    report = report_of(trail, 0, 24)
    assert [(u["serial"], u["lag_seconds"], u["sla_met"]) for u in report["updates"]] == [
        (2, 30.0, True),
        (3, 120.0, False),
    ]
    assert report["sla"] == {"updates": 2, "met": 1, "missed": 1, "max_lag_seconds": 120.0}
    assert report_of(trail, 0, 24, sla=300)["sla"]["missed"] == 0
    assert report["sync_failures"] == [
        {"list": "national", "reason": "hash", "count": 1},
        {"list": "national", "reason": "network", "count": 1},
    ]
    assert [r["reason"] for r in report["rejected_updates"]] == ["hash"]
    assert report["reloads"]["success"] == 1 and report["reloads"]["failure"] == 1
    assert report_of(trail, 2, 24)["updates"][0]["serial"] == 3


def test_blocked_top_is_summed_when_present(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    event, fields = stats(3, 3)
    fields["blocked_top"] = [{"name": "casino.example", "category": "gambling", "count": 3}]
    write_history(path, [*HISTORY[:2], (1.0, (event, fields))])
    assert report_of(path, 0, 24)["blocked_top"] == [
        {"name": "casino.example", "category": "gambling", "count": 3}
    ]
    assert "blocked_top" not in report_of(tmp_path / "audit.jsonl", 5, 24)


def test_blocked_top_is_not_counted_twice_across_records_without_it(tmp_path: Path) -> None:
    """The privacy floor leaves names out of most records: the increase of a
    name runs from the last record that had names, not from zero."""
    path = tmp_path / "audit.jsonl"
    history = list(HISTORY[:2])
    for hours, count, named in [(1.0, 3, True), (1.5, 4, False), (2.0, 5, True)]:
        event, fields = stats(10, count, boundary=hours)
        if named:
            fields["blocked_top"] = [{"name": "casino.example", "category": "gambling",
                                      "count": count}]  # fmt: skip
        history.append((hours, (event, fields)))
    write_history(path, history)
    assert report_of(path, 0, 24)["blocked_top"] == [
        {"name": "casino.example", "category": "gambling", "count": 5}
    ]


# ------------------------------------------------------------------ dates


def test_dates() -> None:
    assert parse_date("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_date("2026-11-30", end=True) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_date("2026-11-01T07:00:00+07:00") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_date("2026-11-01T00:00:00.5Z") == datetime(2026, 11, 1, 0, 0, 0, 500000, UTC)
    for bad in ("2026-13-01", "yesterday", "2026-11-01T00:00:00", "20261101"):
        with pytest.raises(ValueError, match="not a date"):
            parse_date(bad)


# -------------------------------------------------------------- rendering


def test_json_csv_and_html(trail: Path) -> None:
    report = report_of(trail, 0, 24)
    assert json.loads(render(report, "json")) == report
    rows = list(csv.reader(io.StringIO(render(report, "csv"))))
    assert rows[0] == ["section", "row", "field", "value"]
    assert ["queries", "", "total", "20"] in rows
    assert ["blocked.by_category", "1", "count", "5"] in rows
    assert ["lists", "2", "list", "national"] in rows
    assert ["lists.versions", "2_1", "version", "1"] in rows
    assert ["lists.versions.intervals", "2_2_2", "from", "2026-11-23T03:00:00.000Z"] in rows
    page = render(report, "html")
    assert page.startswith("<!DOCTYPE html>")
    root = ET.fromstring(page.split("\n", 1)[1])  # well-formed XML after the doctype
    titles = [h.text for h in root.iter("h2")]
    assert "Lists enforced" in titles and "Blocked answers by category" in titles
    assert "Versions enforced, interval by interval" in titles
    verdict = next(p for p in root.iter("p") if p.get("class") == "ok")
    assert verdict.text is not None and verdict.text.startswith(
        "The hash chain of records seq 1..16 is intact and ends at the node's own head; "
        "no anchors were given"
    )
    assert len(list(root.iter("table"))) == len(titles)
    assert not list(root.iter("script"))


# -------------------------------------------------------------------- CLI


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_verify_and_report(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "audit", "verify", "--path", str(trail))
    assert status == 0 and out.startswith(f"ok: {len(HISTORY)} records, seq 1..") and not err
    anchor = f"3:{line_hash(trail.read_bytes().splitlines()[2])}"
    assert run(capsys, "audit", "verify", "--path", str(trail), "--expect", anchor)[0] == 0
    status, out, _ = run(capsys, "report", "--from", "2026-11-23", "--to", "2026-11-23",
                         "--path", str(trail))  # fmt: skip
    assert status == 0 and json.loads(out)["queries"]["total"] == 20
    output = trail.parent / "report.html"
    status, out, _ = run(capsys, "report", "--from", "2026-11-23", "--to", "2026-11-24",
                         "--format", "html", "--path", str(trail), "-o", str(output))  # fmt: skip
    assert status == 0 and not out and output.read_text().startswith("<!DOCTYPE html>")


def test_cli_reports_a_broken_trail_in_one_line(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = trail.read_bytes().splitlines(keepends=True)
    content[4] = content[4].replace(b"national", b"nationak")
    trail.write_bytes(b"".join(content))
    status, out, err = run(capsys, "audit", "verify", "--path", str(trail))
    assert status == 1 and out.startswith(f"{trail}:5: record seq 5 altered") and not err
    status, out, err = run(capsys, "report", "--from", "2026-11-23", "--to", "2026-11-23",
                           "--path", str(trail))  # fmt: skip
    assert status == 0 and json.loads(out)["trail"]["ok"] is False
    problems = err.splitlines()
    assert len(problems) == 2 and "does not verify" in problems[0]
    assert problems[1].startswith("filterd: warning: report not signed: no node key in ")


def bad_usage() -> Iterator[tuple[list[str], str]]:
    yield ["report", "--from", "2026-13-01", "--to", "2026-12-01"], "is not a date"
    yield ["report", "--from", "2026-12-02", "--to", "2026-12-01"], "is not after"
    yield ["report", "--from", "2026-12-01", "--to", "2026-12-02", "--sla", "-1"], "--sla"
    yield ["audit", "verify", "--expect", "12:abc"], "not SEQ:HASH"


@pytest.mark.parametrize(("argv", "message"), list(bad_usage()))
def test_cli_bad_input_is_one_line_and_status_2(
    argv: list[str], message: str, trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *argv, "--path", str(trail))
    assert status == 2 and not out
    assert err.count("\n") == 1 and err.startswith("filterd: ") and message in err


def test_cli_config_errors_and_missing_trail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "filterd.yaml"
    config.write_text("audit: {keep: -1}\nupstream: {servers: ['192.0.2.1']}\n")
    status, _, err = run(capsys, "audit", "verify", "-c", str(config))
    assert status == 2 and err == f"filterd: {config}:1: audit.keep: must be between 0 and " \
        "100000, got -1\n"  # fmt: skip
    config.write_text("state_dir: state\nupstream: {servers: ['192.0.2.1']}\n")
    status, out, _ = run(capsys, "audit", "verify", "-c", str(config))
    assert status == 1 and out == f"{tmp_path}/state/audit/audit.jsonl: no audit trail here\n"


def test_csv_row_keys_never_collide(tmp_path: Path) -> None:
    """Eleven versions of one list: the 1st and the 10th used to be ``1.1``
    and ``1.10``, one number to every spreadsheet."""
    path = tmp_path / "audit.jsonl"
    history = [HISTORY[0]] + [(0.1 * n, lists(str(n))) for n in range(1, 12)]
    write_history(path, [*history, (2.0, ("stop", {"clean": True, "error": None}))])
    rows = list(csv.reader(io.StringIO(render(report_of(path, 0, 24), "csv"))))
    keys = {row[1] for row in rows if row[0] == "lists.versions"}
    assert {"2_1", "2_10", "2_11"} <= keys
    assert len({float(key.replace("_", ".")) for key in keys}) < len(keys)  # as it was
    versions = [row for row in rows if row[0] == "lists.versions" and row[2] == "version"]
    assert len(versions) == len({row[1] for row in versions}) == 11 + 1  # national, local


def test_a_forged_append_is_left_out_of_the_report(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hand check of the issue: one forged, correctly chained stats record
    appended with the head left alone must not show up as verified counts."""
    honest = report_of(trail, 0, 24)
    last = trail.read_bytes().splitlines()[-1]
    event, fields = stats(500_005, 500_001, 0)
    forged = encode_record(17, at(4.5), event, fields, line_hash(last))
    with trail.open("ab") as file:
        file.write(forged + b"\n")
    status, out, err = run(capsys, "report", "--from", "2026-11-23", "--to", "2026-11-23",
                           "--path", str(trail))  # fmt: skip
    report = json.loads(out)
    assert status == 0 and "does not verify: unverified: " in err
    assert report["queries"] == honest["queries"] and report["blocked"] == honest["blocked"]
    assert report["trail"]["verdict"] == "unverified" and report["trail"]["ok"] is False
    assert [row["seq"] for row in report["trail"]["unverified"]] == [17]
    assert "except seq 17: vouched for by nothing" in report["trail"]["statement"]
    status, out, _ = run(capsys, "report", "--from", "2026-11-23", "--to", "2026-11-23",
                         "--format", "html", "--path", str(trail))  # fmt: skip
    assert "The audit trail verifies" not in out and "vouched for by nothing" in out
