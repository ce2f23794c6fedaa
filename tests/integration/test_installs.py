"""End to end: a new index generation is installed on every worker or on none.

The fault is a real one, made from outside as an operator's machine makes
it: one of two workers runs out of file descriptors (its open-file limit is
lowered with prlimit(2)), so it cannot open the new index file that
``Prepare`` names, while the other prepares it fine. Neither may switch: the
old list keeps serving on both, ``/readyz`` does not change, and the failure
is logged, counted (``filterd_install_failures_total``) and written to the
audit trail. Once the worker has descriptors again, the next reload
installs everywhere.

Questions are steered to workers by a hash of the question
(``filterd.listeners.steer``), so distinct names of the new list reach both
workers; none may be blocked. (The worker out of descriptors still forwards:
its upstream sockets were opened before, ``filterd.upstream.sockets``.)
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import dns.rcode

from tests.integration.conftest import DaemonFactory, standard_config
from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.processes import wait_until

QUERIES = 40
"""Distinct questions per check: steered by their hash, they reach both
workers (all on one worker has a chance of 2**-39)."""


def two_workers(upstream: FakeUpstream) -> str:
    return standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], workers: 2}'
    )


def rcodes(daemon: Daemon, names: list[str]) -> list[int]:
    return [daemon.query(name).rcode() for name in names]


def reload_records(daemon: Daemon) -> list[dict[str, object]]:
    trail = daemon.directory / "state" / "audit" / "audit.jsonl"
    if not trail.exists():
        return []
    records = [json.loads(line) for line in trail.read_text().splitlines()]
    return [record for record in records if record["event"] == "reload"]


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_a_worker_that_cannot_prepare_keeps_every_worker_on_the_old_list(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    fresh = iter(range(10_000))

    def names(domain: str) -> list[str]:
        """Names never asked before (no cached answer), under ``domain``."""
        return [f"n{next(fresh)}.{domain}" for _ in range(QUERIES)]

    for number in range(4 * QUERIES):
        upstream.add(f"n{number}.newly.example.org", "A", "192.0.2.60")
    daemon = make_daemon(two_workers(upstream)).start()
    ready = daemon.http("/readyz")
    assert ready[0] == 200 and ready[1].startswith("ready\ngeneration 1\n")
    assert set(rcodes(daemon, names("newly.example.org"))) == {dns.rcode.NOERROR}
    assert all(daemon.blocked(name) for name in names("phishing.example.com"))

    (daemon.directory / "local.txt").write_text("newly.example.org\n")
    worker, _ = daemon.worker_pids()
    limits = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    assert open_descriptors(worker) > 3
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (3, limits[1]))  # no descriptor left
    try:
        assert not daemon.reload()
        # Neither worker switched: names of the new list are still forwarded
        # by both (SERVFAIL only if the starved worker needed a new socket),
        # never blocked.
        answers = rcodes(daemon, names("newly.example.org"))
        assert dns.rcode.NOERROR in answers, answers
        assert set(answers) <= {dns.rcode.NOERROR, dns.rcode.SERVFAIL}, answers
        assert all(daemon.blocked(name) for name in names("phishing.example.com"))
    finally:
        resource.prlimit(worker, resource.RLIMIT_NOFILE, limits)

    assert daemon.http("/readyz") == ready
    assert all(daemon.blocked(name) for name in names("phishing.example.com"))
    assert not any(daemon.blocked(name) for name in names("newly.example.org"))
    metrics = daemon.metrics()
    assert metrics["filterd_install_failures_total"] == 1
    assert metrics['filterd_config_reloads_total{result="failure"}'] == 1
    assert metrics["filterd_config_generation"] == 1
    assert metrics["filterd_ready"] == 1
    assert "cannot open index" in daemon.log  # the worker's own line
    assert "could not prepare generation 2" in daemon.log
    assert "no worker switched" in daemon.log and "still serving generation 1" in daemon.log
    wait_until(lambda: len(reload_records(daemon)) == 1)
    (failed,) = reload_records(daemon)
    assert failed["result"] == "failure" and failed["generation"] == 1
    assert "no worker switched" in str(failed["error"])

    # Descriptors are back: the next reload installs on both workers.
    assert daemon.reload()
    assert all(daemon.blocked(name) for name in names("newly.example.org"))
    assert not any(daemon.blocked(name) for name in names("phishing.example.com"))
    status, body = daemon.http("/readyz")
    assert status == 200 and body.startswith("ready\ngeneration 2\n")
    metrics = daemon.metrics()
    assert metrics["filterd_install_failures_total"] == 1
    assert metrics["filterd_config_generation"] == 2
    assert daemon.worker_pids()[0] == worker  # the same process, not a restarted one
    wait_until(lambda: len(reload_records(daemon)) == 2)
    assert reload_records(daemon)[1]["result"] == "success"
