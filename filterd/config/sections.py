"""One reader per section of the configuration file: YAML in, frozen value out.

Each section validates only its own keys (unknown key: an error naming its
dotted path); checks that span sections are in ``filterd.config.load``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from filterd.config import (
    BLOCK_PAGE_LANGUAGES,
    CONTACT_SCHEMES,
    SYSTEM_UPSTREAM,
    AccessConfig,
    AdminConfig,
    AuditConfig,
    BlockingConfig,
    BlockPageConfig,
    CacheConfig,
    CompileConfig,
    Endpoint,
    ListConfig,
    LoggingConfig,
    RateLimitConfig,
    ServerConfig,
    SinkholeConfig,
    StatisticsConfig,
    SyncConfig,
    UpstreamConfig,
    checks,
    parse_endpoint,
    system_resolvers,
)
from filterd.formats import Format
from filterd.model.rules import Scope


def server(r: checks.Reader) -> ServerConfig:
    d = ServerConfig()
    cfg = ServerConfig(
        listen=r.get("listen", d.listen, checks.list_of(checks.endpoint(53), allow_empty=False)),
        udp=r.get("udp", d.udp, checks.boolean),
        tcp=r.get("tcp", d.tcp, checks.boolean),
        workers=r.get("workers", d.workers, checks.int_in(1, 64)),
        max_udp_size=r.get("max_udp_size", d.max_udp_size, checks.int_in(512, 4096)),
        max_inflight=r.get("max_inflight", d.max_inflight, checks.int_in(1, 1_000_000)),
        max_inflight_per_client=r.get(
            "max_inflight_per_client", d.max_inflight_per_client, checks.int_in(1, 1_000_000)
        ),
        tcp_idle_timeout=r.get("tcp_idle_timeout", d.tcp_idle_timeout, checks.seconds(0, 3600)),
        tcp_max_connections=r.get(
            "tcp_max_connections", d.tcp_max_connections, checks.int_in(1, 100_000)
        ),
        tcp_max_pipelined=r.get("tcp_max_pipelined", d.tcp_max_pipelined, checks.int_in(1, 10_000)),
        tcp_message_timeout=r.get(
            "tcp_message_timeout", d.tcp_message_timeout, checks.seconds(0, 600)
        ),
        tcp_max_per_client=r.get(
            "tcp_max_per_client", d.tcp_max_per_client, checks.int_in(1, 100_000)
        ),
        drain_timeout=r.get("drain_timeout", d.drain_timeout, checks.seconds(0, 600)),
    )
    if not cfg.udp and not cfg.tcp:
        r.doc.problem(r.key("udp"), "at least one of udp and tcp must be true")
    r.done()
    return cfg


def access(r: checks.Reader) -> AccessConfig:
    d = AccessConfig()
    cfg = AccessConfig(
        allow=r.get("allow", d.allow, checks.list_of(checks.network)),
        deny_action=r.get("deny_action", d.deny_action, checks.choice("refuse", "drop")),
    )
    r.done()
    return cfg


def upstream(r: checks.Reader) -> UpstreamConfig:
    d = UpstreamConfig()
    servers: tuple[Endpoint, ...] = ()
    system: tuple[str, ...] = (SYSTEM_UPSTREAM,)
    raw = r.get("servers", system, checks.list_of(checks.domain_name, allow_empty=False))
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
        timeout=r.get("timeout", d.timeout, checks.seconds(0, 60)),
        attempts=r.get("attempts", d.attempts, checks.int_in(1, 10)),
        deadline=r.get("deadline", d.deadline, checks.seconds(0, 120)),
        down_after=r.get("down_after", d.down_after, checks.int_in(1, 1000)),
        probe_interval=r.get("probe_interval", d.probe_interval, checks.seconds(0, 3600)),
        edns_udp_size=r.get("edns_udp_size", d.edns_udp_size, checks.int_in(512, 4096)),
    )
    if cfg.deadline < cfg.timeout:
        r.doc.problem(r.key("deadline"), "must be at least upstream.timeout")
    r.done()
    return cfg


def cache(r: checks.Reader) -> CacheConfig:
    d = CacheConfig()
    cfg = CacheConfig(
        max_bytes=r.get("max_bytes", d.max_bytes, checks.int_in(0, 1 << 40)),
        min_ttl=r.get("min_ttl", d.min_ttl, checks.int_in(0, 86400)),
        max_ttl=r.get("max_ttl", d.max_ttl, checks.int_in(0, 7 * 86400)),
        negative_max_ttl=r.get("negative_max_ttl", d.negative_max_ttl, checks.int_in(0, 86400)),
        serve_stale=r.get("serve_stale", d.serve_stale, checks.int_in(0, 7 * 86400)),
    )
    if cfg.min_ttl > cfg.max_ttl:
        r.doc.problem(r.key("min_ttl"), "must not exceed cache.max_ttl")
    if "max_entries" in r.raw:
        r.seen.add("max_entries")
        r.doc.problem(r.key("max_entries"), "replaced by cache.max_bytes (a bound in bytes)")
    r.done()
    return cfg


def blocking(r: checks.Reader) -> BlockingConfig:
    d = BlockingConfig()
    sink = r.section("sinkhole")
    sinkhole = SinkholeConfig(
        ipv4=sink.get("ipv4", None, checks.ip_address(4)),
        ipv6=sink.get("ipv6", None, checks.ip_address(6)),
    )
    sink.done()
    cats = r.section("category_actions")
    category_actions = []
    for category in cats.raw:
        action = cats.get(str(category), None, checks.action)
        if action is not None:
            category_actions.append((str(category).lower(), action))
    cfg = BlockingConfig(
        ttl=r.get("ttl", d.ttl, checks.int_in(0, 86400)),
        default_action=r.get("default_action", d.default_action, checks.action),
        sinkhole=sinkhole,
        category_actions=tuple(category_actions),
        bypass_canaries=r.get("bypass_canaries", d.bypass_canaries, checks.boolean),
    )
    r.done()
    return cfg


def lists(doc: checks.Document, raw: Any, base: Path) -> tuple[ListConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        doc.problem("lists", f"must be a list, got {checks.kind_of(raw)}")
        return ()
    out = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        r = checks.Reader(doc, item, f"lists[{i}]")
        name = r.get("name", "", checks.label)
        path = r.get("path", "", checks.domain_name)
        sync = r.get("sync", None, checks.list_id)
        if not name:
            doc.problem(r.key("name"), "required")
        elif name in names:
            doc.problem(r.key("name"), f"duplicate list name {name!r}")
        names.add(name)
        if bool(path) == bool(sync):
            doc.problem(r.key("path"), "exactly one of path (a file) and sync (an authority list)")
        fmt = r.get("format", "auto", checks.choice("auto", *(f.value for f in Format)))
        if sync and fmt not in ("auto", "native"):
            doc.problem(r.key("format"), "authority lists are in the native format")
        cfg = ListConfig(
            name=name,
            path=(base / path).resolve() if path else Path(),
            format=Format.NATIVE if sync else (None if fmt == "auto" else Format(fmt)),
            kind=r.get("kind", "block", checks.choice("block", "allow")),
            mode=r.get("mode", Scope.SUBTREE, checks.scope),
            mandatory=r.get("mandatory", False, checks.boolean),
            category=r.get("category", "uncategorized", checks.label),
            action=r.get("action", None, checks.action),
            ede=r.get("ede", None, checks.ede),
            allow_tld=r.get("allow_tld", False, checks.boolean),
            sync=sync,
            authority=r.get("authority", "", checks.label),
            opt_in=r.get("opt_in", False, checks.boolean),
            https_only=r.get("https_only", False, checks.boolean),
        )
        invalid, shrink = MANDATORY_GUARDS if cfg.mandatory else (0.5, 0.5)
        cfg = replace(
            cfg,
            min_entries=r.get("min_entries", 1, checks.int_in(0, 100_000_000)),
            max_invalid=r.get("max_invalid", invalid, checks.number_in(0, 1)),
            max_shrink=r.get("max_shrink", shrink, checks.number_in(0, 1)),
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


SHARED_SYNC_KEYS: Final = ("node", "on_missing", "stale_after", "lag_sla")
"""Keys of ``sync`` that hold for every authority (one node, one readiness
rule, one alerting threshold)."""


def sync(r: checks.Reader, base: Path, shared: SyncConfig | None = None) -> SyncConfig:
    """``sync``, or (``shared`` given) one entry of ``authorities``, which takes
    ``SHARED_SYNC_KEYS`` from ``shared`` and needs a ``url``."""
    if shared is not None:
        for key in SHARED_SYNC_KEYS:
            if key in r.raw:
                r.seen.add(key)
                r.doc.problem(r.key(key), "set it in sync: it holds for every authority")
    d = shared or SyncConfig()
    token = r.get("token_file", None, checks.domain_name)
    ca_file = r.get("ca_file", None, checks.domain_name)
    client_cert = r.get("client_cert", None, checks.domain_name)
    client_key = r.get("client_key", None, checks.domain_name)
    if (client_cert is None) != (client_key is None):
        r.doc.problem(r.key("client_cert"), "client_cert and client_key go together")
    cfg = SyncConfig(
        url=r.get("url", None, checks.url),
        token_file=(base / token).resolve() if token else None,
        public_key=r.get("public_key", "", checks.public_key),
        ca_file=(base / ca_file).resolve() if ca_file else None,
        client_cert=(base / client_cert).resolve() if client_cert else None,
        client_key=(base / client_key).resolve() if client_key else None,
        operator=r.get("operator", "", checks.domain_name),
        node=r.get("node", d.node, checks.domain_name),
        interval=r.get("interval", d.interval, checks.seconds(0, 86400)),
        jitter=r.get("jitter", d.jitter, checks.fraction),
        timeout=r.get("timeout", d.timeout, checks.seconds(0, 600)),
        max_snapshot_bytes=r.get(
            "max_snapshot_bytes", d.max_snapshot_bytes, checks.int_in(1024, 1 << 34)
        ),
        max_delta_bytes=r.get("max_delta_bytes", d.max_delta_bytes, checks.int_in(1024, 1 << 32)),
        max_entries=r.get("max_entries", d.max_entries, checks.int_in(1, 100_000_000)),
        on_missing=r.get("on_missing", d.on_missing, checks.choice("not-ready", "local-only")),
        stale_after=r.get("stale_after", d.stale_after, checks.seconds(0, 30 * 86400)),
        lag_sla=r.get("lag_sla", d.lag_sla, checks.seconds(0, 30 * 86400)),
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


def admin(r: checks.Reader) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(
        listen=r.get("listen", d.listen, checks.optional_endpoint),
        notify_listen=r.get("notify_listen", d.notify_listen, checks.optional_endpoint),
        max_connections=r.get("max_connections", d.max_connections, checks.int_in(1, 10_000)),
        connection_lifetime=r.get(
            "connection_lifetime", d.connection_lifetime, checks.seconds(0, 86400)
        ),
    )
    if cfg.notify_listen is not None and cfg.listen is None:
        r.doc.problem(r.key("notify_listen"), "needs admin.listen (it serves only notifications)")
    r.done()
    return cfg


def logging(r: checks.Reader) -> LoggingConfig:
    cfg = LoggingConfig(
        level=r.get("level", "info", checks.choice("debug", "info", "warning", "error"))
    )
    r.done()
    return cfg


def statistics(r: checks.Reader) -> StatisticsConfig:
    cfg = StatisticsConfig(blocked_names=r.get("blocked_names", 0, checks.int_in(0, 10_000)))
    r.done()
    return cfg


def rate_limit(r: checks.Reader) -> RateLimitConfig:
    d = RateLimitConfig()
    cfg = RateLimitConfig(
        responses_per_second=r.get(
            "responses_per_second", d.responses_per_second, checks.number_in(0, 1_000_000)
        ),
        burst=r.get("burst", d.burst, checks.number_in(1, 10_000_000)),
        all_per_second=r.get("all_per_second", d.all_per_second, checks.number_in(0, 10_000_000)),
        slip=r.get("slip", d.slip, checks.int_in(0, 10)),
        exempt=r.get("exempt", d.exempt, checks.list_of(checks.network)),
    )
    if cfg.all_per_second and not cfg.responses_per_second:
        r.doc.problem(r.key("all_per_second"), "needs responses_per_second (0 turns limiting off)")
    r.done()
    return cfg


def compile(r: checks.Reader) -> CompileConfig:
    d = CompileConfig()
    cfg = CompileConfig(
        timeout=r.get("timeout", d.timeout, checks.seconds(0, 86400)),
        max_list_bytes=r.get("max_list_bytes", d.max_list_bytes, checks.int_in(1024, 1 << 40)),
    )
    r.done()
    return cfg


def audit(r: checks.Reader, base: Path) -> AuditConfig:
    d = AuditConfig()
    path = r.get("path", None, checks.domain_name)
    cfg = AuditConfig(
        enabled=r.get("enabled", d.enabled, checks.boolean),
        path=(base / path).resolve() if path else None,
        max_bytes=r.get("max_bytes", d.max_bytes, checks.int_in(4096, 1 << 40)),
        keep=r.get("keep", d.keep, checks.int_in(0, 100_000)),
        stats_interval=r.get("stats_interval", d.stats_interval, checks.seconds(0, 86400)),
    )
    if cfg.stats_interval < 1:
        r.doc.problem(r.key("stats_interval"), "must be at least 1 second")
    if cfg.path is not None and cfg.path.suffix == ".head":
        r.doc.problem(r.key("path"), "must not end in .head (the name of the trail's head file)")
    r.done()
    return cfg


def authorities(
    r: checks.Reader, base: Path, shared: SyncConfig
) -> tuple[tuple[str, SyncConfig], ...]:
    out = []
    for name in r.raw:
        try:
            label = checks.label(name)
        except (ValueError, TypeError, AttributeError):
            r.seen.add(str(name))
            r.doc.problem(r.key(str(name)), "an authority name holds letters, digits, - and _")
            continue
        out.append((label, sync(r.section(str(name)), base, shared)))
    r.done()
    return tuple(out)


def block_page(r: checks.Reader) -> BlockPageConfig:
    d = BlockPageConfig()
    cfg = BlockPageConfig(
        enabled=r.get("enabled", d.enabled, checks.boolean),
        listen=r.get("listen", d.listen, checks.list_of(checks.endpoint(80))),
        languages=r.get("languages", d.languages, _languages),
        operator=r.get("operator", d.operator, checks.one_line(100)),
        contact_text=r.get("contact_text", d.contact_text, checks.one_line(300)),
        contact_link=r.get("contact_link", d.contact_link, _contact_link),
        max_connections=r.get("max_connections", d.max_connections, checks.int_in(1, 100_000)),
        connection_lifetime=r.get(
            "connection_lifetime", d.connection_lifetime, checks.seconds(0, 3600)
        ),
    )
    if cfg.enabled and not cfg.listen:
        r.doc.problem(r.key("listen"), "required when block_page.enabled is true")
    r.done()
    return cfg


def _languages(value: Any) -> tuple[str, ...]:
    languages = checks.list_of(checks.choice(*BLOCK_PAGE_LANGUAGES), allow_empty=False)(value)
    if len(set(languages)) != len(languages):
        raise ValueError("a language is listed twice")
    return languages


def _contact_link(value: Any) -> str:
    text = checks.one_line(500)(value)
    if not text.startswith(CONTACT_SCHEMES) or len(text.split(":", 1)[1].strip("/")) == 0:
        raise ValueError(f"must be an https://, http://, mailto: or tel: link, got {text!r}")
    if any(c.isspace() or c in "<>\"'`" for c in text):
        raise ValueError(f"{text!r} holds a space or a character links may not hold")
    return text
