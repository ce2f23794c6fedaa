"""End to end: a real filterd process syncing from an authority over real HTTP.

The authority here is the scriptable ``FakeAuthority`` (it can misbehave on
purpose); the reference authority (``filterd authority``) has its own tests
and a test against filterd in test_authority_filterd.py. Every tampering
case checks the three promises of the protocol: the bad update is refused
with a counted, bounded reason and a log line, and the previous list stays
enforced.
"""

from __future__ import annotations

import gzip
import time

import dns.edns
import dns.rcode
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from filterd.sync.model import sha256_hex
from filterd.sync.snapshot import Entry, make_entry
from tests.integration.conftest import DaemonFactory
from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.authority import TOKEN, Canned, FakeAuthority
from tests.peers.processes import wait_until

BASE = [
    make_entry("casino.example", "block", "gambling", "QD-1"),
    make_entry("adult.example", "block", "adult", "QD-2"),
]


def sync_config(
    upstream: FakeUpstream, authority: FakeAuthority, extra: str = "", interval: float = 0.5
) -> str:
    return f"""
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.1/32"]}}
upstream: {{servers: ["{upstream.endpoint}"], timeout: 0.5, deadline: 1.5}}
lists:
  - {{name: national, sync: national, mandatory: true}}
  - {{name: local, path: local.txt, format: domains}}
sync:
  url: "{authority.url}"
  token_file: token
  public_key: "{authority.public_key}"
  operator: vnpt-test
  node: node-1
  interval: {interval}
  jitter: 0
  timeout: 2
{extra}
admin: {{listen: "{{admin}}"}}
state_dir: state
"""


def make(
    factory: DaemonFactory,
    upstream: FakeUpstream,
    authority: FakeAuthority,
    extra: str = "",
    interval: float = 0.5,
) -> Daemon:
    daemon = factory(sync_config(upstream, authority, extra, interval))
    (daemon.directory / "token").write_text(TOKEN + "\n")
    (daemon.directory / "local.txt").write_text("local-block.example\n")
    return daemon


def ede_text(daemon: Daemon, name: str) -> str:
    answer = daemon.query(name)
    for option in answer.options:
        if isinstance(option, dns.edns.EDEOption):
            return option.text or ""
    return ""


def failures(daemon: Daemon, reason: str) -> float:
    return daemon.metrics()[f'filterd_sync_failures_total{{list="national",reason="{reason}"}}']


# -------------------------------------------------------------- happy path


def test_enforces_the_published_list_and_sends_a_receipt(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    publication = authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    assert daemon.query("www.casino.example").rcode() == dns.rcode.NXDOMAIN
    text = ede_text(daemon, "casino.example")
    assert text == "list=national version=1 category=gambling"
    assert daemon.query("local-block.example").rcode() == dns.rcode.NXDOMAIN
    wait_until(lambda: bool(authority.seen.receipts))
    receipt = authority.seen.receipts[0]
    assert receipt["serial"] == 1 and receipt["list"] == "national"
    assert receipt["operator"] == "vnpt-test" and receipt["node"] == "node-1"
    assert receipt["sha256"] == sha256_hex(publication.snapshot)
    metrics = daemon.metrics()
    assert metrics['filterd_sync_serial{list="national"}'] == 1
    assert metrics['filterd_sync_authority_serial{list="national"}'] == 1
    assert metrics['filterd_sync_entries{list="national"}'] == 2
    assert metrics["filterd_sync_stale_after_seconds"] == 3600
    assert metrics["filterd_sync_lag_sla_seconds"] == 3600
    assert metrics['filterd_sync_lag_seconds{list="national"}'] >= 0
    assert metrics['filterd_sync_receipts_total{list="national",result="sent"}'] == 1
    assert (daemon.directory / "state" / "sync" / "national" / "snapshot.list").read_bytes() == (
        publication.snapshot
    )


def test_push_notification_pulls_a_delta_at_once(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    upstream.add("newly-banned.example", "A", "192.0.2.77")
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    assert daemon.query("newly-banned.example").rcode() == dns.rcode.NOERROR
    authority.publish([*BASE, make_entry("newly-banned.example", "block", "fraud", "QD-3")])
    started = time.monotonic()
    assert daemon.post_notify(authority.notify(2)) == 202
    wait_until(lambda: daemon.query("newly-banned.example").rcode() == dns.rcode.NXDOMAIN)
    elapsed = time.monotonic() - started
    assert "version=2" in ede_text(daemon, "newly-banned.example")
    assert "lists/national/deltas/1-2.gz" in authority.seen.requests
    assert "lists/national/snapshots/2.gz" not in authority.seen.requests
    assert elapsed < 10  # pulled on the push, not on the (hourly) interval
    assert daemon.metrics()['filterd_sync_notifies_total{list="national"}'] == 1


def test_a_delta_overlay_answers_like_a_full_recompile(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """A small delta is applied as an overlay on the installed index; what it
    enforces must be exactly what a full compile of the same lists enforces,
    including names another list also blocks and a changed category."""
    shared = make_entry("local-block.example", "block", "adult", "QD-4")
    authority.publish([*BASE, shared, make_entry("games.example", "block-exact", "games")])
    for name in ("adult.example", "www.games.example", "games.example", "new.example"):
        upstream.add(name, "A", "192.0.2.10")
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    authority.publish(
        [
            make_entry("casino.example", "block", "fraud", "QD-5"),  # category changed
            make_entry("new.example", "block-below"),
            make_entry("www.games.example", "allow-exact"),
            make_entry("games.example", "block"),  # exact -> whole subtree
        ]
    )  # removes adult.example and the shared name, which the local list still blocks
    assert daemon.post_notify(authority.notify(2)) == 202
    wait_until(lambda: daemon.metrics()['filterd_sync_serial{list="national"}'] == 2)
    assert "applied as an overlay" in daemon.log
    names = [
        "casino.example",
        "www.casino.example",
        "adult.example",
        "local-block.example",
        "new.example",
        "a.new.example",
        "games.example",
        "www.games.example",
        "x.games.example",
    ]

    def answers() -> list[tuple[str, int, str]]:
        return [(n, daemon.query(n).rcode(), ede_text(daemon, n)) for n in names]

    overlaid = answers()
    assert overlaid[0] == ("casino.example", dns.rcode.NXDOMAIN, _ede(2, "fraud"))
    assert overlaid[2][1] == dns.rcode.NOERROR  # removed from the national list
    assert overlaid[3][1] == dns.rcode.NXDOMAIN  # still on the local list
    assert [a[1] for a in overlaid[4:]] == [
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
    ]
    versions = [
        k for k in daemon.metrics() if k.startswith("filterd_list_info{") and "national" in k
    ]
    assert len(versions) == 1 and 'version="2"' in versions[0]
    compiles = daemon.log.count("compiled in")
    assert daemon.reload()
    assert daemon.log.count("compiled in") == compiles + 1  # overlay folded into the index
    assert answers() == overlaid


def _ede(serial: int, category: str) -> str:
    return f"list=national version={serial} category={category}"


def test_unsigned_or_foreign_notifications_are_refused(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    assert daemon.post_notify(b'{"type": "filterd-notify"}') == 403
    assert daemon.post_notify(authority.notify(5, key=Ed25519PrivateKey.generate())) == 403
    assert daemon.metrics()["filterd_sync_notifies_refused_total"] == 2


def test_restart_with_the_authority_down_enforces_the_persisted_list(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    assert daemon.query("casino.example").rcode() == dns.rcode.NXDOMAIN
    assert daemon.stop() == 0
    authority.stop()
    daemon.start()  # ready without the authority
    assert daemon.query("www.casino.example").rcode() == dns.rcode.NXDOMAIN
    assert "version=1" in ede_text(daemon, "casino.example")
    wait_until(lambda: failures(daemon, "network") >= 1)


def test_no_list_yet_means_not_ready(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    daemon = make(make_daemon, upstream, authority)
    daemon.start(wait_ready=False)
    wait_until(lambda: daemon.http("/healthz")[0] == 200)
    time.sleep(1.0)
    assert daemon.http("/readyz")[0] == 503
    with pytest.raises(dns.exception.Timeout):
        daemon.query("www.example.com", timeout=0.5)
    authority.publish(BASE)
    daemon.wait_ready()
    assert daemon.query("casino.example").rcode() == dns.rcode.NXDOMAIN


def test_local_only_serves_without_the_authority_list(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    upstream.add("casino.example", "A", "192.0.2.66")
    daemon = make(make_daemon, upstream, authority, extra="  on_missing: local-only").start()
    assert daemon.query("local-block.example").rcode() == dns.rcode.NXDOMAIN
    assert str(daemon.query("casino.example").answer[0][0]) == "192.0.2.66"
    authority.publish(BASE)
    wait_until(lambda: daemon.query("casino.example").rcode() == dns.rcode.NXDOMAIN)


# ----------------------------------------------------------------- tampering


def _bad_signature(a: FakeAuthority) -> str:
    envelope = a.publish([*BASE, make_entry("extra.example", "block")]).envelope
    a.serve_raw(
        "lists/national/manifest",
        Canned(envelope.replace(b'"signature": "', b'"signature": "AAAA')),
    )
    return "signature"


def _wrong_key(a: FakeAuthority) -> str:
    a.publish([*BASE, make_entry("extra.example", "block")], key=Ed25519PrivateKey.generate())
    return "key"


# A bad delta falls back to the full snapshot (test_sync_truth.py): to refuse
# the update, the cases that tamper with files tamper with both.
UPDATE_FILES = ("lists/national/deltas/1-2.gz", "lists/national/snapshots/2.gz")


def _hash_mismatch(a: FakeAuthority) -> str:
    a.publish([*BASE, make_entry("extra.example", "block")])
    a.serve_raw(
        UPDATE_FILES[0],
        Canned(gzip.compress(b"#filterd-delta 1 from=1 to=2\n+ evil.example block - -\n")),
    )
    a.serve_raw(
        UPDATE_FILES[1], Canned(gzip.compress(b"#filterd-list 1\nevil.example block - -\n"))
    )
    return "hash"


def _truncated(a: FakeAuthority) -> str:
    a.publish([*BASE, make_entry("extra.example", "block")])
    for path in UPDATE_FILES:
        body = a.canned[path].body
        a.serve_raw(path, Canned(body[: len(body) // 2]))
    return "truncated"


def _rollback(a: FakeAuthority) -> str:
    # Serial 2 is enforced (published before start): replay serial 1's
    # manifest, validly signed but older.
    a.serve_raw("lists/national/manifest", Canned(a.publications[0].envelope))
    return "rollback"


def _oversized(a: FakeAuthority) -> str:
    big = [*BASE, *(Entry(f"n{i:06d}.example".encode()) for i in range(40_000))]
    publication = a.publish(big, deltas=False)  # the snapshot path, over the limit
    assert len(publication.snapshot) > 64 * 1024
    return "size"


def _slow_loris(a: FakeAuthority) -> str:
    a.publish([*BASE, make_entry("extra.example", "block")])
    for path in UPDATE_FILES:
        body = a.canned[path].body
        a.serve_raw(path, Canned(body, delay=0.5, trickle=True))
    return "timeout"


def _garbage(a: FakeAuthority) -> str:
    a.serve_raw("lists/national/manifest", Canned(b"<html>maintenance</html>"))
    return "json"


TAMPERING = {
    "bad signature": _bad_signature,
    "wrong key": _wrong_key,
    "hash mismatch": _hash_mismatch,
    "truncated body": _truncated,
    "rollback / replayed old manifest": _rollback,
    "oversized body": _oversized,
    "slow-loris server": _slow_loris,
    "garbage JSON": _garbage,
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_updates_are_refused_and_the_last_good_list_kept(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority, case: str
) -> None:
    authority.publish(BASE)
    if case.startswith("rollback"):
        authority.publish(BASE)  # serial 2 is enforced; serial 1 will be replayed
    enforced = authority.publications[-1].serial
    upstream.add("extra.example", "A", "192.0.2.5").add("zzz.example", "A", "192.0.2.6")
    config = sync_config(upstream, authority)
    if case == "oversized body":
        config = config.replace("  timeout: 2\n", "  timeout: 2\n  max_snapshot_bytes: 65536\n")
    if case == "slow-loris server":
        config = config.replace("  timeout: 2\n", "  timeout: 1\n")
    daemon = make(make_daemon, upstream, authority)
    daemon.write_config(config)
    daemon.start()
    assert f"version={enforced}" in ede_text(daemon, "casino.example")
    reason = TAMPERING[case](authority)
    wait_until(lambda: failures(daemon, reason) >= 1, timeout=20)
    # The same serial, still enforced, nothing partially applied.
    metrics = daemon.metrics()
    assert metrics['filterd_sync_serial{list="national"}'] == enforced
    if case in ("hash mismatch", "truncated body"):
        # A verified manifest names a newer serial that could not be enforced:
        # the "serial behind the authority" alert sees it.
        assert metrics['filterd_sync_authority_serial{list="national"}'] > enforced
    assert f"version={enforced}" in ede_text(daemon, "casino.example")
    assert str(daemon.query("extra.example").answer[0][0]) == "192.0.2.5"
    assert str(daemon.query("zzz.example").answer[0][0]) == "192.0.2.6"
    assert f"sync national failed ({reason})" in daemon.log
    assert f"still enforcing serial {enforced}" in daemon.log
    assert "Traceback" not in daemon.log


def test_an_unreadable_client_certificate_stops_start_up_with_one_line(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    extra = "  client_cert: node.pem\n  client_key: node.key\n"
    daemon = make(make_daemon, upstream, authority, extra=extra).start(wait_ready=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 1
    errors = [line for line in daemon.log.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "node.pem" in errors[0], daemon.log
    assert "No such file or directory" in errors[0] and "Traceback" not in daemon.log
