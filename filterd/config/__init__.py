"""Configuration: strict YAML in, frozen dataclasses out.

Every section is a frozen dataclass with documented defaults (the reference
is docs/configuration.md, kept in the same order as the fields here). Loading
never stops at the first problem: all problems are collected, each as one
line naming the file, the line and the dotted key path, and raised together
as ``ConfigError`` (the CLI prints them and exits with status 2). Unknown
keys and duplicate keys are errors, not warnings: a typo in a filtering
daemon's config must not silently disable a rule.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from filterd.config.groups import (
    BUILTIN_PROFILES,
    BUILTIN_SCHEDULES,
    DEFAULT_GROUPS,
    DEFAULT_TIME_ZONE,
    ClientSubnetConfig,
    GroupConfig,
    ProfileConfig,
    ScheduleConfig,
)
from filterd.formats import Format
from filterd.model.rules import Action, Scope
from filterd.wire.codes import EDE_BLOCKED, EDE_CENSORED, EDE_FILTERED, EDE_PROHIBITED

LOOPBACK: Final = ("127.0.0.0/8", "::1/128")
DEFAULT_ACCESS: Final = (
    *LOOPBACK,
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
)
EDE_NAMES: Final = {
    "blocked": EDE_BLOCKED,
    "censored": EDE_CENSORED,
    "filtered": EDE_FILTERED,
    "prohibited": EDE_PROHIBITED,
}
ED25519_KEY_BYTES: Final = 32
SYSTEM_UPSTREAM: Final = "system"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address and port; ``str()`` gives ``1.2.3.4:53`` or ``[::1]:53``."""

    host: str
    port: int

    @property
    def family_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family_v6 else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 5353),)
    udp: bool = True
    tcp: bool = True
    workers: int = 1
    max_udp_size: int = 1232
    max_inflight: int = 10000
    max_inflight_per_client: int = 1000
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    tcp_max_pipelined: int = 100
    tcp_message_timeout: float = 5.0
    tcp_max_per_client: int = 64
    drain_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class AccessConfig:
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
        ipaddress.ip_network(net) for net in DEFAULT_ACCESS
    )
    deny_action: str = "refuse"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    servers: tuple[Endpoint, ...] = ()
    timeout: float = 1.0
    attempts: int = 3
    deadline: float = 3.0
    down_after: int = 3
    probe_interval: float = 5.0
    edns_udp_size: int = 1232


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_bytes: int = 512 * 1024 * 1024
    """Memory the answer cache may account for (``filterd.pipeline.cache``)."""
    min_ttl: int = 0
    max_ttl: int = 86400
    negative_max_ttl: int = 3600
    serve_stale: int = 0
    """Seconds past expiry an answer may still be served when every upstream
    fails (RFC 8767); 0: never."""


@dataclass(frozen=True, slots=True)
class SinkholeConfig:
    ipv4: str | None = None
    ipv6: str | None = None


@dataclass(frozen=True, slots=True)
class BlockingConfig:
    ttl: int = 5
    default_action: Action = Action.NXDOMAIN
    sinkhole: SinkholeConfig = SinkholeConfig()
    category_actions: tuple[tuple[str, Action], ...] = ()
    bypass_canaries: bool = True


@dataclass(frozen=True, slots=True)
class ListConfig:
    name: str
    path: Path
    format: Format | None = None
    kind: str = "block"
    mode: Scope = Scope.SUBTREE
    mandatory: bool = False
    category: str = "uncategorized"
    action: Action | None = None
    ede: int | None = None
    allow_tld: bool = False
    sync: str | None = None
    """The authority's list id when the list comes from an authority (no ``path``)."""
    authority: str = ""
    """Which authority publishes it: a name under ``authorities``; "" is ``sync``."""
    min_entries: int = 1
    max_invalid: float = 0.5
    max_shrink: float = 0.5
    """The guards of a list file (filterd/lists/guard.py); defaults are stricter
    for mandatory lists (``MANDATORY_GUARDS``)."""
    opt_in: bool = False
    """Blocks (or allows) only for clients whose profile applies its category."""
    https_only: bool = False
    """Its sites are HTTPS only: a profile's ``https_action`` replaces a sinkhole."""

    @property
    def ede_code(self) -> int:
        """RFC 8914 code for this list's blocks: explicit, else Censored for an
        authority's mandatory list, Filtered for a category a client's profile
        opted into, and Blocked for the operator's own."""
        if self.ede is not None:
            return self.ede
        if self.mandatory:
            return EDE_CENSORED
        return EDE_FILTERED if self.opt_in else EDE_BLOCKED


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Where authority lists come from (docs/sync-protocol.md); ``url`` None: no sync."""

    url: str | None = None
    token_file: Path | None = None
    public_key: str = ""
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    """Mutual TLS: the node's certificate chain and key (PEM), if the authority asks."""
    operator: str = ""
    node: str = field(default_factory=socket.gethostname)
    interval: float = 300.0
    jitter: float = 0.1
    timeout: float = 10.0
    max_snapshot_bytes: int = 256 * 1024 * 1024
    max_delta_bytes: int = 16 * 1024 * 1024
    max_entries: int = 5_000_000
    on_missing: str = "not-ready"
    stale_after: float = 3600.0
    lag_sla: float = 3600.0


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: Endpoint | None = Endpoint("127.0.0.1", 9553)
    notify_listen: Endpoint | None = None
    """A listener of its own for the authority's notifications (else ``listen``)."""
    max_connections: int = 64
    connection_lifetime: float = 60.0


BLOCK_PAGE_LANGUAGES: Final = ("vi", "en")
CONTACT_SCHEMES: Final = ("https://", "http://", "mailto:", "tel:")


@dataclass(frozen=True, slots=True)
class BlockPageConfig:
    """The block page a sinkholed name leads a browser to (filterd/blockpage,
    docs/block-page.md): off unless enabled, and then on ``listen``."""

    enabled: bool = False
    listen: tuple[Endpoint, ...] = ()
    languages: tuple[str, ...] = BLOCK_PAGE_LANGUAGES
    """Languages offered, the default first (``BLOCK_PAGE_LANGUAGES``)."""
    operator: str = ""
    """The network operator's name as the page shows it ("" : "your network operator")."""
    contact_text: str = ""
    contact_link: str = ""
    """Where to ask for a review: an https/http URL, a ``mailto:`` or a ``tel:`` link."""
    max_connections: int = 256
    connection_lifetime: float = 10.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class StatisticsConfig:
    """Optional aggregates beyond the metrics; off by default (privacy)."""

    blocked_names: int = 0
    """Keep the N most blocked list entries (with category and count); 0: off."""


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """UDP response rate limiting (filterd/pipeline/ratelimit.py)."""

    responses_per_second: float = 100.0
    burst: float = 200.0
    all_per_second: float = 0.0
    slip: int = 2
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
        ipaddress.ip_network(net) for net in LOOPBACK
    )


@dataclass(frozen=True, slots=True)
class CompileConfig:
    """Bounds of the list compiler (a child process, off the serving path)."""

    timeout: float = 300.0
    max_list_bytes: int = 1 << 30


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """The audit trail (docs/audit.md). Every key takes effect on restart only:
    a trail that moved or changed its rotation in mid-run would be harder to
    walk than one that is what it was at start-up."""

    enabled: bool = True
    path: Path | None = None
    """The trail file; None: ``<state_dir>/audit/audit.jsonl`` (see ``resolve``)."""
    max_bytes: int = 64 * 1024 * 1024
    keep: int = 12
    stats_interval: float = 3600.0

    def resolve(self, state_dir: Path) -> Path:
        """Where the current trail file is."""
        return self.path if self.path is not None else state_dir / "audit" / "audit.jsonl"


def default_state_dir() -> Path:
    """systemd's ``$STATE_DIRECTORY`` when set, else ``~/.local/state/filterd``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    return Path.home() / ".local" / "state" / "filterd"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    access: AccessConfig = AccessConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    cache: CacheConfig = CacheConfig()
    blocking: BlockingConfig = BlockingConfig()
    lists: tuple[ListConfig, ...] = ()
    sync: SyncConfig = field(default_factory=SyncConfig)
    admin: AdminConfig = AdminConfig()
    state_dir: Path = field(default_factory=default_state_dir)
    logging: LoggingConfig = LoggingConfig()
    statistics: StatisticsConfig = StatisticsConfig()
    audit: AuditConfig = AuditConfig()
    compile: CompileConfig = CompileConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    block_page: BlockPageConfig = BlockPageConfig()
    authorities: tuple[tuple[str, SyncConfig], ...] = ()
    """Further authorities by name (``sync`` is the default one)."""
    groups: tuple[GroupConfig, ...] = DEFAULT_GROUPS
    """Client groups; the ``default`` group (always present) holds every other client."""
    profiles: tuple[ProfileConfig, ...] = BUILTIN_PROFILES
    """Built-in profiles, with those the file defines (replacing a built-in by name)."""
    schedules: tuple[ScheduleConfig, ...] = BUILTIN_SCHEDULES
    time_zone: str = DEFAULT_TIME_ZONE
    """IANA time zone of every schedule (``zoneinfo``; Debian package tzdata)."""
    client_subnet: ClientSubnetConfig = field(default_factory=ClientSubnetConfig)

    def authority(self, name: str) -> SyncConfig:
        """The authority a list's ``authority`` names ("" is ``sync``)."""
        return dict(self.authorities)[name] if name else self.sync

    source: Path | None = None
    """The file this configuration was read from (``None``: built from defaults)."""


# ------------------------------------------------------------------ parsing


def parse_endpoint(text: str, default_port: int) -> Endpoint:
    """``ADDR``, ``ADDR:PORT``, ``[V6ADDR]:PORT`` or a bare IPv6 address."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"unbalanced '[' in {text!r}")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':PORT' after ']' in {text!r}")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return Endpoint(str(address), port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 0 to 65535")
    return int(text)


def system_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[Endpoint, ...]:
    """The ``nameserver`` lines of resolv.conf, as port-53 endpoints."""
    servers = []
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                servers.append(parse_endpoint(fields[1].split("%")[0], 53))
            except ValueError:
                continue
    return tuple(servers)
