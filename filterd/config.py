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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from filterd.errors import ConfigError
from filterd.lists.parsers import Format
from filterd.matching.rules import Action, Scope
from filterd.sync.store import LIST_ID, snapshot_path
from filterd.wire.codes import EDE_BLOCKED, EDE_CENSORED, EDE_FILTERED, EDE_PROHIBITED

T = TypeVar("T")

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

    @property
    def ede_code(self) -> int:
        """RFC 8914 code for this list's blocks: explicit, else Censored for an
        authority's mandatory list and Blocked for the operator's own."""
        if self.ede is not None:
            return self.ede
        return EDE_CENSORED if self.mandatory else EDE_BLOCKED


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
    authorities: tuple[tuple[str, SyncConfig], ...] = ()
    """Further authorities by name (``sync`` is the default one)."""

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


class _Reader:
    """Walks one mapping of the YAML document, collecting problems with their lines."""

    def __init__(self, doc: _Document, raw: Any, path: str) -> None:
        self.doc = doc
        self.path = path
        self.seen: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            doc.problem(path, f"must be a mapping, got {_kind(raw)}")
            raw = {}
        self.raw: dict[str, Any] = raw

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, default: T, convert: Callable[[Any], T]) -> T:
        self.seen.add(name)
        if name not in self.raw:
            return default
        try:
            return convert(self.raw[name])
        except (ValueError, TypeError) as exc:
            self.doc.problem(self.key(name), str(exc))
            return default

    def section(self, name: str) -> _Reader:
        self.seen.add(name)
        return _Reader(self.doc, self.raw.get(name), self.key(name))

    def done(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.doc.problem(self.key(str(name)), "unknown key")


class _Document:
    """A parsed YAML file with the line of every key path, for error messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.problems: list[str] = []
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.data: Any = loader.construct_document(node) if node is not None else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
        finally:
            loader.dispose()
        if node is not None:
            self._index(node, "")

    def _index(self, node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                self.lines.setdefault(child, key_node.start_mark.line + 1)
                if key in keys:
                    self.problem(child, "duplicate key", key_node.start_mark.line + 1)
                keys.add(key)
                self._index(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                self.lines.setdefault(child, item.start_mark.line + 1)
                self._index(item, child)

    def problem(self, path: str, message: str, line: int | None = None) -> None:
        line = line or self._line_of(path)
        where = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{where}: {path}: {message}")

    def _line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


# ---------------------------------------------------------------- converters


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, got {_kind(value)} {value!r}")
    return value


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be a whole number, got {_kind(value)} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return convert


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"must be a number of seconds, got {_kind(value)} {value!r}")
        if not low < value <= high:
            raise ValueError(f"must be more than {low} and at most {high} seconds, got {value}")
        return float(value)

    return convert


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


def _action(value: Any) -> Action:
    return Action(_choice(*(a.value for a in Action))(value))


def _list_of(
    item: Callable[[Any], T], *, allow_empty: bool = True
) -> Callable[[Any], tuple[T, ...]]:
    def convert(value: Any) -> tuple[T, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TypeError(f"must be a list, got {_kind(value)}")
        if not value and not allow_empty:
            raise ValueError("must not be empty")
        out = []
        for i, element in enumerate(value):
            try:
                out.append(item(element))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"item {i + 1}: {exc}") from None
        return tuple(out)

    return convert


def _endpoint(default_port: int) -> Callable[[Any], Endpoint]:
    def convert(value: Any) -> Endpoint:
        if not isinstance(value, str):
            raise TypeError(f"must be 'ADDRESS:PORT', got {_kind(value)} {value!r}")
        return parse_endpoint(value, default_port)

    return convert


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise TypeError(f"must be an address or CIDR prefix, got {_kind(value)} {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network") from None


def _ip(version: int) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv{version} address") from None
        if address.version != version:
            raise ValueError(f"{value!r} is not an IPv{version} address")
        return str(address)

    return convert


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"must be a non-empty string, got {_kind(value)} {value!r}")
    return value.strip()


def _label(value: Any) -> str:
    text = _name(value)
    if not text.replace("-", "").replace("_", "").isalnum() or not text.isascii():
        raise ValueError(f"{text!r} may only hold letters, digits, '-' and '_'")
    return text.lower()


def _ede(value: Any) -> int:
    if isinstance(value, str) and value in EDE_NAMES:
        return EDE_NAMES[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value
    raise ValueError(f"must be one of {', '.join(EDE_NAMES)} or a code 0-65535, got {value!r}")


# ------------------------------------------------------------------ sections


def _server(r: _Reader) -> ServerConfig:
    d = ServerConfig()
    cfg = ServerConfig(
        listen=r.get("listen", d.listen, _list_of(_endpoint(53), allow_empty=False)),
        udp=r.get("udp", d.udp, _bool),
        tcp=r.get("tcp", d.tcp, _bool),
        workers=r.get("workers", d.workers, _int_in(1, 64)),
        max_udp_size=r.get("max_udp_size", d.max_udp_size, _int_in(512, 4096)),
        max_inflight=r.get("max_inflight", d.max_inflight, _int_in(1, 1_000_000)),
        max_inflight_per_client=r.get(
            "max_inflight_per_client", d.max_inflight_per_client, _int_in(1, 1_000_000)
        ),
        tcp_idle_timeout=r.get("tcp_idle_timeout", d.tcp_idle_timeout, _seconds(0, 3600)),
        tcp_max_connections=r.get(
            "tcp_max_connections", d.tcp_max_connections, _int_in(1, 100_000)
        ),
        tcp_max_pipelined=r.get("tcp_max_pipelined", d.tcp_max_pipelined, _int_in(1, 10_000)),
        tcp_message_timeout=r.get("tcp_message_timeout", d.tcp_message_timeout, _seconds(0, 600)),
        tcp_max_per_client=r.get("tcp_max_per_client", d.tcp_max_per_client, _int_in(1, 100_000)),
        drain_timeout=r.get("drain_timeout", d.drain_timeout, _seconds(0, 600)),
    )
    if not cfg.udp and not cfg.tcp:
        r.doc.problem(r.key("udp"), "at least one of udp and tcp must be true")
    r.done()
    return cfg


def _access(r: _Reader) -> AccessConfig:
    d = AccessConfig()
    cfg = AccessConfig(
        allow=r.get("allow", d.allow, _list_of(_network)),
        deny_action=r.get("deny_action", d.deny_action, _choice("refuse", "drop")),
    )
    r.done()
    return cfg


def _upstream(r: _Reader) -> UpstreamConfig:
    d = UpstreamConfig()
    servers: tuple[Endpoint, ...] = ()
    system: tuple[str, ...] = (SYSTEM_UPSTREAM,)
    raw = r.get("servers", system, _list_of(_name, allow_empty=False))
    for i, text in enumerate(raw):
        if text == SYSTEM_UPSTREAM:
            found = system_resolvers()
            if not found:
                r.doc.problem(r.key(f"servers[{i}]"), "'system': no nameserver in /etc/resolv.conf")
            servers += found
            continue
        try:
            servers += (parse_endpoint(text, 53),)
        except ValueError as exc:
            r.doc.problem(r.key(f"servers[{i}]"), str(exc))
    cfg = UpstreamConfig(
        servers=servers,
        timeout=r.get("timeout", d.timeout, _seconds(0, 60)),
        attempts=r.get("attempts", d.attempts, _int_in(1, 10)),
        deadline=r.get("deadline", d.deadline, _seconds(0, 120)),
        down_after=r.get("down_after", d.down_after, _int_in(1, 1000)),
        probe_interval=r.get("probe_interval", d.probe_interval, _seconds(0, 3600)),
        edns_udp_size=r.get("edns_udp_size", d.edns_udp_size, _int_in(512, 4096)),
    )
    if cfg.deadline < cfg.timeout:
        r.doc.problem(r.key("deadline"), "must be at least upstream.timeout")
    r.done()
    return cfg


def _cache(r: _Reader) -> CacheConfig:
    d = CacheConfig()
    cfg = CacheConfig(
        max_bytes=r.get("max_bytes", d.max_bytes, _int_in(0, 1 << 40)),
        min_ttl=r.get("min_ttl", d.min_ttl, _int_in(0, 86400)),
        max_ttl=r.get("max_ttl", d.max_ttl, _int_in(0, 7 * 86400)),
        negative_max_ttl=r.get("negative_max_ttl", d.negative_max_ttl, _int_in(0, 86400)),
        serve_stale=r.get("serve_stale", d.serve_stale, _int_in(0, 7 * 86400)),
    )
    if cfg.min_ttl > cfg.max_ttl:
        r.doc.problem(r.key("min_ttl"), "must not exceed cache.max_ttl")
    if "max_entries" in r.raw:
        r.seen.add("max_entries")
        r.doc.problem(r.key("max_entries"), "replaced by cache.max_bytes (a bound in bytes)")
    r.done()
    return cfg


def _blocking(r: _Reader) -> BlockingConfig:
    d = BlockingConfig()
    sink = r.section("sinkhole")
    sinkhole = SinkholeConfig(
        ipv4=sink.get("ipv4", None, _ip(4)), ipv6=sink.get("ipv6", None, _ip(6))
    )
    sink.done()
    cats = r.section("category_actions")
    category_actions = []
    for category in cats.raw:
        action = cats.get(str(category), None, _action)
        if action is not None:
            category_actions.append((str(category).lower(), action))
    cfg = BlockingConfig(
        ttl=r.get("ttl", d.ttl, _int_in(0, 86400)),
        default_action=r.get("default_action", d.default_action, _action),
        sinkhole=sinkhole,
        category_actions=tuple(category_actions),
        bypass_canaries=r.get("bypass_canaries", d.bypass_canaries, _bool),
    )
    r.done()
    return cfg


def _lists(doc: _Document, raw: Any, base: Path) -> tuple[ListConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        doc.problem("lists", f"must be a list, got {_kind(raw)}")
        return ()
    out = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        r = _Reader(doc, item, f"lists[{i}]")
        name = r.get("name", "", _label)
        path = r.get("path", "", _name)
        sync = r.get("sync", None, _list_id)
        if not name:
            doc.problem(r.key("name"), "required")
        elif name in names:
            doc.problem(r.key("name"), f"duplicate list name {name!r}")
        names.add(name)
        if bool(path) == bool(sync):
            doc.problem(r.key("path"), "exactly one of path (a file) and sync (an authority list)")
        fmt = r.get("format", "auto", _choice("auto", *(f.value for f in Format)))
        if sync and fmt not in ("auto", "native"):
            doc.problem(r.key("format"), "authority lists are in the native format")
        cfg = ListConfig(
            name=name,
            path=(base / path).resolve() if path else Path(),
            format=Format.NATIVE if sync else (None if fmt == "auto" else Format(fmt)),
            kind=r.get("kind", "block", _choice("block", "allow")),
            mode=r.get("mode", Scope.SUBTREE, _scope),
            mandatory=r.get("mandatory", False, _bool),
            category=r.get("category", "uncategorized", _label),
            action=r.get("action", None, _action),
            ede=r.get("ede", None, _ede),
            allow_tld=r.get("allow_tld", False, _bool),
            sync=sync,
            authority=r.get("authority", "", _label),
        )
        invalid, shrink = MANDATORY_GUARDS if cfg.mandatory else (0.5, 0.5)
        cfg = replace(
            cfg,
            min_entries=r.get("min_entries", 1, _int_in(0, 100_000_000)),
            max_invalid=r.get("max_invalid", invalid, _number_in(0, 1)),
            max_shrink=r.get("max_shrink", shrink, _number_in(0, 1)),
        )
        if sync:
            for key in ("min_entries", "max_invalid", "max_shrink"):
                if key in r.raw:
                    doc.problem(r.key(key), "only for a list file (an authority list is signed)")
        if cfg.authority and not sync:
            doc.problem(r.key("authority"), "only for a list with sync (an authority list)")
        r.done()
        out.append(cfg)
    return tuple(out)


MANDATORY_GUARDS: Final = (0.1, 0.2)
"""Defaults of ``max_invalid`` and ``max_shrink`` for a mandatory list file."""


def _list_id(value: Any) -> str:
    if not isinstance(value, str) or not LIST_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a list id ([a-z0-9][a-z0-9-]*)")
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value if value.endswith("/") else value + "/"


def _public_key(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be the authority's base64 public key, got {_kind(value)}")
    # Imported here: workers read the configuration but never need cryptography.
    from filterd.sync.model import load_public_key  # noqa: PLC0415

    load_public_key(value)  # raises ValueError with the reason
    return value.strip()


SHARED_SYNC_KEYS: Final = ("node", "on_missing", "stale_after", "lag_sla")
"""Keys of ``sync`` that hold for every authority (one node, one readiness
rule, one alerting threshold)."""


def _sync(r: _Reader, base: Path, shared: SyncConfig | None = None) -> SyncConfig:
    """``sync``, or (``shared`` given) one entry of ``authorities``, which takes
    ``SHARED_SYNC_KEYS`` from ``shared`` and needs a ``url``."""
    if shared is not None:
        for key in SHARED_SYNC_KEYS:
            if key in r.raw:
                r.seen.add(key)
                r.doc.problem(r.key(key), "set it in sync: it holds for every authority")
    d = shared or SyncConfig()
    token = r.get("token_file", None, _name)
    ca_file = r.get("ca_file", None, _name)
    client_cert = r.get("client_cert", None, _name)
    client_key = r.get("client_key", None, _name)
    if (client_cert is None) != (client_key is None):
        r.doc.problem(r.key("client_cert"), "client_cert and client_key go together")
    cfg = SyncConfig(
        url=r.get("url", None, _url),
        token_file=(base / token).resolve() if token else None,
        public_key=r.get("public_key", "", _public_key),
        ca_file=(base / ca_file).resolve() if ca_file else None,
        client_cert=(base / client_cert).resolve() if client_cert else None,
        client_key=(base / client_key).resolve() if client_key else None,
        operator=r.get("operator", "", _name),
        node=r.get("node", d.node, _name),
        interval=r.get("interval", d.interval, _seconds(0, 86400)),
        jitter=r.get("jitter", d.jitter, _fraction),
        timeout=r.get("timeout", d.timeout, _seconds(0, 600)),
        max_snapshot_bytes=r.get(
            "max_snapshot_bytes", d.max_snapshot_bytes, _int_in(1024, 1 << 34)
        ),
        max_delta_bytes=r.get("max_delta_bytes", d.max_delta_bytes, _int_in(1024, 1 << 32)),
        max_entries=r.get("max_entries", d.max_entries, _int_in(1, 100_000_000)),
        on_missing=r.get("on_missing", d.on_missing, _choice("not-ready", "local-only")),
        stale_after=r.get("stale_after", d.stale_after, _seconds(0, 30 * 86400)),
        lag_sla=r.get("lag_sla", d.lag_sla, _seconds(0, 30 * 86400)),
    )
    if shared is not None and cfg.url is None:
        r.doc.problem(r.key("url"), "required")
    if cfg.url is not None:
        for key, value in (
            ("token_file", cfg.token_file),
            ("public_key", cfg.public_key),
            ("operator", cfg.operator),
        ):
            if not value and key not in r.raw:  # a bad value was reported already
                r.doc.problem(r.key(key), f"required when {r.key('url')} is set")
    r.done()
    return cfg


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"must be a number from 0 to below 1, got {value!r}")
    return float(value)


def _scope(value: Any) -> Scope:
    mode = _choice("subtree", "exact")(value)
    return Scope.SUBTREE if mode == "subtree" else Scope.EXACT


def _admin(r: _Reader) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(
        listen=r.get("listen", d.listen, _optional_endpoint),
        notify_listen=r.get("notify_listen", d.notify_listen, _optional_endpoint),
        max_connections=r.get("max_connections", d.max_connections, _int_in(1, 10_000)),
        connection_lifetime=r.get("connection_lifetime", d.connection_lifetime, _seconds(0, 86400)),
    )
    if cfg.notify_listen is not None and cfg.listen is None:
        r.doc.problem(r.key("notify_listen"), "needs admin.listen (it serves only notifications)")
    r.done()
    return cfg


def _optional_endpoint(value: Any) -> Endpoint | None:
    return None if value is None else _endpoint(9553)(value)


def _logging(r: _Reader) -> LoggingConfig:
    cfg = LoggingConfig(level=r.get("level", "info", _choice("debug", "info", "warning", "error")))
    r.done()
    return cfg


def _statistics(r: _Reader) -> StatisticsConfig:
    cfg = StatisticsConfig(blocked_names=r.get("blocked_names", 0, _int_in(0, 10_000)))
    r.done()
    return cfg


def _rate_limit(r: _Reader) -> RateLimitConfig:
    d = RateLimitConfig()
    cfg = RateLimitConfig(
        responses_per_second=r.get(
            "responses_per_second", d.responses_per_second, _number_in(0, 1_000_000)
        ),
        burst=r.get("burst", d.burst, _number_in(1, 10_000_000)),
        all_per_second=r.get("all_per_second", d.all_per_second, _number_in(0, 10_000_000)),
        slip=r.get("slip", d.slip, _int_in(0, 10)),
        exempt=r.get("exempt", d.exempt, _list_of(_network)),
    )
    if cfg.all_per_second and not cfg.responses_per_second:
        r.doc.problem(r.key("all_per_second"), "needs responses_per_second (0 turns limiting off)")
    r.done()
    return cfg


def _number_in(low: float, high: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"must be a number, got {_kind(value)} {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {value}")
        return float(value)

    return convert


def _compile(r: _Reader) -> CompileConfig:
    d = CompileConfig()
    cfg = CompileConfig(
        timeout=r.get("timeout", d.timeout, _seconds(0, 86400)),
        max_list_bytes=r.get("max_list_bytes", d.max_list_bytes, _int_in(1024, 1 << 40)),
    )
    r.done()
    return cfg


def _audit(r: _Reader, base: Path) -> AuditConfig:
    d = AuditConfig()
    path = r.get("path", None, _name)
    cfg = AuditConfig(
        enabled=r.get("enabled", d.enabled, _bool),
        path=(base / path).resolve() if path else None,
        max_bytes=r.get("max_bytes", d.max_bytes, _int_in(4096, 1 << 40)),
        keep=r.get("keep", d.keep, _int_in(0, 100_000)),
        stats_interval=r.get("stats_interval", d.stats_interval, _seconds(0, 86400)),
    )
    if cfg.stats_interval < 1:
        r.doc.problem(r.key("stats_interval"), "must be at least 1 second")
    if cfg.path is not None and cfg.path.suffix == ".head":
        r.doc.problem(r.key("path"), "must not end in .head (the name of the trail's head file)")
    r.done()
    return cfg


def _authorities(r: _Reader, base: Path, shared: SyncConfig) -> tuple[tuple[str, SyncConfig], ...]:
    out = []
    for name in r.raw:
        try:
            label = _label(name)
        except (ValueError, TypeError, AttributeError):
            r.seen.add(str(name))
            r.doc.problem(r.key(str(name)), "an authority name holds letters, digits, - and _")
            continue
        out.append((label, _sync(r.section(str(name)), base, shared)))
    r.done()
    return tuple(out)


def _check_sync(doc: _Document, cfg: Config) -> None:
    """Every synced list names a configured authority, and one list id is
    synced once (its snapshot lives in ``state_dir/sync/ID``)."""
    known = dict(cfg.authorities)
    ids: set[str] = set()
    for i, lst in enumerate(cfg.lists):
        if not lst.sync:
            continue
        if lst.sync in ids:
            doc.problem(f"lists[{i}].sync", f"list {lst.sync!r} is already synced by another entry")
        ids.add(lst.sync)
        if lst.authority and lst.authority not in known:
            doc.problem(f"lists[{i}].authority", f"no authority {lst.authority!r} in authorities")
        elif not lst.authority and cfg.sync.url is None:
            doc.problem("sync.url", "required: a list is synced from the authority")


def _check_actions(doc: _Document, cfg: Config) -> None:
    """A sinkhole action needs somewhere to point."""
    sink = cfg.blocking.sinkhole
    if sink.ipv4 is not None or sink.ipv6 is not None:
        return
    uses = [("blocking.default_action", cfg.blocking.default_action)]
    uses += [(f"blocking.category_actions.{c}", a) for c, a in cfg.blocking.category_actions]
    uses += [(f"lists[{i}].action", lst.action) for i, lst in enumerate(cfg.lists) if lst.action]
    for path, action in uses:
        if action is Action.SINKHOLE:
            doc.problem(path, "sinkhole needs blocking.sinkhole.ipv4 and/or ipv6")


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Parse configuration text; ``base`` resolves relative paths (the file's directory)."""
    doc = _Document(text, source)
    base = base or Path.cwd()
    top = _Reader(doc, doc.data, "")
    state_dir = top.get("state_dir", None, _name)
    sync = _sync(top.section("sync"), base)
    cfg = Config(
        server=_server(top.section("server")),
        access=_access(top.section("access")),
        upstream=_upstream(top.section("upstream")),
        cache=_cache(top.section("cache")),
        blocking=_blocking(top.section("blocking")),
        lists=_lists(doc, top.get("lists", None, lambda v: v), base),
        sync=sync,
        admin=_admin(top.section("admin")),
        logging=_logging(top.section("logging")),
        statistics=_statistics(top.section("statistics")),
        audit=_audit(top.section("audit"), base),
        compile=_compile(top.section("compile")),
        rate_limit=_rate_limit(top.section("rate_limit")),
        authorities=_authorities(top.section("authorities"), base, sync),
        source=Path(source) if source != "<config>" else None,
    )
    if state_dir is not None:
        cfg = replace(cfg, state_dir=base / state_dir)
    cfg = replace(cfg, lists=tuple(
        replace(lst, path=snapshot_path(cfg.state_dir, lst.sync)) if lst.sync else lst
        for lst in cfg.lists
    ))  # fmt: skip
    _check_sync(doc, cfg)
    top.done()
    _check_actions(doc, cfg)
    if doc.problems:
        raise ConfigError(doc.problems)
    return cfg


def load_config(path: Path) -> Config:
    """Read and parse a configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, str(path), path.resolve().parent)
