"""Reported = served, under any sequence of authority faults (hypothesis stateful).

A real ``filterd run`` syncs ``national`` from the scriptable
``FakeAuthority`` while hypothesis drives both through publications and
faults: corrupt or slow files, a rolled-back manifest, a fork (a serial
republished with other content), an expired manifest, notifications and
replays, node restarts, and SIGHUP with new settings (interval, rotated
token). Every publication blocks a marker name of its own and no other, so
what the workers serve can be told from outside with one query.

After every step, for the list:

- what ``/readyz`` and the metrics report is a (serial, hash) the authority
  really published, and the workers serve it: its marker is blocked and the
  previous publication's is not (read again after the queries: if the report
  moved meanwhile, the check is repeated);
- every receipt names a published (serial, hash), and arrives only while
  the node serves it (checked in the authority's thread as it arrives).

When the faults stop, the node reaches the authority's newest publication
within one poll interval (plus the time a pull takes).
"""

from __future__ import annotations

import gzip
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from filterd.sync.model import sha256_hex
from filterd.sync.snapshot import Entry, make_entry
from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.authority import TOKEN, Canned, FakeAuthority

INTERVAL = 0.4
CATCH_UP = INTERVAL + 3.0
"""One poll interval, plus a pull, a compile and an install on a busy CI machine."""
BASE = [make_entry("casino.example", "block", "gambling", "QD-1")]

CONFIG = """
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.1/32"]}}
upstream: {{servers: ["{upstream}"], timeout: 0.5, deadline: 1.5}}
lists:
  - {{name: national, sync: national, mandatory: true}}
sync:
  url: "{url}"
  token_file: token
  public_key: "{key}"
  operator: vnpt-test
  node: node-1
  interval: {interval}
  jitter: 0
  timeout: 1
admin: {{listen: "{{admin}}"}}
state_dir: state
"""


class SyncUnderFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.scratch = tempfile.TemporaryDirectory(prefix="filterd-stateful-")
        self.upstream = FakeUpstream().start()
        self.authority = FakeAuthority().start()
        self.markers: dict[tuple[int, str], str] = {}
        """(serial, snapshot hash) of every publication -> its marker name."""
        self.lies: list[str] = []
        self.faults: dict[str, Canned] = {}
        """Paths served broken now, with what they should serve."""
        self.count = 0
        self.checked = 0
        """How many times the invariant found a served list to check."""
        self.interval = INTERVAL
        self._publish()
        directory = Path(self.scratch.name)
        (directory / "token").write_text(TOKEN + "\n")
        self.daemon = Daemon(directory, self._config())
        self.authority.on_receipt = self._check_receipt
        self.daemon.start()

    def _config(self) -> str:
        return CONFIG.format(
            upstream=self.upstream.endpoint,
            url=self.authority.url,
            key=self.authority.public_key,
            interval=self.interval,
        )

    # ------------------------------------------------------------ helpers

    def _publish(self, *, serial: int | None = None, expired: bool = False) -> None:
        self.count += 1
        marker = f"m{self.count}.marker.example"
        entries: list[Entry] = [*BASE, make_entry(marker, "block", "fraud")]
        expires = timedelta(minutes=-1) if expired else timedelta(days=7)
        publication = self.authority.publish(entries, serial=serial, expires_in=expires)
        self.markers[(publication.serial, sha256_hex(publication.snapshot))] = marker

    def _newest(self) -> tuple[int, str]:
        newest = self.authority.publications[-1]
        return newest.serial, sha256_hex(newest.snapshot)

    def _served(self) -> tuple[int, str] | None:
        status, text = self.daemon.http("/readyz")
        for line in text.splitlines():
            fields = line.split()
            if status == 200 and fields[:2] == ["list", "national"]:
                return int(fields[3]), fields[5]
        return None

    def _check_receipt(self, receipt: dict[str, object]) -> None:
        key = (int(str(receipt["serial"])), str(receipt["sha256"]))
        if key not in self.markers:
            self.lies.append(f"receipt for {key}, never published")
            return
        try:
            if (
                self._served() == key
                and not self.daemon.blocked(self.markers[key])
                and self._served() == key  # not moved on during the query
            ):
                self.lies.append(f"receipt for {key} while its marker resolves")
        except Exception as exc:
            self.lies.append(f"receipt for {key} while DNS is not answered: {exc!r}")

    def _break(self, path: str, canned: Canned) -> None:
        if path not in self.faults and path in self.authority.canned:
            self.faults[path] = self.authority.canned[path]
        self.authority.serve_raw(path, canned)

    # -------------------------------------------------------------- rules

    @rule()
    def publish(self) -> None:
        self._publish()

    @rule(
        what=st.sampled_from(["delta", "snapshot", "both"]),
        how=st.sampled_from(["garbage", "cut", "slow"]),
    )
    def corrupt_newest(self, what: str, how: str) -> None:
        serial = self.authority.publications[-1].serial
        paths = [f"lists/national/snapshots/{serial}.gz"]
        paths += [p for p in self.authority.canned if p.endswith(f"-{serial}.gz")]
        if what == "delta":
            paths = paths[1:]
        elif what == "snapshot":
            paths = paths[:1]
        for path in paths:
            body = (
                self.authority.canned[path].body
                if path not in self.faults
                else self.faults[path].body
            )
            broken = {
                "garbage": Canned(gzip.compress(b"#filterd-list 1\nevil.example block - -\n")),
                "cut": Canned(body[: len(body) // 2]),
                "slow": Canned(body, delay=0.3, trickle=True),
            }[how]
            self._break(path, broken)

    @precondition(lambda self: len(self.authority.publications) >= 2)
    @rule()
    def roll_back_manifest(self) -> None:
        self._break("lists/national/manifest", Canned(self.authority.publications[0].envelope))

    @rule()
    def fork(self) -> None:
        self._publish(serial=self.authority.publications[-1].serial)

    @rule()
    def publish_expired(self) -> None:
        self._publish(expired=True)

    @rule(replay=st.booleans())
    def notify(self, replay: bool) -> None:
        serial = self.authority.publications[-1].serial
        status = self.daemon.post_notify(self.authority.notify(1 if replay else serial))
        assert status in (200, 202), status

    @rule()
    def restore(self) -> None:
        """The authority repairs its files (and re-signs an expired manifest)."""
        for path, canned in self.faults.items():
            self.authority.serve_raw(path, canned)
        self.faults.clear()
        newest = self.authority.publications[-1]
        if (newest.serial, sha256_hex(newest.snapshot)) in self.markers:
            # A fresh manifest for the same content: same serial, same hash.
            fresh = self.authority.publish(list(newest.entries.values()), serial=newest.serial)
            assert sha256_hex(fresh.snapshot) == sha256_hex(newest.snapshot)

    @rule()
    def restart_node(self) -> None:
        assert self.daemon.stop() == 0
        self.daemon.start()

    @rule(rotate_token=st.booleans())
    def reload_with_new_settings(self, rotate_token: bool) -> None:
        self.interval = 0.3 if self.interval == INTERVAL else INTERVAL
        self.daemon.write_config(self._config())
        if rotate_token:
            token = f"token-{self.count}"
            (Path(self.scratch.name) / "token").write_text(token + "\n")
            self.authority.token = token
        assert self.daemon.reload()

    # ---------------------------------------------------------- invariant

    @invariant()
    def reported_is_served(self) -> None:
        assert self.lies == [], self.lies
        failure = ""
        for _ in range(10):
            served = self._served()
            if served is None:
                return  # not ready (a restart): nothing is reported as served
            assert served in self.markers, f"serves {served}, never published"
            metrics = self.daemon.metrics()
            marker = self.markers[served]
            others = [m for key, m in self.markers.items() if key != served and m != marker]
            blocked = self.daemon.blocked(marker)
            stray = next((m for m in others if self.daemon.blocked(m)), None)
            if self._served() != served:
                continue  # the report moved meanwhile: look again
            assert metrics['filterd_sync_serial{list="national"}'] == served[0]
            if blocked and stray is None:
                self.checked += 1
                return
            # The report follows the commit on every worker: for the length of
            # a commit round trip the workers may serve a newer generation
            # than reported. A lie persists; a lag does not.
            failure = f"reports {served}; {marker} blocked: {blocked}; also blocked: {stray}"
            time.sleep(0.05)
        raise AssertionError(failure)

    def teardown(self) -> None:
        try:
            if self.daemon.process is not None:
                self.restore()
                newest = self._newest()
                deadline = time.monotonic() + CATCH_UP
                while time.monotonic() < deadline and self._served() != newest:
                    time.sleep(0.05)
                assert self._served() == newest, (
                    f"faults stopped, but serves {self._served()} after {CATCH_UP}s, "
                    f"not the newest {newest}:\n{self.daemon.log[-3000:]}"
                )
                self.reported_is_served()
                assert self.checked > 0
        finally:
            self.daemon.__exit__(None, None, None)
            self.authority.stop()
            self.upstream.stop()
            self.scratch.cleanup()


SyncUnderFaults.TestCase.settings = settings(
    max_examples=4,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_reported_is_served_under_faults = SyncUnderFaults.TestCase
