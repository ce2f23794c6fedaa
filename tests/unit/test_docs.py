"""The operator's references stay true to the code: every configuration key
and every exported metric is documented.

A key or a metric added without its line in docs/ is an option nobody can
find and an alert nobody can write; these tests fail on the omission.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from filterd.audit.recorder import AuditRecorder
from filterd.authority.compliance import Report, build_report, latest_receipts
from filterd.authority.metrics import build_registry as authority_registry
from filterd.authority.store import ReceiptRecord
from filterd.blockpage.server import BlockPageMetrics
from filterd.config import AuditConfig, Config, ListConfig, SyncConfig
from filterd.config.groups import GroupConfig, ProfileConfig, Window
from filterd.metrics import SupervisorState, build_registry
from filterd.pipeline.tally import Counters
from filterd.stats import WorkerStats
from filterd.sync.model import Receipt
from filterd.sync.status import ListStatus

DOCS = Path(__file__).resolve().parents[2] / "docs"
# Keys the code keeps that are not configuration: where the file was read from.
NOT_KEYS = {"source"}


def section_rows(text: str, section: str) -> set[str]:
    """Backticked names that open a table row under ``## `section```."""
    match = re.search(rf"^## `{re.escape(section)}`\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/configuration.md has no section `{section}`"
    return set(re.findall(r"^\| `([a-z_.]+)", match[1], re.M))


def test_every_configuration_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = []
    for section in dataclasses.fields(Config):
        if section.name in NOT_KEYS:
            continue
        sample = getattr(Config(), section.name)
        # Sequences of entries: a list's keys, an authority's (those of sync),
        # a group's, a profile's, a schedule window's.
        entries = {
            "lists": ListConfig,
            "authorities": SyncConfig,
            "groups": GroupConfig,
            "profiles": ProfileConfig,
            "schedules": Window,
        }
        cls = entries.get(section.name, type(sample))
        if not dataclasses.is_dataclass(cls):
            assert f"## `{section.name}`" in text, section.name  # a plain top-level key
            continue
        documented = section_rows(text, "sync" if section.name == "authorities" else section.name)
        for key in dataclasses.fields(cls):
            if not any(row == key.name or row.startswith(key.name + ".") for row in documented):
                missing.append(f"{section.name}.{key.name}")
    assert not missing, f"undocumented in docs/configuration.md: {missing}"


def authority_report() -> Report:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    receipt = Receipt("vnpt", "r1", "national", 1, now, "0" * 64, 1, "filterd")
    records = latest_receipts([ReceiptRecord(receipt, now, "vnpt")])
    return build_report({"national": []}, ["vnpt"], records, now)


def test_every_exported_metric_is_documented(tmp_path: Path) -> None:
    """Every family the registry can export (with a synced list, a worker
    report and the audit writer present), every family of the authority's
    registry (with a node that sent a receipt) and of the block page has a
    row in docs/metrics.md."""
    documented = set(
        re.findall(r"^\| `(filterd_[a-z0-9_]+)`", (DOCS / "metrics.md").read_text(), re.M)
    )
    state = SupervisorState(sync_limits=(3600.0, 3600.0))
    stats = WorkerStats(queries=Counters().queries(), latency=Counters().latency())
    audit = AuditRecorder(AuditConfig(enabled=False), tmp_path)
    registry = build_registry(state, lambda: stats, lambda: [ListStatus("national")], audit)
    authority = authority_registry(authority_report, {"accepted": 1, "refused": 0})
    page = CollectorRegistry()
    BlockPageMetrics(page)
    exported = set()
    for scraped in (registry, authority, page):
        for family in text_string_to_metric_families(generate_latest(scraped).decode()):
            name = family.name + ("_total" if family.type == "counter" else "")
            exported.add(name)
    assert not exported - documented, f"undocumented in docs/metrics.md: {exported - documented}"
    assert not documented - exported, f"documented but never exported: {documented - exported}"
