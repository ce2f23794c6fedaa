"""``filterd probe`` against real resolvers on loopback: filterd itself and Unbound.

The probe runs as the operator runs it, as a process (``filterd probe
...``), and its JSON report is checked to the name. Every listed name also exists
upstream (the fake authoritative server answers it with an address), so a
resolver that did not block it would answer it: a pass means the resolver
blocked, not that the name was missing. The client's own behaviour (retry,
TCP on truncation, ignoring forged replies, bounded time) is checked against
the fake upstream used as the resolver.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from filterd.authority.store import Store
from filterd.config import Endpoint
from filterd.probe.client import ask_all_sync
from filterd.probe.verdict import DEFAULT_SINKHOLES, classify, failed
from filterd.sync.snapshot import make_entry
from filterd.wire.codes import TYPE_A
from tests.integration.conftest import DaemonFactory
from tests.peers.authoritative import FakeUpstream
from tests.peers.unbound import UNBOUND_MISSING, UnboundPeer, rpz_nxdomain, unbound_available

FILTERD = Path(sys.executable).parent / "filterd"

needs_unbound = pytest.mark.skipif(not unbound_available(), reason=UNBOUND_MISSING)

CONTROL = "www.example.com"  # in the upstream fixture's zone (tests/integration/conftest.py)
SINKHOLE = "192.0.2.80"
NATIONAL = [f"casino{i}.example" for i in range(25)]
ADS = [f"ads{i}.tracker.example" for i in range(25)]


def probe(*args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """Run the probe with JSON output; (exit status, report)."""
    status, out = probe_text(*args, "--format", "json", timeout=timeout)
    return status, json.loads(out)


def probe_text(*args: str, timeout: float = 60) -> tuple[int, str]:
    result = subprocess.run(
        [str(FILTERD), "probe", "--timeout", "1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


def serve_names(upstream: FakeUpstream, names: list[str]) -> None:
    for number, name in enumerate(names):
        upstream.add(name, "A", f"198.51.100.{number % 250 + 1}")


def sampled(report: dict[str, Any]) -> set[str]:
    return {check["rule"]["name"] for check in report["checks"]}


# ----------------------------------------------------------- against filterd

FILTERD_CONFIG = """
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.1/32"]}}
upstream: {{servers: ["{upstream}"], timeout: 0.5, attempts: 2, deadline: 1.5}}
blocking: {{sinkhole: {{ipv4: {sinkhole}}}}}
lists:
  - {{name: national, path: national.list, format: native, mandatory: true}}
  - {{name: ads, path: ads.hosts, format: hosts, action: sinkhole}}
  - {{name: kinds, path: kinds.list, format: native}}
admin: {{listen: "{{admin}}"}}
state_dir: state
"""

KINDS = [
    *(f"tree{i}.example block -" for i in range(6)),
    *(f"exact{i}.example block-exact -" for i in range(6)),
    *(f"wild{i}.example block-below -" for i in range(6)),
]


def published_snapshot(directory: Path, names: list[str]) -> Path:
    """The authority's real publication of ``names``: ``lists/national/snapshots/1.gz``."""
    store = Store(directory)
    store.generate_key()
    store.init_list("national")
    store.replace_staging("national", [make_entry(name, "block", "gambling") for name in names])
    store.publish("national")
    return store.snapshot_path("national", 1)


@pytest.fixture
def filterd(make_daemon: DaemonFactory, upstream: FakeUpstream, tmp_path: Path) -> tuple[str, Path]:
    """filterd enforcing an authority snapshot, a sinkholed hosts list and every rule kind."""
    snapshot = published_snapshot(tmp_path / "authority", NATIONAL)
    kinds = [line.split()[0] for line in KINDS]
    serve_names(upstream, NATIONAL + ADS + kinds)
    config = FILTERD_CONFIG.format(upstream=upstream.endpoint, sinkhole=SINKHOLE)
    daemon = make_daemon(config, lists=False)
    (daemon.directory / "national.list").write_bytes(gzip.decompress(snapshot.read_bytes()))
    (daemon.directory / "ads.hosts").write_text("".join(f"0.0.0.0 {n}\n" for n in ADS))
    (daemon.directory / "kinds.list").write_text("#filterd-list 1\n" + "\n".join(KINDS) + "\n")
    (daemon.directory / "snapshot.gz").write_bytes(snapshot.read_bytes())
    daemon.start()
    return daemon.dns, daemon.directory


def test_filterd_enforces_an_authority_snapshot(filterd: tuple[str, Path]) -> None:
    resolver, directory = filterd
    status, report = probe(
        "--resolver", resolver, "--list", str(directory / "snapshot.gz"),
        "--sample", "10", "--seed", "3", "--control", CONTROL,
    )  # fmt: skip
    assert status == 0, report
    assert report["list"]["format"] == "native" and report["block_rules"] == len(NATIONAL)
    assert (report["compliance"], report["probed"], report["blocked"]) == (100.0, 10, 10)
    assert (report["controls_given"], report["controls_resolved"]) == (1, 1)
    assert sampled(report) <= set(NATIONAL) and len(sampled(report)) == 10
    for check in report["checks"]:
        assert check["how"] == "nxdomain" and check["ede"][0]["code"] == 16  # Censored
    # The same seed draws the same names again.
    assert sampled(probe("--resolver", resolver, "--list", str(directory / "snapshot.gz"),
                         "--sample", "10", "--seed", "3")[1]) == sampled(report)  # fmt: skip


def test_filterd_sinkhole_counts_only_when_the_address_is_given(filterd: tuple[str, Path]) -> None:
    resolver, directory = filterd
    args = ["--resolver", resolver, "--list", str(directory / "ads.hosts"), "--seed", "5"]
    status, report = probe(*args, "--sinkhole", SINKHOLE, "--control", CONTROL)
    assert status == 0 and report["compliance"] == 100.0 and report["probed"] == len(ADS)
    assert {check["how"] for check in report["checks"]} == {"sinkhole"}
    assert {check["ede"][0]["code"] for check in report["checks"]} == {15}  # Blocked
    # Without the sinkhole address the answers look like real ones: all leaks.
    status, text = probe_text(*args, "--control", CONTROL)
    assert status == 1
    assert f"compliance: 0.0% (0/{len(ADS)} blocked, 0 errors), controls: 1/1 resolved" in text
    assert f"  ads7.tracker.example: NOERROR; A {SINKHOLE}; EDE 15 (Blocked)" in text
    assert "    rule: block ads7.tracker.example and its subdomains (line 8: 0.0.0.0 ads7" in text


def test_filterd_leaks_are_exactly_the_names_it_does_not_list(
    filterd: tuple[str, Path], upstream: FakeUpstream, tmp_path: Path
) -> None:
    resolver, _ = filterd
    extra = [f"new{i}.example" for i in range(5)]
    serve_names(upstream, extra)
    listed = tmp_path / "wider.txt"
    listed.write_text("\n".join(NATIONAL[:10] + extra) + "\n")
    status, report = probe(
        "--resolver", resolver, "--list", str(listed), "--sample", "15", "--control", CONTROL,
        "--control", "missing.example.com", "--min-compliance", "50",
    )  # fmt: skip
    assert status == 1  # compliance is enough, but a control does not resolve
    assert report["compliance"] == 66.6 and report["blocked"] == 10
    assert sorted(report["failures"]) == extra and report["errors"] == 0
    lines = {c["name"]: c["line"]["number"] for c in report["checks"] if c["outcome"] == "resolved"}
    assert lines == {name: 11 + i for i, name in enumerate(extra)}
    controls = {c["name"]: c["outcome"] for c in report["controls"]}
    assert controls == {CONTROL: "resolved", "missing.example.com": "blocked"}


def test_filterd_every_rule_kind_with_subdomains(filterd: tuple[str, Path]) -> None:
    resolver, directory = filterd
    status, report = probe(
        "--resolver", resolver, "--list", str(directory / "kinds.list"), "--subdomains",
        "--seed", "8", "--control", CONTROL,
    )  # fmt: skip
    assert status == 0 and report["compliance"] == 100.0, report
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for check in report["checks"]:
        by_kind.setdefault(check["rule"]["kind"], []).append(check)
    assert {kind: len(checks) for kind, checks in by_kind.items()} == {
        "block": 12,  # the name and a made-up subdomain of each
        "block-exact": 6,
        "block-below": 6,  # a made-up subdomain only
    }
    for check in by_kind["block-below"]:
        assert check["made_up"] and check["name"].startswith("probe-")
        assert check["name"].endswith("." + check["rule"]["name"])
    assert all(check["ede"] for check in report["checks"])
    assert not any("made-up" in note for note in report["notes"])


def test_filterd_refusing_the_probe_client_is_no_compliance(
    make_daemon: DaemonFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    config = FILTERD_CONFIG.format(upstream=upstream.endpoint, sinkhole=SINKHOLE)
    config = config.replace('["127.0.0.1/32"]', '["10.0.0.0/8"]')
    # Deliberately empty lists: the guard (min_entries) must let them be.
    config = config.replace("format: native", "format: native, min_entries: 0")
    daemon = make_daemon(config, lists=False)
    for name in ("national.list", "kinds.list"):
        (daemon.directory / name).write_text("#filterd-list 1\n")
    (daemon.directory / "ads.hosts").write_text("".join(f"0.0.0.0 {n}\n" for n in ADS))
    daemon.start()
    status, report = probe(
        "--resolver", daemon.dns, "--list", str(daemon.directory / "ads.hosts"),
        "--control", CONTROL,
    )  # fmt: skip
    # REFUSED with EDE 18 (Prohibited) refuses the client, not the name.
    assert status == 1 and report["blocked"] == 0 and report["errors"] == len(ADS)
    assert {check["how"] for check in report["checks"] + report["controls"]} == {"prohibited"}
    assert report["controls_resolved"] == 0


# ----------------------------------------------------------- against Unbound


@needs_unbound
def test_unbound_rpz_from_the_same_list_passes(upstream: FakeUpstream, tmp_path: Path) -> None:
    serve_names(upstream, ADS)
    listed = tmp_path / "ads.hosts"
    listed.write_text("".join(f"0.0.0.0 {name}\n" for name in ADS))
    with UnboundPeer(rpz_zone_text=rpz_nxdomain(ADS), forward_to=upstream.endpoint) as unbound:
        status, text = probe_text(
            "--resolver", unbound.endpoint, "--list", str(listed), "--seed", "1",
            "--control", CONTROL,
        )  # fmt: skip
    assert status == 0, text
    assert "compliance: 100.0% (25/25 blocked, 0 errors), controls: 1/1 resolved" in text
    assert "blocked: 25 nxdomain; no Extended DNS Error" in text
    assert "probe: 127.0.0.1:" in text and "seed 1" in text and "result: PASS" in text


@needs_unbound
def test_unbound_rpz_with_half_the_list_fails_on_exactly_the_missing_names(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    serve_names(upstream, ADS)
    listed = tmp_path / "ads.hosts"
    listed.write_text("".join(f"0.0.0.0 {name}\n" for name in ADS))
    enforced, missing = ADS[::2], ADS[1::2]
    with UnboundPeer(rpz_zone_text=rpz_nxdomain(enforced), forward_to=upstream.endpoint) as unbound:
        status, report = probe(
            "--resolver", unbound.endpoint, "--list", str(listed), "--sample", "20",
            "--seed", "11", "--control", CONTROL,
        )  # fmt: skip
    assert status == 1
    chosen = sampled(report)
    assert len(chosen) == 20
    assert sorted(report["failures"]) == sorted(chosen & set(missing))
    assert report["blocked"] == len(chosen & set(enforced))
    assert 30 <= report["compliance"] <= 70 and report["controls_resolved"] == 1
    for check in report["checks"]:
        if check["outcome"] == "resolved":
            assert check["records"] == [f"A 198.51.100.{ADS.index(check['name']) + 1}"]
            assert check["line"]["number"] == ADS.index(check["name"]) + 1


RPZ_LIST = """$TTL 60
@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 60
@ NS localhost.
exact.example CNAME .
pair.example CNAME .
*.pair.example CNAME .
*.wild.example CNAME .
*.nodata.example CNAME *.
"""


@needs_unbound
def test_unbound_rpz_wildcard_only_rules_and_a_missing_one(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    names = ["exact.example", "pair.example", "wild.example", "nodata.example"]
    serve_names(upstream, names)
    listed = tmp_path / "policy.rpz"
    listed.write_text(RPZ_LIST)
    args = ["--list", str(listed), "--seed", "2", "--control", CONTROL]
    with UnboundPeer(rpz_zone_text=RPZ_LIST, forward_to=upstream.endpoint) as unbound:
        status, report = probe("--resolver", unbound.endpoint, *args)
    assert status == 0 and report["list"]["format"] == "rpz" and report["probed"] == 5, report
    kinds = sorted((c["rule"]["name"], c["rule"]["kind"], c["how"]) for c in report["checks"])
    assert kinds == [
        ("exact.example", "block-exact", "nxdomain"),
        ("nodata.example", "block-below", "nodata"),
        ("pair.example", "block-below", "nxdomain"),
        ("pair.example", "block-exact", "nxdomain"),
        ("wild.example", "block-below", "nxdomain"),
    ]
    # Unbound sends no Extended DNS Error: the made-up names' NXDOMAIN is
    # what a non-filtering resolver would answer too, and the report says so.
    assert any(note.startswith("3 made-up names") for note in report["notes"])
    without_exact = RPZ_LIST.replace("exact.example CNAME .\n", "")
    with UnboundPeer(rpz_zone_text=without_exact, forward_to=upstream.endpoint) as unbound:
        status, report = probe("--resolver", unbound.endpoint, *args)
    assert status == 1 and report["failures"] == ["exact.example"]
    failure = next(c for c in report["checks"] if c["outcome"] == "resolved")
    assert failure["line"] == {"number": 4, "text": "exact.example CNAME ."}


# ----------------------------------------------------------- the client itself


def ask(upstream: FakeUpstream, names: list[str], **bounds: float) -> list[tuple[str, str, str]]:
    """(outcome, how, transport) of each name asked of the fake upstream as the resolver."""
    settings = {"timeout": 0.3, "run_time": 10.0, "concurrency": 4.0} | bounds
    replies = ask_all_sync(
        Endpoint(upstream.address, upstream.port),
        names,
        TYPE_A,
        timeout=settings["timeout"],
        run_time=settings["run_time"],
        concurrency=int(settings["concurrency"]),
    )
    verdicts = [
        failed(r.error)
        if r.message is None
        else classify(r.message, DEFAULT_SINKHOLES, r.transport)
        for r in replies
    ]
    return [(v.outcome.value, v.how, v.transport) for v in verdicts]


def test_client_retries_once_falls_back_to_tcp_and_ignores_forged_replies(
    upstream: FakeUpstream,
) -> None:
    upstream.behave("www.example.com", drop=True, times=1)
    upstream.behave("sub.games.example", udp_truncate=True)
    upstream.behave("wild.example", wrong_id=True, then_correct=True)
    upstream.behave("safe.gambling.example", wrong_question=True, then_correct=True)
    upstream.behave("login.phishing.example.com", servfail=True)
    upstream.behave("alias.example.com", drop=True)
    names = [
        "www.example.com", "sub.games.example", "wild.example", "safe.gambling.example",
        "login.phishing.example.com", "alias.example.com", "nothing.example.com",
    ]  # fmt: skip
    started = time.monotonic()
    results = ask(upstream, names)
    assert results == [
        ("resolved", "answer", "udp"),
        ("resolved", "answer", "tcp"),
        ("resolved", "answer", "udp"),
        ("resolved", "answer", "udp"),
        ("error", "servfail", "udp"),
        ("error", "timeout", "udp"),
        ("blocked", "nxdomain", "udp"),
    ]
    assert time.monotonic() - started < 3
    retried = upstream.queries_for("www.example.com")
    assert len(retried) == 2 and retried[0].query_id != retried[1].query_id
    assert retried[0].source_port != retried[1].source_port and retried[0].had_edns
    assert [q.transport for q in upstream.queries_for("sub.games.example")] == ["udp", "tcp"]


def test_client_run_is_bounded_in_time(upstream: FakeUpstream) -> None:
    upstream.behave("*", drop=True)
    names = [f"n{i}.example" for i in range(40)]
    started = time.monotonic()
    results = ask(upstream, names, timeout=0.5, run_time=1.0, concurrency=4)
    assert time.monotonic() - started < 2.5
    assert {how for _, how, _ in results} == {"timeout", "deadline"}
    assert len(upstream.log) < len(names) * 2  # names after the deadline are not asked


def test_client_reports_a_closed_port_as_unreachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    replies = ask_all_sync(
        Endpoint("127.0.0.1", port), ["a.example"], TYPE_A, timeout=1, run_time=5, concurrency=1
    )
    assert replies[0].error == "unreachable"
