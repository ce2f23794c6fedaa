"""The compliance report: serials behind, lag, hash check, silent operators, HTML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from filterd.authority.compliance import build_report, latest_receipts, render_html
from filterd.authority.metrics import build_registry
from filterd.authority.store import Publication, ReceiptRecord
from filterd.sync.model import Receipt

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
HISTORY = [
    Publication(1, T0, "1" * 64, 10),
    Publication(2, T0 + timedelta(hours=1), "2" * 64, 11),
    Publication(3, T0 + timedelta(hours=2), "3" * 64, 12),
]


def record(operator: str, node: str, serial: int, applied: timedelta, sha: str) -> ReceiptRecord:
    receipt = Receipt(operator, node, "national", serial, T0 + applied, sha, 10, "filterd 0.1.0")
    return ReceiptRecord(receipt, T0 + applied + timedelta(seconds=1), operator)


def test_report() -> None:
    records = [
        record("vnpt", "r1", 1, timedelta(seconds=30), "1" * 64),
        record("vnpt", "r1", 3, timedelta(hours=2, seconds=4), "3" * 64),  # latest wins
        record("vnpt", "r2", 2, timedelta(hours=1, minutes=2), "f" * 64),  # wrong list
        record("fpt", "<b>x</b>", 9, timedelta(hours=3), "9" * 64),  # serial never published
        record("gone", "r1", 3, timedelta(hours=3), "3" * 64),  # operator since removed
    ]
    report = build_report(
        {"national": HISTORY, "province-hn": []},
        ["vnpt", "fpt", "viettel"],
        latest_receipts(records),
        T0 + timedelta(hours=5),
    )
    rows = {(n.operator, n.node): n.to_json() for n in report.nodes}
    assert set(rows) == {("vnpt", "r1"), ("vnpt", "r2"), ("fpt", "<b>x</b>")}
    r1 = rows[("vnpt", "r1")]
    assert (r1["enforced_serial"], r1["published_serial"], r1["serials_behind"]) == (3, 3, 0)
    assert (r1["lag_seconds"], r1["sha256_matches"], r1["compliant"]) == (4, True, True)
    assert r1["last_seen"] == "2026-11-23T12:00:05Z"
    r2 = rows[("vnpt", "r2")]
    assert (r2["serials_behind"], r2["lag_seconds"], r2["sha256_matches"]) == (1, 120, False)
    assert r2["published_at"] == "2026-11-23T11:00:00Z" and not r2["compliant"]
    # r2 never acknowledged serial 3, published at 12:00: three hours overdue at 15:00
    assert (r1["overdue_seconds"], r2["overdue_seconds"]) == (None, 3 * 3600)
    assert (r1["signed"], r1["audit_head"]) == (False, None)
    unknown = rows[("fpt", "<b>x</b>")]
    assert (unknown["serials_behind"], unknown["lag_seconds"], unknown["sha256_matches"]) == (
        -6,
        None,
        None,
    )
    assert report.silent_operators == ["viettel"]
    document = report.to_json()
    assert document["lists"]["national"]["serial"] == 3
    assert document["lists"]["province-hn"] is None


def test_html_escapes_everything_and_has_no_script() -> None:
    records = [record("fpt", "<script>alert(1)</script>", 3, timedelta(hours=2), "3" * 64)]
    page = render_html(
        build_report({"national": HISTORY}, ["fpt", "a&b"], latest_receipts(records), T0)
    )
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<li>a&amp;b</li>" in page
    assert page.startswith("<!DOCTYPE html>")


def test_the_authority_metrics_say_what_the_view_says_and_are_documented() -> None:
    records = [
        record("vnpt", "r1", 3, timedelta(hours=2, seconds=4), "3" * 64),
        record("vnpt", "r2", 2, timedelta(hours=1, minutes=2), "2" * 64),
    ]
    report = build_report({"national": HISTORY}, ["vnpt", "fpt"], latest_receipts(records),
                          T0 + timedelta(hours=5))  # fmt: skip
    text = generate_latest(build_registry(lambda: report, {"accepted": 2, "refused": 1})).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in text_string_to_metric_families(text)
        for s in metric.samples
    }
    r2 = (("list", "national"), ("node", "r2"), ("operator", "vnpt"))
    assert samples[("filterd_authority_node_overdue_seconds", r2)] == 3 * 3600
    assert samples[("filterd_authority_node_serials_behind", r2)] == 1
    assert samples[("filterd_authority_node_receipt_signed", r2)] == 0
    assert samples[("filterd_authority_operators_silent", ())] == 1
    assert samples[("filterd_authority_receipts_total", (("result", "refused"),))] == 1
    documented = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    names = {metric.name for metric in text_string_to_metric_families(text)}
    missing = [n for n in names if f"`{n}`" not in documented and f"`{n}_total`" not in documented]
    assert not missing, f"not in docs/metrics.md: {missing}"
