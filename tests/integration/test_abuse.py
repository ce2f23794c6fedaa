"""Abuse from any source is bounded, and supervision never gives up.

Each test reproduces a case found by hand on the previous code, against the
real daemon on loopback (127.0.0.0/8 gives the tests several client
addresses: 127.0.0.1 and 127.0.1.1 are in different /24 prefixes):

- 1,000 TCP connections from a client outside ``access.allow`` held every
  slot (the access list was checked per message, not at accept);
- a client sending one byte every few seconds kept its connection forever
  (each byte restarted the idle timer);
- one client prefix could take every TCP slot;
- with the open-file limit exhausted, a dead worker was never restarted and
  DNS stayed down while ``/healthz`` said 200;
- a worker restart whose index file had been deleted failed for good.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from filterd.listeners.tcp import BACKLOG as TCP_BACKLOG
from tests.integration.conftest import DaemonFactory, standard_config
from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.ports import free_port
from tests.peers.processes import wait_until


def tcp_query(daemon: Daemon, name: str, source: str = "127.0.0.1") -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    return dns.query.tcp(query, "127.0.0.1", port=daemon.port, timeout=5, source=source)


@contextlib.contextmanager
def connections(port: int, count: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    opened = []
    try:
        for _ in range(count):
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(source, 0)
            )
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def tcp_metric(daemon: Daemon, name: str) -> float:
    return daemon.metrics()[f"filterd_tcp_{name}_total"]


# --------------------------------------------------------------------- TCP


def test_a_client_outside_the_access_list_is_closed_at_accept(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = standard_config(upstream.endpoint).replace(
        'allow: ["127.0.0.1/32", "::1/128"]', 'allow: ["127.0.0.2/32"]'
    )
    daemon = make_daemon(config).start()
    with connections(daemon.port, 200) as held:
        assert all(closed_by_peer(sock, 2.0) for sock in held[:20])
        # Every slot is free for an allowed client, however many were tried.
        assert tcp_query(daemon, "www.example.com", source="127.0.0.2").rcode() == dns.rcode.NOERROR
    wait_until(lambda: tcp_metric(daemon, "connections_denied") == 200)
    assert daemon.metrics()["filterd_tcp_connections"] == 0


def test_a_trickling_client_is_closed_by_the_message_deadline(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    extra = "server: {listen: ['{dns}'], tcp_message_timeout: 1, tcp_idle_timeout: 10}\n"
    daemon = make_daemon(
        standard_config(upstream.endpoint).replace('server: {listen: ["{dns}"]}\n', "") + extra
    ).start()
    query = dns.message.make_query("www.example.com", "A").to_wire()
    framed = len(query).to_bytes(2, "big") + query
    with connections(daemon.port, 1) as (sock,):
        started = time.monotonic()
        sock.settimeout(0.2)
        closed = False
        for byte in framed:  # one byte every 0.4 s: 17 s for the whole query
            try:
                sock.send(bytes((byte,)))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 6:
                break
        assert closed, "a trickling client kept its connection"
        assert time.monotonic() - started < 3
    assert tcp_metric(daemon, "slow_closed") == 1
    # A normal client on a fresh connection is answered at once.
    assert tcp_query(daemon, "www.example.com").rcode() == dns.rcode.NOERROR


def test_one_client_prefix_cannot_take_every_tcp_slot(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = (
        standard_config(upstream.endpoint)
        .replace(
            'server: {listen: ["{dns}"]}',
            'server: {listen: ["{dns}"], tcp_max_per_client: 5, tcp_max_connections: 20}',
        )
        .replace('allow: ["127.0.0.1/32", "::1/128"]', 'allow: ["127.0.0.0/8"]')
    )
    daemon = make_daemon(config).start()
    with connections(daemon.port, 12) as held:
        closed = [closed_by_peer(sock, 1.0) for sock in held]
        assert closed.count(True) == 7 and closed.count(False) == 5
        # Another prefix (127.0.1.0/24) still gets a slot.
        assert tcp_query(daemon, "www.example.com", source="127.0.1.1").rcode() == dns.rcode.NOERROR
        assert tcp_metric(daemon, "client_rejected") == 7
    wait_until(lambda: daemon.metrics()["filterd_tcp_connections"] == 0)
    assert tcp_query(daemon, "www.example.com").rcode() == dns.rcode.NOERROR  # slots come back


# ------------------------------------------------------------- supervision


def test_a_dead_worker_is_restarted_once_descriptors_come_back(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """fd exhaustion used to kill the supervisor's watch for good: DNS stayed
    down (filterd_workers 0) after the descriptors came back."""
    daemon = make_daemon(standard_config(upstream.endpoint)).start(nofile=64)
    assert daemon.metrics()["filterd_fd_limit"] == 64
    admin = int(daemon.admin.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        with contextlib.suppress(OSError):
            for _ in range(200):  # every descriptor the supervisor has left
                held.append(socket.create_connection(("127.0.0.1", admin), timeout=2))
        time.sleep(0.5)  # the server accepts them all
        (worker,) = daemon.worker_pids()
        os.kill(worker, signal.SIGKILL)
        time.sleep(3.0)  # several restart attempts fail for want of descriptors
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: daemon.http("/healthz")[0] == 200, timeout=60)
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    metrics = daemon.metrics()
    assert metrics["filterd_workers"] == 1
    assert metrics["filterd_worker_restart_failures_total"] >= 1
    assert "could not be restarted" in daemon.log


def test_healthz_is_unhealthy_while_a_worker_is_down(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    assert daemon.http("/healthz") == (200, "ok\nworkers 1 of 1 serving\n")
    seen_down = False
    for _ in range(3):  # the backoff grows: 0.5 s, 1 s, 2 s down
        (worker,) = daemon.worker_pids()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if daemon.http("/healthz") == (503, "unhealthy\nworkers 0 of 1 serving\n"):
                seen_down = True
                break
            time.sleep(0.02)

        def replaced(old: int = worker) -> bool:
            pids = daemon.worker_pids()
            return bool(pids) and pids != [old] and daemon.http("/healthz")[0] == 200

        wait_until(replaced, timeout=20)
    assert seen_down
    assert daemon.blocked("www.gambling.example")


def test_a_missing_index_is_compiled_again_when_a_worker_restarts(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    for index in (daemon.directory / "state" / "index").glob("*.fidx"):
        index.unlink()
    (worker,) = daemon.worker_pids()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: daemon.http("/readyz")[0] == 200 and daemon.worker_pids() != [worker])
    wait_until(lambda: daemon.http("/healthz")[0] == 200, timeout=30)
    assert daemon.blocked("www.gambling.example")
    assert "the index is missing, compiling it again" in daemon.log
    assert list((daemon.directory / "state" / "index").glob("*.fidx"))


def test_the_tcp_backlog_is_the_configured_one(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """asyncio listened again with a backlog of 100 over the supervisor's 1024."""
    config = standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], workers: 2}'
    )
    daemon = make_daemon(config).start()
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{daemon.port}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    # For a listening socket, ss's Send-Q column is the backlog.
    backlogs = [int(line.split()[2]) for line in listing.splitlines() if line.strip()]
    expected = min(TCP_BACKLOG, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    assert backlogs == [expected, expected]


# ------------------------------------------------- malformed upstream answers


def _junk_after(message: bytes) -> bytes:
    return message + b"\x00junk"


def _a_of_three_octets(message: bytes) -> bytes:
    """The first A record's rdlength set to 3 and one octet of its rdata cut."""
    qend = 12
    while message[qend]:
        qend += message[qend] + 1
    qend += 5
    rdlength_at = qend + 10  # owner pointer 2, type 2, class 2, TTL 4
    assert message[rdlength_at : rdlength_at + 2] == b"\x00\x04"
    rdata = rdlength_at + 2
    return message[:rdlength_at] + b"\x00\x03" + message[rdata : rdata + 3] + message[rdata + 4 :]


@pytest.mark.parametrize("mangle", [_junk_after, _a_of_three_octets])
def test_a_malformed_upstream_answer_is_servfail_and_never_cached(
    make_daemon: DaemonFactory, upstream: FakeUpstream, mangle: Callable[[bytes], bytes]
) -> None:
    upstream.add("malformed.example", "A", "192.0.2.33").behave("malformed.example", mangle=mangle)
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    for _ in range(2):
        assert daemon.query("malformed.example").rcode() == dns.rcode.SERVFAIL
    upstream.behave("malformed.example")  # the upstream is fixed
    answer = daemon.query("malformed.example")  # answered at once: nothing bad was cached
    assert answer.rcode() == dns.rcode.NOERROR
    assert str(answer.answer[0][0]) == "192.0.2.33"


# ------------------------------------------------------------ amplification


def test_any_is_answered_minimally_and_never_forwarded(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """ANY used to be forwarded in full: 45 bytes in, 1,216 out (27x)."""
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    query = dns.message.make_query("www.example.com", "ANY", use_edns=0, payload=4096)
    answer = dns.query.udp(query, "127.0.0.1", port=daemon.port, timeout=5)
    assert answer.rcode() == dns.rcode.NOERROR
    (rrset,) = answer.answer
    assert rrset.rdtype == dns.rdatatype.HINFO and rrset.ttl == 86400
    assert rrset[0].cpu == b"RFC8482" and rrset[0].os == b""
    assert len(answer.to_wire()) <= len(query.to_wire()) + 25  # no amplification
    assert not [record for record in upstream.log if record.qtype == "ANY"]
    metrics = daemon.metrics()
    assert metrics['filterd_queries_total{outcome="minimal",protocol="udp",qtype="ANY"}'] == 1


def flood(port: int, name: str, count: int, source: str = "127.0.0.1") -> list[dns.message.Message]:
    """Send ``count`` identical queries (distinct IDs) as fast as possible from
    one socket, reading what has come back after every 25 (so that the test's
    own receive buffer never overflows), then what comes within a second."""
    answers: list[dns.message.Message] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))

        def drain(wait: float) -> None:
            sock.settimeout(wait)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                while len(answers) < count:
                    answers.append(dns.message.from_wire(sock.recv(4096)))
                    sock.settimeout(wait)

        for number in range(count):
            query = dns.message.make_query(name, "A")
            query.id = number
            sock.sendto(query.to_wire(), ("127.0.0.1", port))
            if number % 25 == 24:
                drain(0.001)
        drain(1.0)
    return answers


def test_identical_answers_to_one_prefix_are_rate_limited_with_slip(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = standard_config(
        upstream.endpoint,
        extra="rate_limit: {responses_per_second: 10, burst: 20, slip: 2, exempt: []}\n",
    ).replace('allow: ["127.0.0.1/32", "::1/128"]', 'allow: ["127.0.0.0/8"]')
    daemon = make_daemon(config).start()
    started = time.monotonic()
    answers = flood(daemon.port, "www.example.com", 400)
    elapsed = time.monotonic() - started
    full = [a for a in answers if a.answer]
    slipped = [a for a in answers if a.flags & dns.flags.TC and not a.answer]
    assert 20 <= len(full) <= 20 + 10 * elapsed + 2
    over = 400 - len(full)
    assert abs(len(slipped) - over / 2) <= 1  # every second one over the limit
    metrics = daemon.metrics()
    assert metrics["filterd_rate_limit_slipped_total"] == len(slipped)
    assert metrics["filterd_rate_limit_dropped_total"] == over - len(slipped)
    # A slipped client retries over TCP and is answered; TCP is never limited.
    assert tcp_query(daemon, "www.example.com").answer
    # Another prefix, and another question, each have their own bucket.
    assert len([a for a in flood(daemon.port, "www.example.com", 5, "127.0.1.1") if a.answer]) == 5
    assert daemon.query("wild.example").rcode() == dns.rcode.NOERROR


# ---------------------------------------------------------------- fairness


def test_a_flood_of_uncached_names_from_one_prefix_leaves_room_for_others(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """A random-subdomain flood at a slow zone made 16-50 % of other
    subscribers' uncached lookups fail: max_inflight was one shared pool."""
    upstream.add("slow.example", "A", "192.0.2.44").behave("*", delay=2.0)
    upstream.add("www.other.example", "A", "192.0.2.45")  # as slow as the rest
    config = (
        standard_config(upstream.endpoint)
        .replace(
            'server: {listen: ["{dns}"]}',
            'server: {listen: ["{dns}"], max_inflight: 40, max_inflight_per_client: 10}',
        )
        .replace('allow: ["127.0.0.1/32", "::1/128"]', 'allow: ["127.0.0.0/8"]')
    )
    config = config.replace("timeout: 0.5, attempts: 2, deadline: 1.5", "timeout: 3, deadline: 4")
    daemon = make_daemon(config).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for number in range(30):  # 30 distinct uncached names: 10 go upstream
            query = dns.message.make_query(f"r{number}.slow.example", "A")
            sock.sendto(query.to_wire(), ("127.0.0.1", daemon.port))
        sock.settimeout(1.0)
        refused_at_once: list[int] = []
        with contextlib.suppress(TimeoutError):
            while len(refused_at_once) < 20:
                refused_at_once.append(dns.message.from_wire(sock.recv(4096)).rcode())
    assert refused_at_once == [dns.rcode.SERVFAIL] * 20
    # Meanwhile another subscriber's uncached lookup goes through.
    other = dns.message.make_query("www.other.example", "A")
    answer = dns.query.udp(other, "127.0.0.1", port=daemon.port, timeout=5, source="127.0.1.1")
    assert answer.rcode() == dns.rcode.NOERROR
    assert daemon.metrics()["filterd_forward_client_overload_total"] == 20


def test_the_inflight_bounds_fit_the_open_file_limit(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """With ulimit -n 1024, descriptors ran out before max_inflight: 900
    'socket.accept() out of system resource' errors in 10 s."""
    daemon = make_daemon(standard_config(upstream.endpoint)).start(nofile=1024)
    assert "open-file limit 1024: max_inflight 10000 ->" in daemon.log
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR


# ------------------------------------------------------------------- admin


def test_the_admin_listener_is_capped_and_notifications_can_move_out(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """1,500 idle connections to the admin port took every descriptor of the
    supervisor; /metrics and /v1/notify shared one uncapped listener."""
    notify_port = free_port()
    extra = (
        f"admin: {{listen: '{{admin}}', notify_listen: '127.0.0.1:{notify_port}', "
        "max_connections: 8}\n"
    )
    config = standard_config(upstream.endpoint).replace('admin: {listen: "{admin}"}\n', extra)
    daemon = make_daemon(config).start()
    admin = int(daemon.admin.rsplit(":", 1)[1])
    with connections(admin, 20) as held:
        closed = [closed_by_peer(sock, 1.0) for sock in held]
        assert closed.count(True) == 12  # the 8 first keep their slots
        assert daemon.http("/healthz")[0] == 0  # no slot left for anyone
    wait_until(lambda: daemon.http("/healthz")[0] == 200)
    assert daemon.metrics()["filterd_admin_connections_refused_total"] >= 12
    # Notifications are served on their own listener, and only there.
    assert post(daemon.admin_port, "/v1/notify") == 404
    assert post(notify_port, "/v1/notify") == 403  # reached, and refused: not signed
    assert post(notify_port, "/metrics") in (404, 405)


def post(port: int, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_loopback_clients_are_exempt_from_the_rate_limit_by_default(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    answers = flood(daemon.port, "www.example.com", 400)
    assert len([a for a in answers if a.answer]) == 400
    assert daemon.metrics()["filterd_rate_limit_dropped_total"] == 0


def test_empty_messages_do_not_keep_a_connection(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """Two zero bytes (a message of length 0, dropped unanswered) every second
    used to count as activity and keep the connection past the idle timeout."""
    config = standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], tcp_idle_timeout: 2}'
    )
    daemon = make_daemon(config).start()
    with connections(daemon.port, 1) as (sock,):
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8 and not closed:
            try:
                sock.send(b"\x00\x00")
            except OSError:
                closed = True
                break
            closed = closed_by_peer(sock, 1.0)
        assert closed and time.monotonic() - started < 5


# -------------------------------------------------------------- diagnostics


def test_a_flood_of_refused_notifications_writes_a_few_lines(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """Every refused notification wrote a warning: 196 KB/s at 2k requests/s."""
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    for _ in range(300):
        assert daemon.post_notify(b'{"type": "filterd-notify"}') == 403
    lines = [line for line in daemon.log.splitlines() if "notify refused" in line]
    assert 1 <= len(lines) <= 6
    assert daemon.metrics()["filterd_sync_notifies_refused_total"] == 300


def test_a_state_directory_that_cannot_be_written_is_named(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """A full or read-only state directory showed only 'list compiler exited
    with status 1'. (Tests run as root, for whom permissions do not stop a
    write: the index directory is replaced by a file instead.)"""
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    index = daemon.directory / "state" / "index"
    shutil.rmtree(index)
    index.write_text("not a directory\n")
    (daemon.directory / "local.txt").write_text("phishing.example.com\nmore.example.net\n")
    assert not daemon.reload()
    line = next(line for line in daemon.log.splitlines() if "reload rejected" in line)
    assert f"list compiler: {index}: File exists" in line, line
    assert "Traceback" not in daemon.log
