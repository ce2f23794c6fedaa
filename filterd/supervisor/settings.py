"""The effective configuration of a run: the file (or defaults) with the
command line's overrides, and which of its settings only a restart changes.

``filterd run`` may name listeners, upstreams, list files and the admin
endpoint on the command line (``Overrides``); they replace the file's. A
reload (SIGHUP) reads the file again, but sockets, the worker count, the
admin listeners, the audit trail and the state directory were set up at
start and stay as they were (``keep_restart_only_settings``): a warning
says a restart is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from filterd.config import Config, Endpoint, ListConfig
from filterd.config.load import load_config, parse_config
from filterd.errors import ConfigError

log = logging.getLogger("filterd")


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line settings that replace the configuration's (``filterd run``)."""

    listen: tuple[Endpoint, ...] = ()
    upstream: tuple[Endpoint, ...] = ()
    blocklists: tuple[Path, ...] = ()
    admin: Endpoint | str | None = None
    """An endpoint, "off", or None to keep the configuration's."""

    def apply(self, config: Config) -> Config:
        if self.admin is not None:
            admin = None if self.admin == "off" else self.admin
            assert admin is None or isinstance(admin, Endpoint)
            config = replace(config, admin=replace(config.admin, listen=admin))
        if self.listen:
            config = replace(config, server=replace(config.server, listen=self.listen))
        if self.upstream:
            config = replace(config, upstream=replace(config.upstream, servers=self.upstream))
        if self.blocklists:
            lists = tuple(
                ListConfig(name=f"cli-{i + 1}", path=path.resolve())
                for i, path in enumerate(self.blocklists)
            )
            config = replace(config, lists=lists)
        return config


def load(path: Path | None, overrides: Overrides, *, need_upstream: bool = True) -> Config:
    """The effective configuration: the file (or defaults) with overrides applied."""
    if path is not None:
        config = load_config(path)
    elif need_upstream and not overrides.upstream:
        config = parse_config("", "<defaults>")
    else:
        # No file and upstreams given (or not needed): resolv.conf is not consulted.
        config = parse_config("upstream: {servers: ['127.0.0.1']}", "<defaults>")
        config = replace(config, upstream=replace(config.upstream, servers=()))
    config = overrides.apply(config)
    if need_upstream and not config.upstream.servers:
        raise ConfigError(["upstream.servers: no upstream resolver (none in /etc/resolv.conf?)"])
    return config


_RESTART_ONLY: Final = (
    ("audit", "audit settings changed: take effect on restart"),
    ("admin", "admin settings changed: take effect on restart"),
    ("block_page", "block_page settings changed: take effect on restart"),
    ("state_dir", "state_dir changed: takes effect on restart"),
)
"""Sections (and a key) a reload keeps as they were at start, with the warning it logs."""


def keep_restart_only_settings(running: Config, config: Config) -> Config:
    """``config`` with the settings of ``running`` that only change on restart:
    listening sockets, the worker count, the admin listeners, the block page
    and the audit trail."""
    for key, warning in _RESTART_ONLY:
        kept = getattr(running, key)
        if getattr(config, key) != kept:
            log.warning("%s", warning)
            config = replace(config, **{key: kept})
    old = running.server
    new = config.server
    if (old.listen, old.udp, old.tcp, old.workers) != (
        new.listen,
        new.udp,
        new.tcp,
        new.workers,
    ):
        log.warning("server.listen/udp/tcp/workers changed: takes effect on restart")
        config = replace(
            config,
            server=replace(new, listen=old.listen, udp=old.udp, tcp=old.tcp, workers=old.workers),
        )
    return config
