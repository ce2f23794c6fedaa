"""End to end: reloads, stops, the CLI, workers, and the systemd unit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.conftest import DaemonFactory, standard_config
from tests.integration.daemon import FILTERD, Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.ports import free_port, ipv6_loopback_available
from tests.peers.processes import wait_until

REPO = Path(__file__).resolve().parents[2]


def filterd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FILTERD), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


# ------------------------------------------------------------------ reload


def test_sighup_swaps_in_a_new_list(make_daemon: DaemonFactory, upstream: FakeUpstream) -> None:
    upstream.add("newly.example.org", "A", "192.0.2.60")
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    assert daemon.query("newly.example.org").rcode() == dns.rcode.NOERROR
    assert daemon.query("phishing.example.com").rcode() == dns.rcode.NXDOMAIN
    (daemon.directory / "local.txt").write_text("newly.example.org\n")
    assert daemon.reload()
    assert daemon.query("newly.example.org").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("www.newly.example.org").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("phishing.example.com").rcode() != dns.rcode.NXDOMAIN
    assert daemon.metrics()["filterd_config_generation"] == 2
    assert "reload done: generation 2" in daemon.log


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("state_dir: state", "state_dir: [", "invalid YAML"),
        ("state_dir: state", "cache: {max_bytes: lots}", "cache.max_bytes: must be a whole"),
        ("path: local.txt", "path: missing.txt", "cannot read list 'local'"),
    ],
)
def test_bad_config_on_sighup_keeps_serving(
    make_daemon: DaemonFactory, upstream: FakeUpstream, old: str, new: str, message: str
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    assert daemon.query("gambling.example").rcode() == dns.rcode.NXDOMAIN
    good = daemon.config_path.read_text()
    assert old in good
    daemon.config_path.write_text(good.replace(old, new))
    assert not daemon.reload()
    assert daemon.query("gambling.example").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    assert daemon.http("/readyz")[0] == 200
    assert message in daemon.log and "still serving generation 1" in daemon.log
    assert "Traceback" not in daemon.log


def test_sigterm_drains_in_flight_queries_and_exits_zero(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    upstream.add("slow.example.com", "A", "192.0.2.70")
    upstream.behave("slow.example.com", delay=0.6)
    config = standard_config(upstream.endpoint).replace("timeout: 0.5", "timeout: 2.0")
    daemon = make_daemon(config.replace("deadline: 1.5", "deadline: 3.0")).start()
    answers: list[dns.message.Message] = []
    client = threading.Thread(target=lambda: answers.append(daemon.query("slow.example.com")))
    client.start()
    assert upstream.wait_for_queries(1, timeout=5)
    assert daemon.stop() == 0
    client.join(10)
    assert answers and str(answers[0].answer[0][0]) == "192.0.2.70"
    assert "stopped" in daemon.log


# --------------------------------------------------------------------- CLI


def test_check_config_reports_every_problem_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "upstream: {servers: ['192.0.2.1']}\n"
        "server:\n  listen: ['127.0.0.1:53']\n  wokers: 2\n"
        "lists:\n  - {name: a, path: a.txt, action: sinkhole}\n"
    )
    result = filterd("check-config", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"filterd: {config}:4: server.wokers: unknown key",
        f"filterd: {config}:6: lists[0].action: sinkhole needs blocking.sinkhole.ipv4 and/or ipv6",
    ]
    assert "Traceback" not in result.stderr


def test_check_config_reports_list_problems(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("good.example\n1.2.3.4\nbad..example\ngood2.example\n")
    config = tmp_path / "ok.yaml"
    config.write_text("upstream: {servers: ['192.0.2.1']}\nlists: [{name: l, path: l.txt}]\n")
    result = filterd("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "l: " in result.stdout and "4 entries, 2 accepted, 2 invalid, 0 ignored" in result.stdout
    assert (
        f"{tmp_path / 'l.txt'}:2: IP address or numeric top-level label: '1.2.3.4'" in result.stdout
    )
    assert f"{tmp_path / 'l.txt'}:3: empty label: 'bad..example'" in result.stdout


def test_unreadable_list_stops_start_up_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstream: {servers: ['192.0.2.1']}\nlists: [{name: l, path: nope.txt}]\n")
    result = filterd(
        "run", "-c", str(config), "--listen", f"127.0.0.1:{free_port()}", "--admin", "off"
    )
    assert result.returncode == 2
    assert "cannot read list 'l'" in result.stderr and "Traceback" not in result.stderr


def test_lookup_explains_a_decision(tmp_path: Path) -> None:
    shutil.copy(REPO / "blocklists" / "sample-national.txt", tmp_path / "n.txt")
    result = filterd("lookup", "WWW.Casino.Example.NET", "--blocklist", str(tmp_path / "n.txt"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "name: www.casino.example.net",
        "decision: blocked",
        "rule: block casino.example.net and its subdomains",
        f"list: cli-1 ({tmp_path / 'n.txt'}, version "
        + result.stdout.split("version ")[1].split(")")[0]
        + ")",
        "category: gambling",
        "action: nxdomain",
        "extended error: 15",
        "reference: sample-decision-001",
    ]
    allowed = filterd("lookup", "example.org", "--blocklist", str(tmp_path / "n.txt"))
    assert "decision: allowed (no rule matches)" in allowed.stdout


def test_run_without_a_config_file(tmp_path: Path, upstream: FakeUpstream) -> None:
    (tmp_path / "list.txt").write_text("0.0.0.0 blocked.example.com\n")
    daemon = Daemon(tmp_path, "")
    daemon.start_args = [
        "--listen",
        daemon.dns,
        "--upstream",
        upstream.endpoint,
        "--blocklist",
        str(tmp_path / "list.txt"),
        "--admin",
        daemon.admin,
    ]
    with daemon:
        assert daemon.query("www.blocked.example.com").rcode() == dns.rcode.NXDOMAIN
        assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
        assert "list cli-1 (hosts," in daemon.log


def test_version() -> None:
    result = filterd("--version")
    assert result.returncode == 0 and result.stdout.startswith("filterd ")


# ------------------------------------------------------------------ shapes


def test_two_workers_share_the_port(make_daemon: DaemonFactory, upstream: FakeUpstream) -> None:
    config = standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], workers: 2}'
    )
    daemon = make_daemon(config).start()
    for _ in range(40):  # many source ports: the kernel spreads them over both workers
        assert daemon.query("gambling.example").rcode() == dns.rcode.NXDOMAIN
    metrics = daemon.metrics()
    assert metrics["filterd_workers"] == 2
    assert metrics['filterd_queries_total{outcome="blocked",protocol="udp",qtype="A"}'] == 40
    # Histograms are summed bucket by bucket across workers.
    assert metrics['filterd_query_duration_seconds_count{path="fast",protocol="udp"}'] == 40


def test_two_workers_hold_one_cache(make_daemon: DaemonFactory, upstream: FakeUpstream) -> None:
    """Questions are steered to workers (filterd.listeners.steer): asked again
    from other source ports, in other case, every answer comes from the cache
    and every name went upstream once, not once per worker."""
    config = standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], workers: 2}'
    )
    names = [f"host{i}.example.com" for i in range(16)]
    for name in names:
        upstream.add(name, "A", "192.0.2.99")
    daemon = make_daemon(config).start()
    for name in names:
        assert daemon.query(name).rcode() == dns.rcode.NOERROR
    for _ in range(3):  # each query from a fresh source port
        for name in names:
            assert daemon.query(name.upper()).rcode() == dns.rcode.NOERROR
    assert [len(upstream.queries_for(name)) for name in names] == [1] * len(names)
    metrics = daemon.metrics()
    assert metrics["filterd_cache_hits_total"] == 3 * len(names)
    assert metrics["filterd_cache_entries"] == len(names)


def test_a_second_instance_on_the_same_port_is_refused(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    first = make_daemon(standard_config(upstream.endpoint)).start()
    second = make_daemon(standard_config(upstream.endpoint))
    second.write_config(standard_config(upstream.endpoint).replace("{dns}", first.dns))
    second.start(wait_ready=False)
    assert second.process is not None
    assert second.process.wait(30) == 1
    assert f"cannot listen on {first.dns}: Address already in use" in second.log


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_listener(make_daemon: DaemonFactory, upstream: FakeUpstream) -> None:
    port = free_port("::1")
    config = standard_config(upstream.endpoint).replace(
        'listen: ["{dns}"]', f'listen: ["{{dns}}", "[::1]:{port}"]'
    )
    make_daemon(config).start()
    query = dns.message.make_query("gambling.example", "A")
    assert dns.query.udp(query, "::1", port=port, timeout=5).rcode() == dns.rcode.NXDOMAIN
    assert dns.query.tcp(query, "::1", port=port, timeout=5).rcode() == dns.rcode.NXDOMAIN


def test_tcp_idle_connections_are_closed(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], tcp_idle_timeout: 0.5}'
    )
    daemon = make_daemon(config).start()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closed it
        assert time.monotonic() - started < 3.0
    assert daemon.metrics()["filterd_tcp_idle_closed_total"] == 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (REPO / "systemd" / "filterd.service").read_text()
    assert "ExecStart=/opt/filterd/bin/filterd run -c /etc/filterd/filterd.yaml" in unit
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit and "DynamicUser=yes" in unit
    # verify checks that ExecStart exists: point it at this checkout's console script.
    local = tmp_path / "filterd.service"
    local.write_text(unit.replace("/opt/filterd/bin/filterd", str(FILTERD)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "filterd.service" not in result.stderr


def test_bundled_configuration_is_valid() -> None:
    result = filterd("check-config", "-c", str(REPO / "config" / "filterd.yaml"))
    if "no nameserver in /etc/resolv.conf" in result.stderr:
        pytest.skip("this machine has no resolver in /etc/resolv.conf")
    assert result.returncode == 0, result.stderr
    assert "national-sample" in result.stdout and "configuration OK" in result.stdout


def test_python_is_the_venv_one() -> None:
    assert Path(sys.executable).parent == FILTERD.parent


def test_a_second_instance_on_the_same_state_directory_refuses_to_start(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    first = make_daemon(standard_config(upstream.endpoint)).start()
    second = make_daemon(standard_config(upstream.endpoint))
    # The same state directory as the first, on other ports.
    second.write_config(
        standard_config(upstream.endpoint).replace(
            "state_dir: state", f"state_dir: {first.directory / 'state'}"
        )
    )
    second.start(wait_ready=False)
    assert second.process is not None
    assert second.process.wait(30) == 1
    errors = [line for line in second.log.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, second.log
    assert first.process is not None
    assert f"is in use by another process (pid {first.process.pid})" in errors[0]
    assert first.query("www.example.com").rcode() == dns.rcode.NOERROR


def test_two_runs_without_a_config_file_both_start(tmp_path: Path, upstream: FakeUpstream) -> None:
    (tmp_path / "list.txt").write_text("blocked.example.com\n")
    daemons = []
    for number in range(2):
        directory = tmp_path / f"run{number}"
        directory.mkdir()
        daemon = Daemon(directory, "")
        daemon.start_args = ["--listen", daemon.dns, "--upstream", upstream.endpoint]
        daemon.start_args += ["--blocklist", str(tmp_path / "list.txt")]
        daemons.append(daemon.start(wait_ready=False))
    try:
        for daemon in daemons:
            wait_until(lambda d=daemon: serves(d), timeout=30)  # type: ignore[misc]
            assert daemon.blocked("www.blocked.example.com")
            assert daemon.http("/readyz")[0] == 0  # no admin listener unless asked
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0
    private = [line for d in daemons for line in d.log.splitlines() if "state in" in line]
    assert len(private) == 2
    for line in private:
        assert not Path(line.rsplit(" ", 2)[-2]).exists()  # removed at exit


def serves(daemon: Daemon) -> bool:
    try:
        daemon.query("www.example.com", timeout=0.5)
    except dns.exception.Timeout:
        return False
    return True


def test_workers_run_the_installed_filterd_not_a_filterd_directory_beside_them(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """Started from a checkout (the README's quick start) or any directory
    holding a ``filterd/`` package, workers and the list compiler must still
    import the installed filterd (its compiled build): ``python -m`` would
    put the current directory first on the path, so they start with ``-P``."""
    daemon = make_daemon(standard_config(upstream.endpoint))
    rogue = daemon.directory / "filterd"
    rogue.mkdir()
    marker = daemon.directory / "imported-from-cwd"
    (rogue / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise SystemExit('imported from the cwd')\n"
    )
    daemon.start()
    assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR
    assert daemon.query("casino.example").rcode() == dns.rcode.NXDOMAIN
    assert not marker.exists()
