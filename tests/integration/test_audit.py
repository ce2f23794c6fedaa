"""End to end: the audit trail of a real filterd, verified and reported on.

Two runs of the daemon against a real upstream and the FakeAuthority: real
traffic (blocked in several categories, allowed, over UDP and TCP), a good
and a bad SIGHUP, an authority update pushed and applied, a refused update,
SIGTERM, then a restart with more traffic. ``filterd audit verify`` must
accept the trail, and ``filterd report`` must give exactly the numbers
``/metrics`` showed just before each SIGTERM, summed over the two runs
(the counters restart from zero in between).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from filterd.audit.chain import read_head
from filterd.sync.model import sha256_hex
from filterd.sync.snapshot import make_entry
from tests.integration.conftest import DaemonFactory
from tests.integration.daemon import FILTERD, Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.authority import TOKEN, Canned, FakeAuthority
from tests.peers.browser import rendered_dom
from tests.peers.processes import wait_until

BASE = [
    make_entry("casino.example", "block", "gambling", "QD-1"),
    make_entry("adult.example", "block", "adult", "QD-2"),
]
SAMPLE = re.compile(r"(\w+)\{(.*)\}")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def config(upstream: FakeUpstream, authority: FakeAuthority) -> str:
    return f"""
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.1/32"]}}
upstream: {{servers: ["{upstream.endpoint}"], timeout: 0.5, deadline: 1.5}}
lists:
  - {{name: national, sync: national, mandatory: true}}
  - {{name: local, path: local.txt, format: domains, category: malware}}
sync:
  url: "{authority.url}"
  token_file: token
  public_key: "{authority.public_key}"
  operator: vnpt-test
  node: node-1
  interval: 3600
  jitter: 0
  timeout: 2
  lag_sla: 600
admin: {{listen: "{{admin}}"}}
state_dir: state
audit: {{stats_interval: 1}}
"""


def filterd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FILTERD), *args], capture_output=True, text=True, timeout=60, check=False
    )


def samples(metrics: dict[str, float], name: str) -> Iterator[tuple[dict[str, str], float]]:
    for key, value in metrics.items():
        match = SAMPLE.fullmatch(key)
        if match is not None and match[1] == name:
            yield dict(LABEL.findall(match[2])), value


def expected(runs: list[dict[str, float]]) -> dict[str, Any]:
    """What the report must say, from the /metrics scrapes (one per run)."""
    outcomes: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    lists: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    reloads: Counter[str] = Counter()
    for metrics in runs:
        for labels, value in samples(metrics, "filterd_queries_total"):
            if labels["outcome"] != "truncated" and value:
                outcomes[labels["outcome"]] += int(value)
        for labels, value in samples(metrics, "filterd_blocked_total"):
            categories[labels["category"]] += int(value)
            lists[labels["list"]] += int(value)
        for labels, value in samples(metrics, "filterd_sync_failures_total"):
            if value:
                failures[labels["reason"]] += int(value)
        for labels, value in samples(metrics, "filterd_config_reloads_total"):
            reloads[labels["result"]] += int(value)
    return {
        "total": sum(outcomes.values()),
        "by_outcome": dict(sorted(outcomes.items())),
        "by_category": [{"category": c, "count": n} for c, n in sorted(categories.items())],
        "by_list": [{"list": name, "count": n} for name, n in sorted(lists.items())],
        "failures": dict(failures),
        "reloads": dict(reloads),
    }


def traffic(daemon: Daemon) -> None:
    for _ in range(3):
        assert daemon.query("casino.example").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("www.adult.example", tcp=True).rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("adult.example").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("local-block.example").rcode() == dns.rcode.NXDOMAIN
    for _ in range(2):
        assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    assert daemon.query("www.example.com", tcp=True).rcode() == dns.rcode.NOERROR


def records(trail: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trail.read_text().splitlines()]


def test_the_trail_verifies_and_the_report_matches_the_metrics(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority, tmp_path: Path
) -> None:
    upstream.add("newly-banned.example", "A", "192.0.2.77")
    authority.publish(BASE)
    daemon = make_daemon(config(upstream, authority))
    (daemon.directory / "token").write_text(TOKEN + "\n")
    (daemon.directory / "local.txt").write_text("local-block.example\n")
    good_config = daemon.config_path.read_text()
    daemon.start()

    # --- run 1: traffic, a good and a bad reload, an update, a refused update
    traffic(daemon)
    (daemon.directory / "local.txt").write_text("local-block.example\nmore.example\n")
    assert daemon.reload()
    daemon.config_path.write_text(good_config + "cache: {max_bytes: lots}\n")
    assert not daemon.reload()
    daemon.config_path.write_text(good_config)
    authority.publish([*BASE, make_entry("newly-banned.example", "block", "fraud", "QD-3")])
    assert daemon.post_notify(authority.notify(2)) == 202
    wait_until(lambda: daemon.metrics()['filterd_sync_serial{list="national"}'] == 2)
    assert daemon.query("newly-banned.example").rcode() == dns.rcode.NXDOMAIN
    authority.serve_raw("lists/national/manifest", Canned(b"<html>maintenance</html>"))
    assert daemon.post_notify(authority.notify(3)) == 202
    key = 'filterd_sync_failures_total{list="national",reason="json"}'
    wait_until(lambda: daemon.metrics()[key] == 1)
    time.sleep(1.2)  # at least one periodic statistics record
    first = daemon.metrics()
    assert daemon.stop() == 0

    # --- run 2: the counters start again from zero
    daemon.start()
    wait_until(lambda: daemon.metrics()[key] == 1)  # the pull at start-up fails again
    traffic(daemon)
    second = daemon.metrics()
    assert daemon.stop() == 0

    trail = daemon.directory / "state" / "audit" / "audit.jsonl"
    verified = filterd("audit", "verify", "-c", str(daemon.config_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    head = read_head(trail)
    assert head is not None
    assert verified.stdout.startswith(f"ok: {head.seq} records, seq 1..{head.seq}, head ")
    assert verified.stdout.splitlines()[0].split()[-1] == head.hash
    assert f"audit head: seq {head.seq} {head.hash}" in daemon.log

    # --- the events, in order, with what they must say
    trail_records = records(trail)
    events = [r["event"] for r in trail_records]
    assert events.count("start") == 2 and events.count("stop") == 2
    assert events[0] == "start" and events[-2:] == ["stats", "stop"]
    run1 = events[: events.index("stop") + 1]
    assert run1[-2:] == ["stats", "stop"] and "stats" in run1[:-2]  # periodic and final
    applied = [r for r in trail_records if r["event"] == "sync_applied"]
    assert [(r["serial"], r["via"], r["lag_sla_seconds"]) for r in applied] == [
        (1, "snapshot", 600.0),
        (2, "delta", 600.0),
    ]
    assert applied[1]["sha256"] == sha256_hex(authority.publications[1].snapshot)
    reloads = [(r["result"], r["error"] is None) for r in trail_records if r["event"] == "reload"]
    assert reloads == [("success", True), ("failure", False)]
    bad = next(r for r in trail_records if r["event"] == "reload" and r["result"] == "failure")
    assert "cache.max_bytes" in bad["error"]
    rejected = [r for r in trail_records if r["event"] == "sync_rejected"]
    # The second refusal came at start-up, before the first install: nothing
    # was served yet, and the record says so.
    assert [(r["reason"], r["enforced_serial"]) for r in rejected] == [("json", 2), ("json", 0)]
    lists = [r for r in trail_records if r["event"] == "lists"]
    assert [r["cause"] for r in lists] == ["start", "reload", "sync", "start"]
    national = [next(s for s in r["lists"] if s["name"] == "national") for r in lists]
    assert [s["version"] for s in national] == ["1", "1", "2", "2"]
    assert national[2]["sha256"] == applied[1]["sha256"] and national[2]["mandatory"]
    assert next(r for r in trail_records if r["event"] == "stop")["clean"] is True
    text = trail.read_text()
    assert "127.0.0.1" not in text and "www.example.com" not in text  # no client, no query

    # --- the report equals the metrics of the two runs
    today = datetime.now(UTC).date()
    window = [str(today - timedelta(days=1)), str(today + timedelta(days=1))]
    run = filterd("report", "--from", window[0], "--to", window[1], "-c", str(daemon.config_path))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    want = expected([first, second])
    assert report["trail"]["ok"] is True
    assert report["queries"]["total"] == want["total"] == 2 * 9 + 1
    assert report["queries"]["by_outcome"] == want["by_outcome"]
    assert report["blocked"]["by_category"] == want["by_category"]
    assert {r["category"] for r in report["blocked"]["by_category"]} >= {"gambling", "adult"}
    assert report["blocked"]["by_list"] == want["by_list"]
    failures = {f["reason"]: f["count"] for f in report["sync_failures"]}
    assert failures == want["failures"] == {"json": 2}
    assert report["reloads"]["success"] == want["reloads"]["success"] == 1
    assert report["reloads"]["failure"] == want["reloads"]["failure"] == 1
    assert [(u["serial"], u["sla_met"]) for u in report["updates"]] == [(1, True), (2, True)]
    assert report["sla"]["missed"] == 0
    assert [r["end"] for r in report["runs"]] == ["stop", "stop"]
    hours = {lst["list"]: lst for lst in report["lists"]}
    assert [v["version"] for v in hours["national"]["versions"]] == ["1", "2"]
    national_seconds = hours["national"]["seconds_enforced"]
    served = sum(r["serving_seconds"] for r in report["runs"])
    assert 0 < national_seconds == pytest.approx(served, abs=0.01) and served < 60

    # --- exact intervals: the local list changed at the reload (no gap), its
    # second version was enforced in both runs, never while the node was down
    runs = report["runs"]
    local = hours["local"]
    first, second = local["versions"]
    assert len(first["intervals"]) == 1 and len(second["intervals"]) == 2
    assert first["intervals"][0]["to"] == second["intervals"][0]["from"]
    assert second["intervals"][0]["to"] == runs[0]["ended"]
    assert runs[1]["started"] <= second["intervals"][1]["from"]
    assert second["intervals"][1]["to"] == runs[1]["ended"]
    assert [(g["from"], g["to"]) for g in local["gaps"]] == [
        (runs[0]["ended"], second["intervals"][1]["from"])
    ]
    assert first["sha256"] != second["sha256"] and len(second["sha256"]) == 64
    v1, v2 = hours["national"]["versions"]
    assert [len(v1["intervals"]), len(v2["intervals"])] == [1, 2]
    assert hours["national"]["gaps"] == local["gaps"]

    # --- the HTML report is one well-formed page of tables
    page = filterd("report", "--from", window[0], "--to", window[1], "--format", "html",
                   "--path", str(trail))  # fmt: skip
    assert page.returncode == 0, page.stderr
    root = ET.fromstring(page.stdout.split("\n", 1)[1])
    titles = [h.text for h in root.iter("h2")]
    assert {"Lists enforced", "Authority updates and enforcement lag", "Sync failures",
            "Blocked answers by category", "Configuration reloads"} <= set(titles)  # fmt: skip
    assert len(list(root.iter("table"))) == len(titles)
    # ... and a browser shows it: the tables and the counted categories.
    html = tmp_path / "report.html"
    html.write_text(page.stdout)
    dom = rendered_dom(html.as_uri(), tmp_path / "chromium")
    assert dom.count("<table") == len(titles) and "Blocked answers by category" in dom
    assert all(f"<td>{row['category']}</td>" in dom for row in want["by_category"]), dom

    # --- tampering with a past record is caught, naming the line
    lines = trail.read_text().splitlines(keepends=True)
    number = next(i for i, r in enumerate(trail_records, 1) if r["event"] == "reload")
    lines[number - 1] = lines[number - 1].replace('"success"', '"failure"')
    trail.write_text("".join(lines))
    tampered = filterd("audit", "verify", "--path", str(trail))
    assert tampered.returncode == 1
    assert tampered.stdout.startswith(f"{trail}:{number}: record seq {number} altered")
    assert "Traceback" not in tampered.stdout + tampered.stderr + daemon.log
