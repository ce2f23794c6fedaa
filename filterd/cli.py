"""The ``filterd`` command: run, check-config, lookup (and the commands of
the other rooms: ``authority``, ``audit verify``, ``report``, ``probe``).

Exit statuses: 0 success; 1 operational failure (a port in use, a worker
that cannot start); 2 invalid configuration or list, or bad usage. Every
error is printed as one line per problem on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from filterd import __version__
from filterd.audit.cli import register as register_audit
from filterd.authority.cli import register as register_authority
from filterd.commands import EXIT_FAILURE, UsageError, guarded
from filterd.config import Config, Endpoint, ListConfig, parse_endpoint
from filterd.errors import ConfigError, ListError, StartupError
from filterd.lists import guard
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.logs import configure_logging
from filterd.probe.cli import register as register_probe
from filterd.profiles.explain import Explanation, explain
from filterd.profiles.profileset import ProfileSet
from filterd.supervisor.daemon import run_daemon
from filterd.supervisor.settings import Overrides, load
from filterd.sync.store import Pin, file_sha256, pin_in_place
from filterd.wire.names import InvalidName, normalise_text

# Every command reports its own errors (filterd/commands.py): a list that
# cannot be read is bad input, like a bad configuration.
_guarded = guarded("filterd", (ListError,))


def _endpoint_arg(default_port: int) -> Callable[[str], Endpoint]:
    def convert(text: str) -> Endpoint:
        try:
            return parse_endpoint(text, default_port)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _admin_arg(text: str) -> Endpoint | str:
    if text == "off":
        return text
    return _endpoint_arg(9553)(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filterd", description="DNS resolver proxy that enforces domain blocklists."
    )
    parser.add_argument("--version", action="version", version=f"filterd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon in the foreground")
    run.set_defaults(handler=_guarded(_run))
    run.add_argument("-c", "--config", type=Path, help="configuration file (YAML)")
    run.add_argument(
        "--listen",
        action="append",
        default=[],
        type=_endpoint_arg(53),
        metavar="ADDR:PORT",
        help="listen address (repeatable; replaces server.listen)",
    )
    run.add_argument(
        "--upstream",
        action="append",
        default=[],
        type=_endpoint_arg(53),
        metavar="ADDR[:PORT]",
        help="upstream resolver (repeatable; replaces upstream.servers)",
    )
    run.add_argument(
        "--blocklist",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="blocklist file, format detected (repeatable; replaces lists)",
    )
    run.add_argument(
        "--admin",
        type=_admin_arg,
        metavar="ADDR:PORT|off",
        help="admin HTTP address, or 'off' (replaces admin.listen)",
    )

    check = commands.add_parser("check-config", help="validate configuration and every list")
    check.add_argument("-c", "--config", type=Path, required=True)
    check.set_defaults(handler=_guarded(_check))

    lookup = commands.add_parser("lookup", help="explain the decision for a name")
    lookup.add_argument("name")
    lookup.set_defaults(handler=_guarded(_lookup))
    lookup.add_argument("-c", "--config", type=Path)
    lookup.add_argument("--blocklist", action="append", default=[], type=Path, metavar="FILE")
    lookup.add_argument(
        "--client", metavar="ADDR", help="explain for this client address: its group and profile"
    )
    lookup.add_argument(
        "--at",
        metavar="TIME",
        help="explain at this time (ISO 8601, e.g. 2026-09-07T07:30; "
        "without an offset, in the configured time_zone); default now",
    )
    shrink = commands.add_parser(
        "accept-shrink",
        help="accept the current content of a list file once, however much it shrank",
    )
    shrink.add_argument("-c", "--config", type=Path, required=True)
    shrink.add_argument("list", metavar="LIST", help="the list's name (lists[].name)")
    shrink.set_defaults(handler=_guarded(_accept_shrink))
    register_authority(commands)
    register_audit(commands)
    register_probe(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _run(args: argparse.Namespace) -> int:
    overrides = Overrides(
        tuple(args.listen), tuple(args.upstream), tuple(args.blocklist), args.admin
    )
    config = load(args.config, overrides)
    configure_logging(config.logging.level, "supervisor")
    private: Path | None = None
    if args.config is None:
        # Trying things out: a state directory of its own, gone at exit, and
        # no admin listener unless asked, so that two such runs on different
        # ports never share (or fight over) anything.
        private = Path(tempfile.mkdtemp(prefix="filterd-run-"))
        admin = config.admin if args.admin is not None else replace(config.admin, listen=None)
        config = replace(config, state_dir=private, admin=admin)
        logging.getLogger("filterd").info("no configuration file: state in %s until exit", private)
    try:
        return asyncio.run(run_daemon(args.config, overrides, config))
    except (ListError, ConfigError):
        raise
    except StartupError as exc:
        logging.getLogger("filterd").error("%s", exc)
        return EXIT_FAILURE
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _check(args: argparse.Namespace) -> int:
    config = load(args.config, Overrides())
    config, pins, pending = _as_obtained(config)
    for lst in pending:
        print(
            f"{lst.name}: authority list {lst.sync!r} not fetched yet "
            "(the first sync obtains it; see sync.on_missing)"
        )
    baseline = guard.load_baseline(config.state_dir)  # what the daemon compares against
    with tempfile.TemporaryDirectory(prefix="filterd-check-") as scratch:
        scratched = replace(config, state_dir=Path(scratch))
        report = compile_lists(scratched, pins, baseline, reuse=False)
    for source in report.sources:
        print(
            f"{source.name}: {source.path or 'built-in'} ({source.format}, version "
            f"{source.version}): {source.entries} entries, {source.accepted} accepted, "
            f"{source.invalid} invalid, {source.ignored} ignored"
        )
        for problem in source.problems:
            print(f"  {problem}")
    print(f"{report.distinct_names} distinct names; configuration OK")
    return 0


def _accept_shrink(args: argparse.Namespace) -> int:
    """Record the SHA-256 of the list file as it is now: the next reload
    installs exactly this content even past ``max_shrink`` (docs/list-formats.md)."""
    config = load(args.config, Overrides(), need_upstream=False)
    lst = next((lst for lst in config.lists if lst.name == args.list), None)
    if lst is None or lst.sync:
        known = ", ".join(lst.name for lst in config.lists if not lst.sync) or "none"
        raise UsageError(f"{args.list!r} is not a list file of {args.config} (list files: {known})")
    sha = file_sha256(lst.path)
    guard.acknowledge(config.state_dir, lst.name, sha)
    print(
        f"list {lst.name}: its current content ({lst.path}, sha256 {sha}) will be accepted "
        "once, whatever its size; reload filterd to install it"
    )
    return 0


def _as_obtained(config: Config) -> tuple[Config, dict[str, Pin], list[ListConfig]]:
    """``config`` with its synced lists as obtained in the state directory:
    the lists that can be compiled, their pins, and the synced lists not
    fetched yet (left out)."""
    pins: dict[str, Pin] = {}
    pending: list[ListConfig] = []
    for lst in config.lists:
        if lst.sync:
            pinned = pin_in_place(config.state_dir, lst.sync)
            if pinned is None:
                pending.append(lst)
            else:
                pins[lst.sync] = pinned
    lists = tuple(lst for lst in config.lists if lst not in pending)
    return replace(config, lists=lists), pins, pending


def _lookup(args: argparse.Namespace) -> int:
    try:
        name = normalise_text(args.name)
    except InvalidName as exc:
        raise UsageError(f"{args.name!r}: {exc}") from None
    config = load(args.config, Overrides(blocklists=tuple(args.blocklist)), need_upstream=False)
    profiles = ProfileSet(config)
    at = _lookup_time(args.at, profiles) if args.at else time.time()
    if args.client is not None:
        try:
            ipaddress.ip_address(args.client)
        except ValueError:
            raise UsageError(f"--client {args.client!r} is not an IP address") from None
    config, pins, pending = _as_obtained(config)
    for lst in pending:
        print(f"note: authority list {lst.sync!r} ({lst.name}) not fetched yet; not consulted")
    with tempfile.TemporaryDirectory(prefix="filterd-lookup-") as scratch:
        report = compile_lists(replace(config, state_dir=Path(scratch)), pins, reuse=False)
        matcher, sources = open_matcher(report.index_path)
        try:
            found = explain(name, args.client, at, matcher, sources, config, profiles)
        finally:
            matcher.index.close()
    _print_explanation(found, args.client is not None or args.at is not None)
    return 0


def _lookup_time(text: str, profiles: ProfileSet) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r} is not a time (ISO 8601: 2026-09-07T07:30)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=profiles.zone)
    return moment.timestamp()


def _print_explanation(found: Explanation, with_client: bool) -> None:
    print(f"name: {found.name}")
    if with_client:
        print(f"client: {found.client or '(none: the default group)'}")
        print(f"group: {found.group}")
        print(f"profile: {found.profile}")
        print(f"time: {found.at.isoformat(timespec='minutes')} ({found.at.tzinfo})")
    decision, source = found.decision, found.source
    for category, why in found.not_applied:
        print(f"not applied: {category} ({why})")
    if decision.rule is None or source is None:
        if found.rewrite:
            print(f"decision: rewritten to {found.rewrite} (safe search)")
        else:
            print("decision: allowed (no rule matches)")
        return
    rule = decision.rule
    print(f"decision: {'blocked' if found.blocked else 'allowed'}")
    print(f"rule: {_describe_rule(decision.entry, rule.scope.name.lower(), rule.allow)}")
    kind = ", mandatory" if source.mandatory else ", opt-in" if source.opt_in else ""
    print(f"list: {source.name} ({source.path or 'built-in'}, version {source.version}{kind})")
    print(f"category: {found.category}")
    if found.schedule:
        print(f"schedule: {found.schedule}: active")
    if found.blocked and found.action is not None:
        print(f"action: {found.action.value}")
        print(f"extended error: {found.ede}")
    if decision.ref:
        print(f"reference: {decision.ref}")
    if found.rewrite:
        print(f"rewritten to: {found.rewrite} (safe search)")


def _describe_rule(entry: bytes, scope: str, allow: bool) -> str:
    name = entry.decode()
    reach = {
        "exact": name,
        "subtree": f"{name} and its subdomains",
        "below": f"subdomains of {name}",
    }[scope]
    return f"{'allow' if allow else 'block'} {reach}"


if __name__ == "__main__":
    sys.exit(main())
