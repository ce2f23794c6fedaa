"""Fixtures for end-to-end tests: a real upstream on loopback and filterd processes."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon
from tests.peers.authoritative import FakeUpstream
from tests.peers.authority import FakeAuthority
from tests.peers.reference_authority import Data, Server, ServerFactory

NATIVE_LIST = """#filterd-list 1
gambling.example      block        gambling   decision-001
adult.example         block        adult      decision-002
games.example         block-exact  games      decision-003
wild.example          block-below  fraud      decision-004
"""

UPSTREAM_ZONE = """
www.example.com.          300 IN A     192.0.2.10
www.example.com.          300 IN AAAA  2001:db8::10
www.example.com.          300 IN MX    10 mail.example.com.
www.example.com.          300 IN TXT   "v=spf1 -all"
login.phishing.example.com. 300 IN A   192.0.2.20
safe.gambling.example.    300 IN A     192.0.2.21
alias.example.com.        300 IN CNAME ads.tracker.example.net.
ads.tracker.example.net.  300 IN A     192.0.2.22
sub.games.example.        300 IN A     192.0.2.23
wild.example.             300 IN A     192.0.2.24
"""


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """An authoritative upstream with the zone above, on 127.0.0.1, port 0."""
    server = FakeUpstream()
    server.add_zone_text(UPSTREAM_ZONE)
    server.add_large_txt("large.example.com")
    with server:
        yield server


@pytest.fixture
def authority() -> Iterator[FakeAuthority]:
    """The fake authority (tests/peers/authority.py) on a loopback port."""
    with FakeAuthority() as server:
        yield server


def standard_config(*servers: str, upstream: str = "", extra: str = "") -> str:
    """The configuration most tests use; ``upstream`` adds keys to that section."""
    listed = ", ".join(f'"{server}"' for server in servers)
    return f"""
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.1/32", "::1/128"]}}
upstream: {{servers: [{listed}], timeout: 0.5, attempts: 2, deadline: 1.5{upstream}}}
blocking:
  sinkhole: {{ipv4: 192.0.2.80}}
  category_actions: {{adult: sinkhole}}
lists:
  - {{name: national, path: national.txt, format: native, mandatory: true}}
  - {{name: local, path: local.txt, format: domains, category: malware}}
  - {{name: exceptions, path: allow.txt, format: domains, kind: allow}}
admin: {{listen: "{{admin}}"}}
state_dir: state
{extra}"""


def write_lists(directory: Path) -> None:
    (directory / "national.txt").write_text(NATIVE_LIST)
    (directory / "local.txt").write_text("phishing.example.com\ntracker.example.net\n")
    (directory / "allow.txt").write_text("login.phishing.example.com\nsafe.gambling.example\n")


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Build daemons in their own directory; every one started is stopped at the end."""
    started: list[Daemon] = []

    def factory(config: str, *, lists: bool = True) -> Daemon:
        directory = tmp_path / f"d{len(started)}"
        directory.mkdir()
        if lists:
            write_lists(directory)
        daemon = Daemon(directory, config)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        daemon.__exit__(None, None, None)


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start servers for one test; each is stopped by its PID when the test ends."""
    started: list[Server] = []

    def start(data: Data, *options: str, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(data, *options, tls=tls)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


NATIONAL_SYNCED = "  - {name: national, sync: national, mandatory: true}\n"


def synced_node(
    make_daemon: DaemonFactory,
    data: Data,
    server: Server,
    upstream: FakeUpstream,
    *,
    lists: str = NATIONAL_SYNCED,
    extra: str = "",
    sync_extra: str = "",
) -> Daemon:
    """A (not yet started) ``filterd run`` that syncs ``lists`` (by default
    ``national``) from a real ``filterd authority serve``, registered there as
    vnpt-hanoi/resolver-01 with its admin endpoint as the notification
    address; ``extra`` adds top-level sections, ``sync_extra`` keys of ``sync``."""
    key = (data.path / "authority.pub").read_text().strip()
    daemon = make_daemon(
        f"""
server: {{listen: ["{{dns}}"]}}
access: {{allow: ["127.0.0.1/32"]}}
upstream: {{servers: ["{upstream.endpoint}"], timeout: 0.5, deadline: 1.5}}
lists:
{lists}sync:
  url: "{server.url}/v1/"
  token_file: token
  public_key: "{key}"
  operator: vnpt-hanoi
  node: resolver-01
  interval: 3600
  timeout: 30
{sync_extra}admin: {{listen: "{{admin}}"}}
state_dir: state
{extra}""",
        lists=False,
    )
    token = data.add_operator("vnpt-hanoi", f"http://{daemon.admin}")
    (daemon.directory / "token").write_text(token + "\n")
    return daemon
