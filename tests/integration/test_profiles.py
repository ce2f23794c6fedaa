"""Groups and profiles end to end: the real daemon, clients on different
loopback addresses, a test clock for schedules, a trusted forwarder's
client subnet, safe search resolved through a real upstream.

Queries leave from 127.0.0.2, .3, .4 and .5 (dnspython binds the source
address; on Linux every 127/8 address is local), so each lands in the group
its address is configured in. Schedules read ``FILTERD_CLOCK_FILE``
(``filterd.pipeline.clock``): the test writes a time into it and the
workers see it within a fraction of a second.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.conftest import DaemonFactory
from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream

PRIMARY, SECONDARY, FAMILY, FORWARDER, ANYONE = (
    "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.1",
)  # fmt: skip
MONDAY_EARLY = "2026-09-07T06:59:50+07:00"  # a school day, just before school hours
MONDAY_SCHOOL = "2026-09-07T07:00:05+07:00"
SATURDAY_EVENING = "2026-09-12T20:00:00+07:00"

ZONE = """
play.games.example.          300 IN A 192.0.2.31
www.adult.example.           300 IN A 192.0.2.32
www.casino.example.          300 IN A 192.0.2.33
www.example.com.             300 IN A 192.0.2.10
www.google.com.              300 IN A 192.0.2.40
forcesafesearch.google.com.  300 IN A 216.239.38.120
"""

CONFIG = """
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.0/8"]}}
upstream: {{servers: ["{upstream}"], timeout: 0.5, attempts: 2, deadline: 1.5}}
blocking: {{sinkhole: {{ipv4: 192.0.2.80}}}}
lists:
  - {{name: national, path: national.txt, format: domains, mandatory: true, category: gambling}}
  - {{name: games, path: games.txt, category: games, opt_in: true}}
  - {{name: adult, path: adult.txt, category: adult, opt_in: true}}
  - {{name: family-allow, path: allow.txt, kind: allow, category: family-allow, opt_in: true}}
groups:
  primary: {{networks: ["127.0.0.2/32"], profile: school-primary}}
  secondary: {{networks: ["127.0.0.3/32"], profile: school-secondary}}
  family: {{networks: ["127.0.0.4/32"], profile: home}}
profiles:
  home:
    categories: [adult, family-allow]
    scheduled: {{games: [school-hours, night]}}
    action: sinkhole
client_subnet: {{trust: ["127.0.0.5/32"]}}
admin: {{listen: "{{admin}}"}}
state_dir: state
"""


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.add_zone_text(ZONE)
    with server:
        yield server


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "clock"
    path.write_text(MONDAY_EARLY)
    monkeypatch.setenv("FILTERD_CLOCK_FILE", str(path))
    return path


@pytest.fixture
def daemon(make_daemon: DaemonFactory, upstream: FakeUpstream, clock: Path) -> Daemon:
    daemon = make_daemon(CONFIG.format(upstream=upstream.endpoint), lists=False)
    (daemon.directory / "national.txt").write_text("casino.example\n")
    (daemon.directory / "games.txt").write_text("games.example\ncasino.example\n")
    (daemon.directory / "adult.txt").write_text("adult.example\n")
    (daemon.directory / "allow.txt").write_text("casino.example\n")
    return daemon.start()


def ask(
    daemon: Daemon, name: str, source: str, rdtype: str = "A", subnet: str | None = None
) -> dns.message.Message:
    options: list[dns.edns.Option] = [dns.edns.ECSOption(subnet, 32)] if subnet else []
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    return dns.query.udp(query, "127.0.0.1", port=daemon.port, source=source, timeout=5)


def outcome(answer: dns.message.Message) -> str:
    """``NXDOMAIN 17``, ``A 192.0.2.31``, ``CNAME forcesafesearch.google.com. A ...``."""
    codes = [str(o.code) for o in answer.options if isinstance(o, dns.edns.EDEOption)]
    if answer.rcode() != dns.rcode.NOERROR:
        return " ".join([dns.rcode.to_text(answer.rcode()), *codes])
    records = [f"{rrset.rdtype.name} {rr.to_text()}" for rrset in answer.answer for rr in rrset]
    return " ".join(records + codes)


def set_clock(clock: Path, daemon: Daemon, moment: str, name: str, source: str, want: str) -> None:
    """Move the test clock, then ask until the workers answer ``want``
    (they read the clock every 0.2 s); bounded."""
    clock.write_text(moment)
    deadline = time.monotonic() + 5.0
    while outcome(ask(daemon, name, source)) != want:
        assert time.monotonic() < deadline, f"{name} from {source} at {moment}: not {want}"
        time.sleep(0.05)


def test_each_group_gets_its_profile(daemon: Daemon) -> None:
    # The default group: only the authority's list applies.
    assert outcome(ask(daemon, "play.games.example", ANYONE)) == "A 192.0.2.31"
    assert outcome(ask(daemon, "www.adult.example", ANYONE)) == "A 192.0.2.32"
    assert outcome(ask(daemon, "www.google.com", ANYONE)) == "A 192.0.2.40"
    # school-primary: games and adult at all times (EDE 17 Filtered), safe search.
    assert outcome(ask(daemon, "play.games.example", PRIMARY)) == "NXDOMAIN 17"
    assert outcome(ask(daemon, "www.adult.example", PRIMARY)) == "NXDOMAIN 17"
    assert outcome(ask(daemon, "www.google.com", PRIMARY)) == (
        "CNAME forcesafesearch.google.com. A 216.239.38.120"
    )
    # school-secondary before school hours: adult only.
    assert outcome(ask(daemon, "play.games.example", SECONDARY)) == "A 192.0.2.31"
    assert outcome(ask(daemon, "www.adult.example", SECONDARY)) == "NXDOMAIN 17"
    # The operator's own profile: a block page for adult.
    assert outcome(ask(daemon, "www.adult.example", FAMILY)) == "A 192.0.2.80 17"


def test_no_profile_or_profile_allowlist_lifts_the_mandatory_list(daemon: Daemon) -> None:
    for source in (ANYONE, PRIMARY, SECONDARY):
        assert outcome(ask(daemon, "www.casino.example", source)) == "NXDOMAIN 16"
    # The family profile's own allowlist names casino.example: it still gets
    # the authority's block, as its block page (its action), with EDE 16.
    assert outcome(ask(daemon, "www.casino.example", FAMILY)) == "A 192.0.2.80 16"


def test_a_schedule_transition_takes_effect_on_the_next_query(daemon: Daemon, clock: Path) -> None:
    assert outcome(ask(daemon, "play.games.example", SECONDARY)) == "A 192.0.2.31"  # cached now
    set_clock(clock, daemon, MONDAY_SCHOOL, "play.games.example", SECONDARY, "NXDOMAIN 17")
    # The family's games window is school hours or night: open now, closed on Saturday evening.
    assert outcome(ask(daemon, "play.games.example", FAMILY)) == "A 192.0.2.80 17"
    set_clock(clock, daemon, SATURDAY_EVENING, "play.games.example", FAMILY, "A 192.0.2.31")
    assert outcome(ask(daemon, "play.games.example", SECONDARY)) == "A 192.0.2.31"


def test_a_trusted_forwarder_s_client_subnet_decides_the_group(daemon: Daemon) -> None:
    assert outcome(ask(daemon, "www.adult.example", FORWARDER, subnet=PRIMARY)) == "NXDOMAIN 17"
    assert outcome(ask(daemon, "www.adult.example", FORWARDER)) == "A 192.0.2.32"
    # From a client that is not a trusted forwarder the option changes nothing.
    assert outcome(ask(daemon, "www.adult.example", ANYONE, subnet=PRIMARY)) == "A 192.0.2.32"


def test_per_group_metrics_and_lookup_agree(daemon: Daemon) -> None:
    ask(daemon, "www.adult.example", PRIMARY)
    ask(daemon, "www.google.com", PRIMARY)
    ask(daemon, "www.example.com", SECONDARY)
    metrics = daemon.metrics()
    assert metrics['filterd_group_queries_total{group="primary"}'] == 2
    assert metrics['filterd_group_blocked_total{group="primary"}'] == 1
    assert metrics['filterd_group_rewritten_total{group="primary"}'] == 1
    assert metrics['filterd_group_queries_total{group="secondary"}'] == 1
    assert metrics['filterd_group_queries_total{group="default"}'] == 0
    looked = subprocess.run(
        [str(Path(sys.executable).parent / "filterd"), "lookup", "www.adult.example",
         "-c", str(daemon.config_path), "--client", PRIMARY, "--at", MONDAY_SCHOOL],
        capture_output=True, text=True, timeout=60, check=False, cwd=daemon.directory,
    )  # fmt: skip
    assert looked.returncode == 0, looked.stderr
    lines = looked.stdout.splitlines()
    assert "group: primary" in lines and "profile: school-primary" in lines
    assert "decision: blocked" in lines and "category: adult" in lines
    assert "action: nxdomain" in lines and "extended error: 17" in lines
