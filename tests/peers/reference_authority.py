"""The real reference authority, ``filterd authority``, driven as processes.

``cli`` runs one command and checks that an error stays one line with the
documented status; ``Data`` is a data directory prepared with it; ``Server``
is ``filterd authority serve`` on 127.0.0.1, started and stopped by its PID.
Shared by the authority's own end-to-end tests and by the node-side tests
that need a real authority (a large list synced under load).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from filterd.sync.model import load_public_key
from tests.peers.ports import free_port
from tests.peers.processes import terminate

FILTERD = Path(sys.executable).parent / "filterd"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 120.0


# ------------------------------------------------------------------ CLI


def cli(*args: str | Path, status: int = 0) -> subprocess.CompletedProcess[str]:
    """Run one authority command; check its exit status and that errors stay one line."""
    result = subprocess.run(
        [str(FILTERD), "authority", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert result.returncode == status, f"{args}: {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    if status:
        assert result.stderr.count("\n") == 1, result.stderr
    return result


@dataclass
class Data:
    """A data directory prepared with the CLI, and what its commands printed."""

    path: Path
    public_key: Ed25519PublicKey
    tokens: dict[str, str] = field(default_factory=dict)
    admin_token_file: Path = Path()

    @property
    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    def add_operator(self, operator: str, *notify: str) -> str:
        options = [item for url in notify for item in ("--notify", url)]
        result = cli("operator", "add", "--dir", self.path, "--id", operator, *options)
        self.tokens[operator] = result.stdout.splitlines()[0]
        return self.tokens[operator]

    def history(self, list_id: str) -> list[dict[str, Any]]:
        text = (self.path / "lists" / list_id / "history.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


def make_data(directory: Path) -> Data:
    path = directory / "data"
    keygen = cli("keygen", "--dir", path)
    data = Data(path, load_public_key(keygen.stdout.splitlines()[0]))
    data.admin_token_file = directory / "admin.token"
    data.admin_token_file.write_text("admin-" + "x1" * 16 + "\n")
    return data


# --------------------------------------------------------------- server


class Server:
    """``filterd authority serve`` as a process on 127.0.0.1."""

    def __init__(self, data: Data, *options: str, tls: ssl.SSLContext | None = None) -> None:
        self.data = data
        self.port = free_port()
        self.log_path = data.path.parent / f"serve-{self.port}.log"
        self.options = options
        self.tls = tls
        """The client side of ``--tls-cert``: requests then go over HTTPS."""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        command = [str(FILTERD), "authority", "serve", "--dir", str(self.data.path)]
        command += ["--listen", f"127.0.0.1:{self.port}", *self.options]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"serve not answering after {START_TIMEOUT}s:\n{self.log}")

    def stop(self) -> int:
        """SIGTERM the server (by its PID) and return its exit status."""
        process, self.process = self.process, None
        if process is None:
            return 0
        terminate(process, STOP_TIMEOUT)
        return process.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request with the path sent exactly as given (no client normalisation)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connection = (
            http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.tls)
            if self.tls
            else http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        )
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def get(self, path: str, operator: str = "vnpt-hanoi") -> tuple[int, bytes]:
        status, _, body = self.request("GET", path, token=self.data.tokens[operator])
        return status, body

    def post_receipt(self, operator: str, document: dict[str, Any]) -> int:
        body = json.dumps(document).encode()
        headers = {"Content-Type": "application/json"}
        token = self.data.tokens[operator]
        return self.request("POST", "/v1/receipts", token=token, body=body, headers=headers)[0]


ServerFactory = Callable[..., Server]
