"""Reading a configuration file: every section, then the checks across sections.

``parse_config`` reports every problem of a file at once (``ConfigError``
with one line per problem, each with its line number and key path), never a
traceback and never the first problem alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from filterd.config import (
    Config,
    checks,
    profiles,
    sections,
)
from filterd.errors import ConfigError
from filterd.model.layout import snapshot_path
from filterd.model.rules import Action


def _check_sync(doc: checks.Document, cfg: Config) -> None:
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


def _check_actions(doc: checks.Document, cfg: Config) -> None:
    """A sinkhole action needs somewhere to point."""
    sink = cfg.blocking.sinkhole
    if sink.ipv4 is not None or sink.ipv6 is not None:
        return
    uses = [("blocking.default_action", cfg.blocking.default_action)]
    uses += [(f"blocking.category_actions.{c}", a) for c, a in cfg.blocking.category_actions]
    uses += [(f"lists[{i}].action", lst.action) for i, lst in enumerate(cfg.lists) if lst.action]
    uses += [(f"profiles.{p.name}.action", p.action) for p in cfg.profiles if p.action]
    for path, action in uses:
        if action is Action.SINKHOLE:
            doc.problem(path, "sinkhole needs blocking.sinkhole.ipv4 and/or ipv6")


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Parse configuration text; ``base`` resolves relative paths (the file's directory)."""
    doc = checks.Document(text, source)
    base = base or Path.cwd()
    top = checks.Reader(doc, doc.data, "")
    state_dir = top.get("state_dir", None, checks.domain_name)
    sync = sections.sync(top.section("sync"), base)
    cfg = Config(
        server=sections.server(top.section("server")),
        access=sections.access(top.section("access")),
        upstream=sections.upstream(top.section("upstream")),
        cache=sections.cache(top.section("cache")),
        blocking=sections.blocking(top.section("blocking")),
        lists=sections.lists(doc, top.get("lists", None, lambda v: v), base),
        sync=sync,
        admin=sections.admin(top.section("admin")),
        logging=sections.logging(top.section("logging")),
        statistics=sections.statistics(top.section("statistics")),
        audit=sections.audit(top.section("audit"), base),
        compile=sections.compile(top.section("compile")),
        rate_limit=sections.rate_limit(top.section("rate_limit")),
        block_page=sections.block_page(top.section("block_page")),
        authorities=sections.authorities(top.section("authorities"), base, sync),
        groups=profiles.groups(top.section("groups")),
        profiles=profiles.profiles(top.section("profiles")),
        schedules=profiles.schedules(top.section("schedules")),
        time_zone=profiles.time_zone(top),
        client_subnet=profiles.client_subnet(top.section("client_subnet")),
        source=Path(source) if source != "<config>" else None,
    )
    if state_dir is not None:
        cfg = replace(cfg, state_dir=base / state_dir)
    cfg = replace(cfg, lists=tuple(
        replace(lst, path=snapshot_path(cfg.state_dir, lst.sync)) if lst.sync else lst
        for lst in cfg.lists
    ))  # fmt: skip
    _check_sync(doc, cfg)
    profiles.check_references(doc, cfg.groups, cfg.profiles, cfg.schedules, cfg.lists)
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
