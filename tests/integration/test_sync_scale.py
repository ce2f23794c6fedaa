"""A 1,000,000-entry authority list syncs, changes and swaps while queries keep being answered.

Both ends are real processes on loopback: ``filterd authority`` imports the
first million valid names of the scale union in ../shared/data, publishes
and serves them; ``filterd run`` pulls the snapshot at start. While a client
thread keeps querying the node (a bounded loop, allowed and listed names
mixed), the authority publishes a 100-entry change (the node applies the
delta) and then a publication with no delta kept (the node must download the
whole snapshot, compile it in a child process and swap it in). Every query
must get its answer, allowed names must keep resolving and listed names keep
being blocked throughout. Speed is measured by bench/sync, not asserted here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from bench.data import load_blocklist
from tests.integration.conftest import DaemonFactory, synced_node
from tests.peers.authoritative import FakeUpstream
from tests.peers.processes import wait_until
from tests.peers.reference_authority import ServerFactory, cli, make_data

LIST_SIZE = 1_000_000
CHANGES = 100
MAX_QUERIES = 400_000
MAX_LOAD_SECONDS = 240.0
ALLOWED = [f"host{i}.allowed.example" for i in range(20)]


@dataclass
class Load:
    """One client thread querying the node until stopped (bounded in count and time)."""

    port: int
    listed: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: Counter[str] = field(default_factory=Counter)

    def run(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self.stop.is_set() and sent < MAX_QUERIES:
            if time.monotonic() - started > MAX_LOAD_SECONDS:
                break
            listed = sent % 4 == 3
            name = self.listed[sent % len(self.listed)] if listed else ALLOWED[sent % len(ALLOWED)]
            sent += 1
            query = dns.message.make_query(name, "A", use_edns=0)
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2.0)
            except dns.exception.Timeout:
                self.outcomes["lost"] += 1
                continue
            # A block carries an Extended DNS Error (RFC 8914); an allowed name resolves.
            blocked = answer.rcode() == dns.rcode.NXDOMAIN and bool(answer.options)
            resolved = answer.rcode() == dns.rcode.NOERROR and bool(answer.answer)
            self.outcomes["as expected" if (blocked if listed else resolved) else "wrong"] += 1


def covered(name: str, listed: set[str]) -> bool:
    """Whether a parent of ``name`` is listed (and so blocks it anyway)."""
    labels = name.split(".")
    return any(".".join(labels[i:]) in listed for i in range(1, len(labels)))


def test_a_million_entry_list_syncs_and_swaps_under_queries(
    shared_data: Path,
    tmp_path: Path,
    start_server: ServerFactory,
    make_daemon: DaemonFactory,
    upstream: FakeUpstream,
) -> None:
    names = load_blocklist(shared_data, LIST_SIZE + 2 * CHANGES)
    base, first, second = names[:LIST_SIZE], names[LIST_SIZE:][:CHANGES], names[-CHANGES:]
    listed = set(names)
    # Entries block their subdomains too: check with names no other entry covers.
    removed = next(n for n in base[:CHANGES] if not covered(n, listed))
    added = next(n for n in reversed(first) if not covered(n, listed))
    added_later = next(n for n in reversed(second) if not covered(n, listed))
    # Served upstream, so that an NXDOMAIN for them can only come from the list.
    for name in (*ALLOWED, removed, added, added_later):
        upstream.add(name, "A", "192.0.2.10")
    data = make_data(tmp_path)
    source = tmp_path / "national.domains"

    def publish(entries: list[str], *options: str) -> None:
        source.write_text("\n".join(entries) + "\n")
        cli("import", "--dir", data.path, "--list", "national", "--format", "domains", source)
        cli("publish", "--dir", data.path, "--list", "national", *options)

    cli("init", "--dir", data.path, "--list", "national")
    publish(base, "--no-notify")
    server = start_server(data)
    daemon = synced_node(make_daemon, data, server, upstream)
    daemon.start(wait_ready=False)
    daemon.wait_ready(timeout=120)
    assert daemon.metrics()['filterd_sync_entries{list="national"}'] == LIST_SIZE

    load = Load(daemon.port, base[CHANGES :: LIST_SIZE // 1000])  # listed throughout
    client = threading.Thread(target=load.run, name="load")
    client.start()
    try:
        # A 100-entry change: the node takes the delta.
        publish(base[CHANGES:] + first)
        wait_until(lambda: daemon.query(added).rcode() == dns.rcode.NXDOMAIN, timeout=120)
        assert daemon.query(removed).rcode() == dns.rcode.NOERROR  # removed from the list
        # No delta kept: the node downloads, compiles and swaps the whole list.
        publish(base[CHANGES:] + second, "--keep", "0")
        wait_until(lambda: daemon.query(added_later).rcode() == dns.rcode.NXDOMAIN, timeout=180)
        assert daemon.query(added).rcode() == dns.rcode.NOERROR
        time.sleep(1.0)  # queries after the swap, too
    finally:
        load.stop.set()
        client.join(MAX_LOAD_SECONDS + 10)

    metrics = daemon.metrics()
    assert metrics['filterd_sync_serial{list="national"}'] == 3
    assert sum(v for k, v in metrics.items() if k.startswith("filterd_sync_failures_total")) == 0
    assert load.outcomes["as expected"] > 1000, load.outcomes
    assert load.outcomes["lost"] == 0 and load.outcomes["wrong"] == 0, load.outcomes
    assert "Traceback" not in daemon.log
