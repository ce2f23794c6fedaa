"""Run the real ``filterd`` console script as a process, the way an operator does.

``Daemon`` writes a YAML configuration (placeholders ``{dns}`` and
``{admin}`` become free loopback endpoints), starts ``filterd run -c``,
waits for ``/readyz``, and offers the operator's tools: queries with
dnspython and ``dig``, a metrics scrape parsed into exact numbers, SIGHUP
reloads, SIGTERM stops returning the exit status. It only ever signals the
PID it started, and every start is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from prometheus_client.parser import text_string_to_metric_families

from tests.peers.ports import free_port
from tests.peers.processes import terminate

FILTERD = Path(sys.executable).parent / "filterd"
START_TIMEOUT = 30.0


class DaemonError(RuntimeError):
    pass


class Daemon:
    def __init__(self, directory: Path, config: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.admin_port = free_port()
        self.dns = f"127.0.0.1:{self.port}"
        self.admin = f"127.0.0.1:{self.admin_port}"
        self.config_path = directory / "filterd.yaml"
        self.write_config(config)
        self.log_path = directory / "filterd.log"
        self.start_args = ["-c", str(self.config_path)]
        """Arguments after ``filterd run``; tests may replace them before ``start``."""
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, config: str) -> None:
        text = config.replace("{dns}", self.dns).replace("{admin}", self.admin)
        text = text.replace("{dir}", str(self.directory))
        self.config_path.write_text(text)

    # --------------------------------------------------------------- process

    def start(self, *, wait_ready: bool = True, nofile: int | None = None) -> Self:
        """Start ``filterd run``; ``nofile`` sets its open-file limit (soft and
        hard), as a shell's ``ulimit -n`` would."""

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(FILTERD), "run", *self.start_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                preexec_fn=limit if nofile is not None else None,  # noqa: PLW1509 - no threads
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DaemonError(f"filterd exited with {self.process.returncode}:\n{self.log}")
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.05)
        raise DaemonError(f"filterd not ready after {timeout}s:\n{self.log}")

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (children of the daemon running
        ``filterd.worker``), found in /proc."""
        assert self.process is not None
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"filterd.worker" in cmdline:
                pids.append(int(entry.name))
        return sorted(pids)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the daemon and return its exit status."""
        process = self.process
        if process is None:
            return 0
        if not terminate(process, timeout):
            raise DaemonError(f"filterd did not stop in {timeout}s:\n{self.log}")
        self.process = None
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            with contextlib.suppress(DaemonError):
                self.stop()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ----------------------------------------------------------------- tools

    def query(
        self,
        name: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        edns: bool = True,
        timeout: float = 5.0,
        want_dnssec: bool = False,
        payload: int = 1232,
    ) -> dns.message.Message:
        message = dns.message.make_query(
            name,
            dns.rdatatype.from_text(rdtype),
            use_edns=0 if edns else False,
            want_dnssec=want_dnssec,
            payload=payload,
        )
        if tcp:
            return dns.query.tcp(message, "127.0.0.1", port=self.port, timeout=timeout)
        return dns.query.udp(message, "127.0.0.1", port=self.port, timeout=timeout)

    def blocked(self, name: str, rdtype: str = "A") -> bool:
        """Blocked by a list: NXDOMAIN with an Extended DNS Error (RFC 8914),
        not merely a name the upstream does not know."""
        answer = self.query(name, rdtype)
        return answer.rcode() == dns.rcode.NXDOMAIN and any(
            isinstance(option, dns.edns.EDEOption) for option in answer.options
        )

    def dig(self, *args: str) -> str:
        result = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(self.port), "+tries=1", "+time=5", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def post_notify(self, body: bytes) -> int:
        """POST an authority notification to the admin endpoint; the HTTP status."""
        url = f"http://{self.admin}/v1/notify"
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def metrics(self) -> dict[str, float]:
        """Every sample as ``name{label="v",...}`` (labels sorted) -> value."""
        status, text = self.http("/metrics")
        assert status == 200, text
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def reload(self, timeout: float = 30.0) -> bool:
        """SIGHUP; True once the reload succeeded, False once it was rejected."""
        before = self.metrics()
        ok_key = 'filterd_config_reloads_total{result="success"}'
        bad_key = 'filterd_config_reloads_total{result="failure"}'
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.metrics()
            if now[ok_key] > before[ok_key]:
                return True
            if now[bad_key] > before[bad_key]:
                return False
            time.sleep(0.05)
        raise DaemonError(f"reload did not finish in {timeout}s:\n{self.log}")
