"""UnboundPeer: a real Unbound (/usr/sbin/unbound) on loopback serving only local data.

Contract:

* One `unbound -d -c <generated config>` child process per start(), in a fresh
  temporary directory: no chroot, no user switch, no daemon, no remote control,
  no pidfile outside that directory, logs to a file there (`log_text()`).
* It listens on `host` (127.0.0.1 by default) on a port that `free_port` found
  free for UDP and TCP (Unbound cannot take port 0); if Unbound still loses the
  port to a race it is restarted on another, at most three times.
* It never contacts the Internet: `module-config` has no validator, the only
  outgoing interface is loopback, and names outside the caller's zones are
  answered by a `local-zone: "." refuse` -> REFUSED (except Unbound's built-in
  default zones such as localhost., test., invalid., onion. and the private
  reverse zones, which Unbound answers itself, mostly NXDOMAIN).  With
  `forward_to="127.0.0.1:PORT"` everything outside the zones is forwarded to
  that loopback server (e.g. a FakeUpstream) instead of being refused.
* Each zone gets an SOA (unless the caller's data has one at the apex), so
  NXDOMAIN/NODATA inside a zone carry an SOA.
* How the data is served:
  - "local-zone" (default without RPZ): `local-zone: "<zone>." static` plus
    `local-data:` lines.
  - "auth-zone" (default with RPZ): the data goes into a zone file loaded as an
    `auth-zone:` (for-downstream only) under a `transparent` local zone.  This
    matters because Unbound applies RPZ QNAME triggers *after* local-zones:
    local-data would shadow the RPZ and blocked names would still resolve.
* RPZ (`rpz_zone_text`): written to a zone file for an `rpz:` clause (Unbound
  1.17 syntax: name + zonefile) with `module-config: "respip iterator"`.  The
  text may omit $ORIGIN/SOA/NS; they are added.  `rpz_nxdomain()` builds it
  from a plain list of blocked names.
* Readiness: start() returns only after Unbound answered a query over UDP and
  over TCP (bounded by `startup_timeout`); otherwise it kills the process and
  raises UnboundStartError with Unbound's log.
* stop(): SIGTERM to exactly the PID it started, wait, SIGKILL if needed, wait;
  then the temporary directory is removed.  Idempotent; context manager.
* If the binary is absent, start() raises UnboundUnavailable; tests should
  check `unbound_available()` first and skip with `UNBOUND_MISSING`.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

import dns.exception
import dns.message
import dns.query

from tests.peers.ports import format_endpoint, free_port, parse_endpoint
from tests.peers.processes import terminate

UNBOUND_BINARY = Path("/usr/sbin/unbound")
UNBOUND_MISSING = (
    f"{UNBOUND_BINARY} is not installed (Debian package 'unbound'; tests/run installs it)"
)
DEFAULT_RPZ_NAME = "rpz.filterd-peers."
DataMode = Literal["local-zone", "auth-zone"]

_PORT_ATTEMPTS = 3
_STOP_GRACE = 5.0
_PROBE_TIMEOUT = 0.3
_PR_SET_PDEATHSIG = 1
_CLASSES = frozenset({"IN", "CH", "HS", "CS"})


class UnboundUnavailable(RuntimeError):
    """The unbound binary is not installed on this machine."""


class UnboundStartError(RuntimeError):
    """Unbound exited or did not answer in time; the message holds its log."""


def unbound_available(binary: Path = UNBOUND_BINARY) -> bool:
    """Whether the unbound binary exists and is executable."""
    return binary.is_file() and binary.stat().st_mode & 0o111 != 0


def rpz_nxdomain(names: Iterable[str], *, include_subdomains: bool = True) -> str:
    """RPZ zone text answering NXDOMAIN for `names` (and their subdomains by default).

    Owner names are written relative to the RPZ origin, as RPZ requires.
    """
    lines: list[str] = []
    for name in names:
        bare = name.strip().rstrip(".").lower()
        if not bare:
            continue
        lines.append(f"{bare} CNAME .")
        if include_subdomains:
            lines.append(f"*.{bare} CNAME .")
    return "\n".join(lines) + "\n"


def _zone_key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _record_owner_and_type(record: str) -> tuple[str, str]:
    """(owner, TYPE) of a presentation-format record, skipping TTL and class fields."""
    fields = record.split()
    if len(fields) < 3:
        raise ValueError(f"not a resource record: {record!r}")
    for field in fields[1:]:
        upper = field.upper()
        if field.isdigit() or upper in _CLASSES:
            continue
        return fields[0], upper
    raise ValueError(f"no type in resource record: {record!r}")


def _quote(value: str) -> str:
    """Quote a value for unbound.conf, which accepts either quote character."""
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError(f"cannot quote a value holding both quote characters: {value!r}")


def _within(name_key: str, zone_key: str) -> bool:
    return name_key == zone_key or name_key.endswith("." + zone_key)


def _parent_death_signal_hook() -> Callable[[], None] | None:
    """A pre-exec hook making the child die with the test run (Linux prctl).

    prctl is looked up here, in the parent, so that the forked child only calls
    one C function and takes no Python-level locks (the usual preexec_fn risk).
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook


class UnboundPeer:
    """A real Unbound answering the caller's local data; see the module doc."""

    def __init__(
        self,
        local_data: Sequence[str] = (),
        zones: Sequence[str] = (),
        *,
        rpz_zone_text: str | None = None,
        rpz_zone_name: str = DEFAULT_RPZ_NAME,
        forward_to: str | None = None,
        host: str = "127.0.0.1",
        data_mode: DataMode | None = None,
        extra_server_config: Sequence[str] = (),
        startup_timeout: float = 10.0,
        binary: Path = UNBOUND_BINARY,
    ) -> None:
        """local_data: zone-file records with absolute owner names, each inside `zones`.

        data_mode defaults to "auth-zone" when an RPZ is given, else "local-zone".
        extra_server_config: raw lines appended to the `server:` clause.
        """
        self._zones = [_zone_key(zone) for zone in zones]
        self._local_data = [line.strip() for line in local_data if line.strip()]
        self._records_by_zone = self._assign_records()
        self._rpz_text = rpz_zone_text
        self._rpz_name = rpz_zone_name.rstrip(".") + "."
        self._forward = parse_endpoint(forward_to) if forward_to is not None else None
        self._host = host
        self._mode: DataMode = data_mode or ("auth-zone" if rpz_zone_text else "local-zone")
        self._extra = list(extra_server_config)
        self._startup_timeout = startup_timeout
        self._binary = binary
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: IO[bytes] | None = None
        self._last_log = ""
        self._config = ""

    def _assign_records(self) -> dict[str, list[str]]:
        """Each record under its most specific zone; a record outside all zones is an error."""
        by_zone: dict[str, list[str]] = {zone: [] for zone in self._zones}
        for record in self._local_data:
            owner, _ = _record_owner_and_type(record)
            if not owner.endswith("."):
                raise ValueError(
                    f"local_data owner names must be absolute (end in '.'): {record!r}"
                )
            matches = [zone for zone in self._zones if _within(_zone_key(owner), zone)]
            if not matches:
                raise ValueError(f"{record!r} is outside every zone in {self._zones}")
            by_zone[max(matches, key=len)].append(record)
        return by_zone

    # ------------------------------------------------------------ accessors

    @property
    def address(self) -> str:
        """The listening IP address, e.g. '127.0.0.1'."""
        return self._host

    @property
    def port(self) -> int:
        """The listening port (UDP and TCP); only meaningful once started."""
        if self._port == 0:
            raise RuntimeError("UnboundPeer has no port until start()")
        return self._port

    @property
    def endpoint(self) -> str:
        """'127.0.0.1:PORT', the form filterd's upstream settings take."""
        return format_endpoint(self._host, self.port)

    @property
    def pid(self) -> int | None:
        """PID of the running Unbound, None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def data_mode(self) -> DataMode:
        """How the local data is served ("local-zone" or "auth-zone")."""
        return self._mode

    @property
    def config_text(self) -> str:
        """The unbound.conf of the current (or last) run, for debugging failures."""
        return self._config

    def log_text(self) -> str:
        """Unbound's log so far (of the last run once stopped)."""
        if self._tmp is not None:
            path = Path(self._tmp.name) / "unbound.log"
            if path.exists():
                return path.read_text(errors="replace")
        return self._last_log

    # ------------------------------------------------------------- config

    def _zone_records(self, zone: str) -> list[str]:
        """The zone's records, with a default SOA first unless the caller gave one."""
        records = list(self._records_by_zone[zone])
        owners_types = [_record_owner_and_type(record) for record in records]
        if not any(_zone_key(o) == zone and t == "SOA" for o, t in owners_types):
            apex = f"{zone}."
            records.insert(0, f"{apex} 3600 IN SOA ns.{apex} hostmaster.{apex} 1 3600 600 86400 60")
        return records

    def _rpz_file_text(self) -> str:
        text = self._rpz_text or ""
        head = [f"$ORIGIN {self._rpz_name}"]
        body_types = {
            _record_owner_and_type(line)[1]
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith((";", "$"))
        }
        if "SOA" not in body_types:
            head.append("@ 60 IN SOA localhost. hostmaster.localhost. 1 3600 600 86400 60")
            head.append("@ 60 IN NS localhost.")
        return "\n".join(head) + "\n" + text + ("\n" if not text.endswith("\n") else "")

    def _write_config(self, directory: Path, port: int) -> str:
        """unbound.conf for this run; zone files are written beside it."""
        ipv6 = ":" in self._host or (self._forward is not None and ":" in self._forward[0])
        server = [
            f"interface: {self._host}",
            f"port: {port}",
            "do-daemonize: no",
            'chroot: ""',
            'username: ""',
            f'directory: "{directory}"',
            f'pidfile: "{directory / "unbound.pid"}"',
            "use-syslog: no",
            'logfile: ""',  # stderr, which start() sends to unbound.log
            "log-time-ascii: yes",
            "verbosity: 1",
            "num-threads: 1",
            "so-reuseport: no",
            "outgoing-range: 64",
            "num-queries-per-thread: 64",
            "do-ip4: yes",
            f"do-ip6: {'yes' if ipv6 else 'no'}",
            # Loopback only: even a misconfiguration cannot send packets off this host.
            "outgoing-interface: 127.0.0.1",
            "qname-minimisation: no",
            "access-control: 127.0.0.0/8 allow",
            "access-control: ::1 allow",
            f'module-config: "{"respip iterator" if self._rpz_text is not None else "iterator"}"',
        ]
        if ipv6:
            server.append("outgoing-interface: ::1")
        if self._forward is None:
            server.append('local-zone: "." refuse')
        else:
            server.append("do-not-query-localhost: no")
        for zone in self._zones:
            kind = "static" if self._mode == "local-zone" else "transparent"
            server.append(f'local-zone: "{zone}." {kind}')
            if self._mode == "local-zone":
                server.extend(f"local-data: {_quote(r)}" for r in self._zone_records(zone))
        server.extend(self._extra)
        lines = ["server:", *(f"    {line}" for line in server)]
        lines += ["remote-control:", "    control-enable: no"]
        if self._mode == "auth-zone":
            for index, zone in enumerate(self._zones):
                path = directory / f"zone{index}.zone"
                path.write_text("$ORIGIN .\n" + "\n".join(self._zone_records(zone)) + "\n")
                lines += [
                    "auth-zone:",
                    f'    name: "{zone}."',
                    f'    zonefile: "{path}"',
                    "    for-downstream: yes",
                    "    for-upstream: no",
                    "    fallback-enabled: no",
                ]
        if self._rpz_text is not None:
            path = directory / "rpz.zone"
            path.write_text(self._rpz_file_text())
            lines += ["rpz:", f'    name: "{self._rpz_name}"', f'    zonefile: "{path}"']
        if self._forward is not None:
            forward_host, forward_port = self._forward
            lines += [
                "forward-zone:",
                '    name: "."',
                f"    forward-addr: {forward_host}@{forward_port}",
            ]
        config = "\n".join(lines) + "\n"
        (directory / "unbound.conf").write_text(config)
        return config

    # ----------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Start Unbound and wait until it answers over UDP and TCP."""
        if self._process is not None:
            raise RuntimeError("UnboundPeer already started")
        if not unbound_available(self._binary):
            raise UnboundUnavailable(
                UNBOUND_MISSING.replace(str(UNBOUND_BINARY), str(self._binary), 1)
            )
        deadline = time.monotonic() + self._startup_timeout
        for attempt in range(_PORT_ATTEMPTS):
            self._tmp = tempfile.TemporaryDirectory(prefix="unbound-peer-")
            directory = Path(self._tmp.name)
            self._port = free_port(self._host)
            self._config = self._write_config(directory, self._port)
            self._launch(directory)
            failure = self._wait_ready(deadline)
            if failure is None:
                return self
            log = self.log_text()
            self.stop()
            if "already in use" in log and attempt + 1 < _PORT_ATTEMPTS:
                continue  # lost the port to another process between probe and bind
            raise UnboundStartError(
                f"unbound on {self._host}:{self._port} {failure}\n"
                f"--- unbound log ---\n{log}\n--- unbound.conf ---\n{self._config}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, directory: Path) -> None:
        command = [str(self._binary), "-d", "-c", str(directory / "unbound.conf")]
        self._log_file = (directory / "unbound.log").open("wb")
        # PDEATHSIG fires when the *thread* that forked exits: only the main
        # thread's exit means the test run is over.
        in_main = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            command,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_signal_hook() if in_main else None,  # noqa: PLW1509
        )

    def _wait_ready(self, deadline: float) -> str | None:
        """None once Unbound answers on both transports, else why it did not."""
        assert self._process is not None
        probe = dns.message.make_query("version.server.", "TXT", "CH")
        udp_ok = False
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"exited with status {self._process.returncode} during startup"
            try:
                if not udp_ok:
                    dns.query.udp(probe, self._host, port=self._port, timeout=_PROBE_TIMEOUT)
                    udp_ok = True
                dns.query.tcp(probe, self._host, port=self._port, timeout=_PROBE_TIMEOUT)
            except (dns.exception.DNSException, OSError):
                time.sleep(0.05)
                continue
            return None
        return f"did not answer within {self._startup_timeout}s"

    def stop(self) -> None:
        """SIGTERM our PID, SIGKILL after a grace period, reap it, remove the temp dir."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, _STOP_GRACE)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._last_log = self.log_text()
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "DEFAULT_RPZ_NAME",
    "UNBOUND_BINARY",
    "UNBOUND_MISSING",
    "DataMode",
    "UnboundPeer",
    "UnboundStartError",
    "UnboundUnavailable",
    "rpz_nxdomain",
    "unbound_available",
]
