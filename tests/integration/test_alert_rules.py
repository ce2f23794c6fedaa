"""The shipped alert rules and Grafana dashboard work against the metrics filterd exports.

An alert that never fires looks exactly like a healthy fleet, so the rules are
checked the way Prometheus will use them: ``promtool check rules`` parses them,
``promtool test rules`` runs tests/prometheus/filterd-alerts.test.yml, and every
alert must there have a case that fires and one that must stay silent. Every
``filterd_*`` name the rules and the dashboard query must be documented in
docs/metrics.md, so a renamed metric cannot silently empty a panel or an
alert. Every dashboard expression is parsed by promtool too (as a recording
rule in a temporary file), and the runbook of each alert must lead to its own
section of docs/monitoring.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "filterd-alerts.yml"
RULE_TESTS = REPO / "tests" / "prometheus" / "filterd-alerts.test.yml"
DASHBOARD = REPO / "config" / "grafana" / "filterd-dashboard.json"
METRICS_DOC = REPO / "docs" / "metrics.md"
MONITORING_DOC = REPO / "docs" / "monitoring.md"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; tests/run installs it)",
)

# A metric name as it appears in an expression or in text; histograms are
# queried through their _bucket/_sum/_count series.
METRIC_NAME = re.compile(r"(?<![\w:])filterd_[a-z0-9_]*[a-z0-9]")
DOCUMENTED_NAME = re.compile(r"`(filterd_[a-z0-9_]+)`")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SEVERITIES = {"warning", "critical"}
# Grafana's own variables, replaced by values Prometheus would receive.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
}


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    output = f"$ {' '.join(result.args)}\n{result.stdout}{result.stderr}"
    print(output)
    assert result.returncode == 0, output


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path}: not a mapping"
    return document


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_yaml(RULES)["groups"]:
        rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def load_dashboard() -> dict[str, Any]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict)
    return dashboard


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows; rows themselves excluded."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def markdown_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown document."""
    anchors = set()
    for line in text.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def undocumented(names: set[str], documented: set[str]) -> set[str]:
    missing = set()
    for name in names:
        if name in documented:
            continue
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is None or base not in documented:
            missing.add(name)
    return missing


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    assert_succeeded(promtool("check", "rules", str(RULES)))


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    assert_succeeded(promtool("test", "rules", str(RULE_TESTS.relative_to(REPO))))


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts without a test where they fire"
    assert alerts - silent == set(), "alerts without a test where they must not fire"
    assert (firing | silent) - alerts == set(), "tests of alerts that do not exist"


def test_every_alert_carries_for_severity_and_annotations() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no for:"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), name
        assert re.fullmatch(r"docs/monitoring\.md#[a-z0-9-]+", annotations["runbook"]), name


def test_every_runbook_leads_to_the_alert_s_own_section_of_the_monitoring_guide() -> None:
    anchors = markdown_anchors(MONITORING_DOC.read_text(encoding="utf-8"))
    wrong = sorted(
        rule["alert"]
        for rule in alert_rules()
        if rule["annotations"]["runbook"] != f"docs/monitoring.md#{rule['alert'].lower()}"
        or rule["alert"].lower() not in anchors
    )
    assert not wrong, f"alerts without their own section in docs/monitoring.md: {wrong}"


def test_metrics_used_by_rules_and_dashboard_are_documented() -> None:
    documented = set(DOCUMENTED_NAME.findall(METRICS_DOC.read_text(encoding="utf-8")))
    for path in (RULES, DASHBOARD):
        used = set(METRIC_NAME.findall(path.read_text(encoding="utf-8")))
        assert used, f"{path.name}: no filterd metric found"
        missing = sorted(undocumented(used, documented))
        assert not missing, f"{path.name} uses metrics not in docs/metrics.md: {missing}"


def test_dashboard_is_importable_and_every_panel_queries_prometheus() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert "label_values(filterd_build_info, instance)" in json.dumps(variables["instance"])
    rows = [panel["title"] for panel in dashboard["panels"] if panel.get("type") == "row"]
    assert rows == ["Compliance", "Health"]
    every_id = [panel["id"] for panel in dashboard["panels"]]
    every_id += [inner["id"] for row in dashboard["panels"] for inner in row.get("panels", [])]
    assert len(every_id) == len(set(every_id)), "panel ids are not unique"
    panels = dashboard_panels(dashboard)
    assert panels
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, title
        assert panel["targets"], f"{title}: no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{title}: empty expression"
            assert target["refId"], title


@needs_promtool
def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    rules = []
    for panel in dashboard_panels(load_dashboard()):
        for target in panel["targets"]:
            expr: str = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr!r}"
            record = f"dashboard:panel_{panel['id']}_{target['refId']}"
            rules.append({"record": record, "expr": expr})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(rule_file))
    assert_succeeded(result)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
