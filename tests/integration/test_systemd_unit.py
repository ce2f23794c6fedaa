"""The systemd unit's sandbox: its exposure score, and filterd working inside it.

There is no systemd as PID 1 here, so the unit is never started for real
(``test_lifecycle.py`` checks that ``systemd-analyze verify`` accepts it).
``sandbox.py`` applies what the unit asks of the kernel (system call filter,
MemoryDenyWriteExecute, no new privileges, umask, a ``/proc`` of the
process's own) to the real daemon, which then starts its workers, resolves,
reloads through the list compiler child and stops.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Self

import dns.rcode
import pytest

from tests.integration.conftest import DaemonFactory, standard_config
from tests.integration.daemon import FILTERD, Daemon
from tests.peers.authoritative import FakeUpstream

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "filterd.service"
SANDBOX = Path(__file__).with_name("sandbox.py")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
def test_exposure_is_at_most_2() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


@needs_analyze
def test_the_score_counts_the_sandbox(tmp_path: Path) -> None:
    """The parse reads the score of this unit: without its system call
    filter the same unit rates worse than the bound."""
    unfiltered = tmp_path / "filterd.service"
    lines = UNIT.read_text().splitlines()
    unfiltered.write_text("\n".join(x for x in lines if not x.startswith("SystemCallFilter=")))
    assert exposure(unfiltered) > MAX_EXPOSURE


# ------------------------------------------------------------- in the sandbox


def sandbox_unavailable() -> str:
    """Why the sandbox cannot run here, or ""."""
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze not installed"
    if not ctypes.util.find_library("seccomp"):
        return "libseccomp not installed"
    if os.geteuid() != 0:
        return "a private /proc needs root"
    probe = subprocess.run(
        [sys.executable, str(SANDBOX), str(UNIT), "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:  # e.g. a kernel before 6.3 (no PR_SET_MDWE) or no mount rights
        return f"cannot apply the unit's restrictions here: {probe.stderr.strip()[-200:]}"
    return ""


needs_sandbox = pytest.mark.skipif(
    bool(reason := sandbox_unavailable()) if sys.platform == "linux" else True,
    reason=reason if sys.platform == "linux" else "Linux only",
)


def sandboxed(*command: str) -> list[str]:
    return [sys.executable, str(SANDBOX), str(UNIT), "--", *command]


class SandboxedDaemon(Daemon):
    """``filterd run`` started through ``sandbox.py`` (its children inherit it)."""

    def start(self, *, wait_ready: bool = True, nofile: int | None = None) -> Self:
        assert nofile is None, "the sandbox keeps the limit it is given"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                sandboxed(str(FILTERD), "run", *self.start_args),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        if wait_ready:
            self.wait_ready()
        return self


@needs_sandbox
def test_daemon_serves_reloads_and_stops_inside_the_sandbox(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    config = standard_config(upstream.endpoint).replace(
        'server: {listen: ["{dns}"]}', 'server: {listen: ["{dns}"], workers: 2}'
    )
    directory = make_daemon(config).directory  # the lists, and a directory of its own
    daemon = SandboxedDaemon(directory, config)
    with daemon:  # started here, stopped by its PID on the way out
        assert daemon.query("www.example.com").rcode() == dns.rcode.NOERROR  # forwarded
        assert daemon.query("phishing.example.com").rcode() == dns.rcode.NXDOMAIN  # blocked
        assert daemon.query("large.example.com", "TXT", tcp=True).rcode() == dns.rcode.NOERROR
        (daemon.directory / "local.txt").write_text("www.example.com\n")
        assert daemon.reload()  # the compiler child, NumPy and all
        assert daemon.query("www.example.com").rcode() == dns.rcode.NXDOMAIN
        assert daemon.metrics()["filterd_workers"] == 2
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log, daemon.log
    index_files = [p for p in (daemon.directory / "state").rglob("*") if p.is_file()]
    assert index_files and all(p.stat().st_mode & 0o077 == 0 for p in index_files)  # UMask=0077


@needs_sandbox
def test_compiler_gets_idle_priority_inside_the_sandbox() -> None:
    """The two calls the filter lets through for the compiler really pass:
    it runs SCHED_IDLE in an autogroup at nice 19 (its own session, as
    ``compile_in_child`` starts it, so this test's group is left alone)."""
    script = (
        "import os\n"
        "from filterd.lists.compile_child import run_idle\n"
        "run_idle()\n"
        "print(os.sched_getscheduler(0) == os.SCHED_IDLE)\n"
        "print(open('/proc/self/autogroup').read().split()[-1])\n"
        "print(os.path.exists('/proc/stat'))\n"
    )
    result = subprocess.run(
        sandboxed(sys.executable, "-c", script),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr
    # ProcSubset=pid: no system-wide files such as /proc/stat. (ProtectProc=
    # invisible hides other users' processes, which root here still sees.)
    assert result.stdout.split() == ["True", "19", "False"], result.stdout
