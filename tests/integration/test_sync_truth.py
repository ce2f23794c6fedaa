"""A node reports exactly what it enforces, retries until it is current, and
applies the sync settings it is given: one regression test per defect found
by hand (docs/sync-protocol.md, "Operator procedure").

Each test runs the real daemon against the scriptable ``FakeAuthority`` on
loopback and checks what leaves the node (metrics, ``/readyz``, receipts,
the log) against what it answers to DNS queries at that moment.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from filterd.sync.fetch import compressed_bound
from filterd.sync.model import FileRef, Manifest, load_public_key, seal, sha256_hex, utc_now
from filterd.sync.signed import check
from filterd.sync.snapshot import Entry, make_entry
from tests.integration.conftest import DaemonFactory
from tests.integration.daemon import FILTERD, Daemon
from tests.integration.test_sync import BASE, failures, make, sync_config
from tests.peers.authoritative import FakeUpstream
from tests.peers.authority import Canned, FakeAuthority, Publication
from tests.peers.processes import wait_until

ADDED = make_entry("added.example", "block", "fraud", "QD-9")
SERIAL = 'filterd_sync_serial{list="national"}'
AUTHORITY_SERIAL = 'filterd_sync_authority_serial{list="national"}'
LAST_SUCCESS = 'filterd_sync_last_success_timestamp_seconds{list="national"}'


def served(daemon: Daemon) -> dict[str, tuple[str, str]]:
    """``/readyz``'s lines: list name -> (version, sha256) served now."""
    lines = daemon.http("/readyz")[1].splitlines()
    rows = [line.split() for line in lines if line.startswith("list ")]
    return {row[1]: (row[3], row[5]) for row in rows}


def manifest_304s(authority: FakeAuthority, since: int) -> int:
    answers = authority.seen.answers[since:]
    return sum(1 for path, status in answers if path.endswith("/manifest") and status == 304)


# --------------------------------------------------- 1. retry until current


def test_a_transient_fault_is_retried_until_enforced_and_no_304_hides_it(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Defect 1: the manifest's ETag was remembered before the update was
    applied; after one failed try every poll got 304 and counted a success."""
    upstream.add("added.example", "A", "192.0.2.9")
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    wait_until(lambda: manifest_304s(authority, 0) >= 2)  # conditional GETs are in use
    authority.publish([*BASE, ADDED])
    good = {path: authority.canned[path] for path in ("lists/national/deltas/1-2.gz",)}
    good["lists/national/snapshots/2.gz"] = authority.canned["lists/national/snapshots/2.gz"]
    evil = Canned(gzip.compress(b"#filterd-list 1\nevil.example block - -\n"))
    for path in good:  # both corrupt: nothing can be enforced for a while
        authority.serve_raw(path, evil)
    mark = len(authority.seen.answers)
    wait_until(lambda: failures(daemon, "hash") >= 6, timeout=30)
    metrics = daemon.metrics()
    stalled_since = metrics[LAST_SUCCESS]
    assert (metrics[SERIAL], metrics[AUTHORITY_SERIAL]) == (1, 2)
    wait_until(lambda: failures(daemon, "hash") >= 10, timeout=30)
    assert daemon.metrics()[LAST_SUCCESS] == stalled_since  # failures are not successes
    assert manifest_304s(authority, mark) == 0  # never a conditional GET while behind
    assert not daemon.blocked("added.example")
    for path, canned in good.items():
        authority.serve_raw(path, canned)
    restored = time.monotonic()
    wait_until(lambda: daemon.metrics()[SERIAL] == 2, timeout=10)
    assert time.monotonic() - restored < 2.0  # within one (short) poll interval
    assert daemon.blocked("added.example")
    assert daemon.metrics()[LAST_SUCCESS] > stalled_since
    wait_until(lambda: any(r["serial"] == 2 for r in authority.seen.receipts))


def test_a_refused_rollback_does_not_stop_later_updates(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    wait_until(lambda: daemon.metrics()[SERIAL] == 2)
    current = authority.canned["lists/national/manifest"]
    authority.serve_raw("lists/national/manifest", Canned(authority.publications[0].envelope))
    wait_until(lambda: failures(daemon, "rollback") >= 2)
    authority.serve_raw("lists/national/manifest", current)
    authority.publish([*BASE, ADDED])
    wait_until(lambda: daemon.metrics()[SERIAL] == 3, timeout=10)
    assert daemon.blocked("added.example")


@pytest.mark.parametrize("fault", ["missing", "wrong base"])
def test_a_bad_delta_falls_back_to_the_snapshot(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority, fault: str
) -> None:
    """Defect 9: a missing or wrong delta blocked updates until the next publication."""
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    if fault == "missing":
        publication = authority.publish([*BASE, ADDED])
        authority.serve_raw("lists/national/deltas/1-2.gz", Canned(b"", status=404))
        reason = "http"
    else:
        publication = wrong_base_delta(authority, [*BASE, ADDED])
        reason = "delta"
    wait_until(lambda: daemon.metrics()[SERIAL] == 2, timeout=10)
    assert failures(daemon, reason) >= 1
    assert "falling back to the full snapshot" in daemon.log
    assert daemon.blocked("added.example")
    assert served(daemon)["national"] == ("2", sha256_hex(publication.snapshot))


def wrong_base_delta(authority: FakeAuthority, entries: list[Entry]) -> Publication:
    """Publish ``entries`` with a delta from serial 1 that is well formed and
    applies cleanly, but was made against another base: its result does not
    hash to the published snapshot."""
    publication = authority.publish(entries)
    delta = b"#filterd-delta 1 from=1 to=2\n+ zzz.example block - -\n"
    path = "lists/national/deltas/1-2.gz"
    authority.serve_raw(path, Canned(gzip.compress(delta)))
    now = utc_now()
    manifest = Manifest(
        "national",
        publication.serial,
        now,
        now + timedelta(days=1),
        len(publication.entries),
        FileRef(
            f"lists/national/snapshots/{publication.serial}.gz",
            sha256_hex(publication.snapshot),
            len(publication.snapshot),
        ),
        (FileRef(path, sha256_hex(delta), len(delta), 1),),
    )
    authority.serve_raw("lists/national/manifest", Canned(seal(manifest.to_json(), authority.key)))
    return publication


# ------------------------------------------- 2. reported while not enforced


def test_a_restart_with_a_newer_serial_pending_reports_only_what_it_serves(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Defect 2: the serial pulled during start-up's compile was reported (and
    acknowledged to the authority) while the workers served the older one."""
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority)
    # A local list large enough that the start-up compile outlasts the pull.
    names = "".join(f"n{i:07d}.bulk.example\n" for i in range(400_000))
    (daemon.directory / "local.txt").write_text("local-block.example\n" + names)
    daemon.start()
    wait_until(lambda: daemon.metrics()[SERIAL] == 1)
    assert daemon.stop() == 0
    authority.publish([*BASE, ADDED])  # serial 2 while the node is down
    lies: list[str] = []

    def check_receipt(receipt: dict[str, object]) -> None:
        if receipt["serial"] != 2:
            return
        try:
            enforced = daemon.blocked("added.example")
        except Exception as exc:  # not even answering DNS yet
            lies.append(f"receipt for serial 2 while DNS is not served ({exc!r})")
            return
        if not enforced:
            lies.append(f"receipt for serial 2 while added.example resolves: {receipt}")

    authority.on_receipt = check_receipt
    daemon.start(wait_ready=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _ = daemon.http("/metrics")
        if status == 200:
            serial = daemon.metrics()[SERIAL]
            if serial == 2:
                assert daemon.blocked("added.example"), "metrics say serial 2, not enforced"
                break
            assert serial in (0, 1)
        time.sleep(0.02)
    else:
        pytest.fail(f"serial 2 never enforced:\n{daemon.log}")
    wait_until(lambda: any(r["serial"] == 2 for r in authority.seen.receipts))
    assert lies == []
    assert served(daemon)["national"][0] == "2"


# ----------------------------------------------------- 3. reload settings


def test_sighup_applies_new_sync_settings(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Defect 3: a changed url, public key or token kept the old one until a restart."""
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    with FakeAuthority() as moved:
        moved.token = "rotated-token"
        moved.publish(BASE)
        moved.publish([*BASE, ADDED])
        assert daemon.post_notify(moved.notify(2)) == 403  # not the pinned key yet
        config = sync_config(upstream, authority, interval=0.5)
        config = config.replace(authority.url, moved.url)
        config = config.replace(authority.public_key, moved.public_key)
        daemon.write_config(config)
        (daemon.directory / "token").write_text("rotated-token\n")
        asked_before = len(authority.seen.requests)
        assert daemon.reload()
        wait_until(lambda: daemon.metrics()[SERIAL] == 2, timeout=10)
        assert daemon.blocked("added.example")
        assert all(status != 401 for _, status in moved.seen.answers)
        assert daemon.post_notify(moved.notify(3)) == 202  # the new key verifies
        time.sleep(1.0)  # several polls at the new interval
        assert len(authority.seen.requests) - asked_before <= 1  # only one already under way
        assert moved.seen.requests.count("lists/national/manifest") >= 2


def test_a_reload_that_cannot_apply_sync_settings_is_refused_by_name(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    good = daemon.config_path.read_text()
    daemon.write_config(good.replace("token_file: token", "token_file: missing-token"))
    assert not daemon.reload()
    assert "sync.token_file" in daemon.log and "missing-token" in daemon.log
    added = good.replace(
        "  - {name: local,", "  - {name: province, sync: province-hn}\n  - {name: local,"
    )
    daemon.write_config(added)
    assert not daemon.reload()
    assert "restart filterd to apply that" in daemon.log
    assert "province-hn from sync" in daemon.log
    daemon.write_config(good)
    assert daemon.reload()
    assert "Traceback" not in daemon.log


# ------------------------------------------------------------------ 4. fork


def test_a_fork_is_detected_counted_and_resolved_by_the_snapshot(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Defect 4: same serial, other content (a restore from backup) was taken
    as up to date, and the next delta then failed as "wrong base"."""
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    fork = authority.publish([*BASE, ADDED], serial=1)
    wait_until(lambda: failures(daemon, "fork") >= 1, timeout=10)
    wait_until(lambda: served(daemon)["national"] == ("1", sha256_hex(fork.snapshot)))
    assert daemon.blocked("added.example")
    assert failures(daemon, "fork") == 1  # resolved, not repeated
    assert "(a fork)" in daemon.log
    forked = sha256_hex(fork.snapshot)
    wait_until(lambda: [r["sha256"] for r in authority.seen.receipts].count(forked) == 1)
    authority.publish([*BASE, ADDED, make_entry("later.example", "block")])
    wait_until(lambda: daemon.metrics()[SERIAL] == 2, timeout=10)
    assert "lists/national/deltas/1-2.gz" in authority.seen.requests
    assert failures(daemon, "delta") == 0


# --------------------------------------------------------------- 5. expiry


def test_an_expired_manifest_is_not_applied_and_stops_last_success(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    upstream.add("added.example", "A", "192.0.2.9")
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    wait_until(lambda: daemon.metrics()[LAST_SUCCESS] > 0)
    authority.publish([*BASE, ADDED], expires_in=timedelta(minutes=-1))
    wait_until(lambda: failures(daemon, "expired") >= 2, timeout=10)
    before = daemon.metrics()[LAST_SUCCESS]
    wait_until(lambda: failures(daemon, "expired") >= 4, timeout=10)
    metrics = daemon.metrics()
    assert metrics[LAST_SUCCESS] == before
    assert metrics[SERIAL] == 1
    assert not daemon.blocked("added.example")
    assert "expired at" in daemon.log and "not applied as current" in daemon.log


# ----------------------------------------------------------------- 6. size


def test_a_body_longer_than_announced_is_cut_at_the_announced_size(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Defect 6: the download was bounded by max_snapshot_bytes (256 MiB), not
    by the size the signed manifest announced."""
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    publication = authority.publish([*BASE, ADDED], deltas=False)
    snapshot = authority.canned["lists/national/snapshots/2.gz"].body
    authority.serve_raw("lists/national/snapshots/2.gz", Canned(snapshot + os.urandom(4 << 20)))
    wait_until(lambda: failures(daemon, "size") >= 1, timeout=10)
    bound = compressed_bound(len(publication.snapshot))
    assert bound < 8192
    assert f"body over {bound} bytes" in daemon.log or f"limit {bound}" in daemon.log
    assert daemon.metrics()[SERIAL] == 1


# ------------------------------------------------------ 7. restart history


def test_a_restart_keeps_last_success_and_the_applied_time(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Defect 7: a restart reset last_success to 0, silencing the critical stale alert."""
    applied_key = 'filterd_sync_applied_timestamp_seconds{list="national"}'
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    wait_until(lambda: daemon.metrics()[LAST_SUCCESS] > 0)
    before = daemon.metrics()
    assert daemon.stop() == 0
    authority.stop()
    time.sleep(1.1)  # applied_at has one-second precision: a new one would differ
    daemon.start()
    wait_until(lambda: failures(daemon, "network") >= 1)
    after = daemon.metrics()
    assert after[LAST_SUCCESS] == before[LAST_SUCCESS] > 0
    assert after[SERIAL] == 1
    assert after[applied_key] == before[applied_key] > 0


# ---------------------------------------------- 8. check-config and lookup


def filterd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FILTERD), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_check_config_accepts_a_sync_list_not_fetched_yet_and_lookup_shows_serials(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    daemon = make(make_daemon, upstream, authority)
    config = str(daemon.config_path)
    fresh = filterd("check-config", "-c", config, cwd=daemon.directory)
    assert fresh.returncode == 0, fresh.stderr
    assert "national: authority list 'national' not fetched yet" in fresh.stdout
    assert "configuration OK" in fresh.stdout
    assert not (daemon.directory / "state").exists()  # check-config writes nothing there
    authority.publish(BASE)
    daemon.start()
    checked = filterd("check-config", "-c", config, cwd=daemon.directory)
    assert checked.returncode == 0, checked.stderr
    assert "(native, version 1): 2 entries" in checked.stdout
    looked = filterd("lookup", "www.casino.example", "-c", config, cwd=daemon.directory)
    assert looked.returncode == 0, looked.stderr
    assert "version 1, mandatory" in looked.stdout


# ------------------------------------------------------- 9. notifications


def test_a_replayed_notification_pulls_nothing_and_an_oversized_one_is_counted(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority, interval=3600).start()
    wait_until(lambda: bool(authority.seen.receipts))
    asked = authority.seen.requests.count("lists/national/manifest")
    assert daemon.post_notify(authority.notify(1)) == 200  # already enforced: a replay
    time.sleep(0.5)
    assert authority.seen.requests.count("lists/national/manifest") == asked
    assert daemon.post_notify(b"x" * (32 * 1024)) == 413
    assert daemon.metrics()["filterd_sync_notifies_refused_total"] == 1
    assert daemon.post_notify(authority.notify(2, key=Ed25519PrivateKey.generate())) == 403
    assert daemon.metrics()["filterd_sync_notifies_refused_total"] == 2


# ------------------------------------------------------ a live SIGHUP race


def test_receipts_and_metrics_never_run_ahead_of_queries_under_reloads(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    """Publications and SIGHUP reloads interleaved: whenever a serial is
    reported, a name that only that serial blocks is blocked."""
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority, interval=0.2).start()
    lies: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        # The report follows the commit on every worker, so for an instant
        # the workers may serve a newer serial than reported: that is the
        # report lagging, not running ahead, and is told apart by the newer
        # marker being blocked.
        while not stop.is_set():
            serial = int(daemon.metrics()[SERIAL])
            if serial <= 1 or daemon.blocked(f"s{serial}.marker.example"):
                continue
            later = range(serial + 1, 7)
            newer = any(daemon.blocked(f"s{n}.marker.example") for n in later)
            if not newer and int(daemon.metrics()[SERIAL]) == serial:
                lies.append(f"serial {serial} reported, its marker resolves")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for serial in range(2, 7):
            authority.publish([*BASE, make_entry(f"s{serial}.marker.example", "block")])
            assert daemon.process is not None
            os.kill(daemon.process.pid, signal.SIGHUP)
            time.sleep(0.3)
        wait_until(lambda: daemon.metrics()[SERIAL] == 6, timeout=15)
    finally:
        stop.set()
        watcher.join(10)
    assert lies == []


# ------------------------------------------------------- signed, anchored


def test_the_nodes_receipts_are_signed_with_its_key_and_carry_its_audit_head(
    make_daemon: DaemonFactory, upstream: FakeUpstream, authority: FakeAuthority
) -> None:
    authority.publish(BASE)
    daemon = make(make_daemon, upstream, authority).start()
    wait_until(lambda: bool(authority.seen.receipts))
    (receipt,) = authority.seen.receipts
    public = load_public_key((daemon.directory / "state" / "node.pub").read_text())
    check(dict(receipt), public)  # raises if the signature does not verify
    head = receipt["audit_head"]
    assert isinstance(head, dict) and isinstance(head["seq"], int) and head["seq"] >= 1
    trail = (daemon.directory / "state" / "audit" / "audit.jsonl").read_text().splitlines()
    assert head["seq"] <= len(trail)
