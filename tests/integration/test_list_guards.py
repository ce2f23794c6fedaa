"""A list never shrinks by accident, and a compile never hangs: the guards
against real processes (docs/configuration.md, ``lists`` and ``compile``).

Each case was found by hand on the previous code: a mandatory list replaced
by an HTML 502 page, a binary blob or one 50 MB line was "reloaded" with
almost no entries, and a list path that became a FIFO hung the reload
forever. Now each is refused, the last good version keeps serving, and the
refusal is logged, counted and alerted.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import DaemonFactory, standard_config
from tests.integration.daemon import FILTERD, Daemon
from tests.peers.authoritative import FakeUpstream

HTML_502 = b"""<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""


def refusals(daemon: Daemon, name: str, reason: str) -> float:
    return daemon.metrics()[f'filterd_list_refusals_total{{list="{name}",reason="{reason}"}}']


CORRUPTIONS = {
    "html error page for the mandatory list": ("national.txt", "national", HTML_502, "invalid"),
    "binary blob for the mandatory list": (
        "national.txt",
        "national",
        os.urandom(65536),
        "invalid",
    ),
    "empty local list": ("local.txt", "local", b"", "empty"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_list_file_is_refused_and_the_last_good_keeps_serving(
    make_daemon: DaemonFactory, upstream: FakeUpstream, case: str
) -> None:
    filename, name, content, reason = CORRUPTIONS[case]
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    assert daemon.blocked("www.gambling.example") and daemon.blocked("phishing.example.com")
    (daemon.directory / filename).write_bytes(content)
    assert not daemon.reload()
    assert daemon.blocked("www.gambling.example") and daemon.blocked("phishing.example.com")
    assert daemon.http("/readyz")[0] == 200
    assert refusals(daemon, name, reason) == 1
    assert f"reload rejected: list '{name}'" in daemon.log
    assert "the last good version keeps serving" in daemon.log
    assert "Traceback" not in daemon.log


def test_one_fifty_megabyte_line_is_refused(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    (daemon.directory / "local.txt").write_bytes(b"a" * (50 * 1024 * 1024))
    assert not daemon.reload(timeout=120)
    assert daemon.blocked("phishing.example.com")
    assert refusals(daemon, "local", "invalid") == 1


def test_a_large_shrink_waits_for_accept_shrink(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint))
    many = "".join(f"site{i}.shrink.example\n" for i in range(100))
    (daemon.directory / "local.txt").write_text(many)
    daemon.start()
    assert daemon.blocked("site99.shrink.example")
    (daemon.directory / "local.txt").write_text("site1.shrink.example\n")
    assert not daemon.reload()
    assert refusals(daemon, "local", "shrink") == 1
    assert daemon.blocked("site99.shrink.example")  # the last good version
    assert "filterd accept-shrink -c CONFIG local" in daemon.log
    check = filterd("check-config", "-c", str(daemon.config_path))
    assert check.returncode == 2 and "down from 100" in check.stderr, check.stderr
    accepted = filterd("accept-shrink", "-c", str(daemon.config_path), "local")
    assert accepted.returncode == 0, accepted.stderr
    assert daemon.reload()
    assert not daemon.blocked("site99.shrink.example")
    assert daemon.blocked("site1.shrink.example")
    # The acknowledgement was for that content only, and is used up.
    (daemon.directory / "local.txt").write_text(many)
    assert daemon.reload()  # growing is always fine
    (daemon.directory / "local.txt").write_text("site2.shrink.example\n")
    assert not daemon.reload()
    unknown = filterd("accept-shrink", "-c", str(daemon.config_path), "nope")
    assert unknown.returncode == 2 and "list files: national, local, exceptions" in unknown.stderr


def filterd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FILTERD), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_special_file_in_a_list_s_place_is_refused_at_once(
    make_daemon: DaemonFactory, upstream: FakeUpstream, kind: str
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    path = daemon.directory / "local.txt"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    started = time.monotonic()
    assert not daemon.reload()
    assert time.monotonic() - started < 10
    reason = "Is a directory" if kind == "directory" else "is not a regular file"
    assert f"cannot read list 'local': {reason}" in daemon.log or reason in daemon.log
    assert daemon.blocked("phishing.example.com")
    assert daemon.reload() is False  # still refused, and still not hung


def test_a_compile_past_its_timeout_is_killed_and_refused(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    daemon = make_daemon(standard_config(upstream.endpoint)).start()
    # The timeout is set by the reload itself (a first compile on a busy
    # machine can take over a second too).
    daemon.write_config(standard_config(upstream.endpoint, extra="compile: {timeout: 1}\n"))
    big = daemon.directory / "local.txt"
    with big.open("w") as out:
        for start in range(0, 3_000_000, 100_000):
            out.write("".join(f"n{i:07d}.slow.example\n" for i in range(start, start + 100_000)))
    started = time.monotonic()
    assert not daemon.reload(timeout=60)
    assert time.monotonic() - started < 20
    assert "did not finish in 1 s (compile.timeout)" in daemon.log
    assert daemon.blocked("phishing.example.com")
    assert not any(p.endswith(".tmp") for p in os.listdir(Path(daemon.directory, "state", "index")))
