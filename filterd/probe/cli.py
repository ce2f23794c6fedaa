"""``filterd probe``: does a resolver enforce a list? (docs/probe.md)

``register`` adds the ``probe`` command to the ``filterd`` parser with
``handler=run_probe``.

Exit statuses: 0 the resolver passed (compliance at least
``--min-compliance`` and every control resolved); 1 it did not, or the run
was interrupted; 2 bad usage or input (an unreadable or empty list, a bad
address, an invalid control name), as one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Final

from filterd.commands import EXIT_FAILURE, UsageError, error, guarded
from filterd.config import Endpoint, parse_endpoint
from filterd.formats import Format, ParseOptions, detect_format, parse
from filterd.model.rules import Scope
from filterd.probe.client import ask_all_sync
from filterd.probe.report import Check, Report, RunInfo
from filterd.probe.sample import (
    MAX_LIST_BYTES,
    ListInputError,
    Target,
    draw,
    inflate,
    locate,
    rules_of,
)
from filterd.probe.verdict import DEFAULT_SINKHOLES, IPAddress, Outcome, classify, failed
from filterd.wire.codes import TYPE_A, TYPE_AAAA
from filterd.wire.names import InvalidName, normalise_text

PROG: Final = "filterd probe"
EXIT_PASS: Final = 0
QTYPES: Final = {"A": TYPE_A, "AAAA": TYPE_AAAA}

_guarded = guarded(PROG, (ListInputError,), unreadable_is_usage=True)


def _error(message: str) -> None:
    error(PROG, message)


# -------------------------------------------------------------- inputs


def _read_list(path: Path) -> bytes:
    if path.stat().st_size > MAX_LIST_BYTES:
        raise UsageError(f"{path}: list larger than {MAX_LIST_BYTES} bytes")
    return inflate(path.read_bytes(), str(path))


def _control_names(args: argparse.Namespace) -> list[str]:
    """``--control`` names, then ``--controls`` file lines (``#`` comments allowed)."""
    given: list[tuple[str, str]] = [("--control", name) for name in args.control]
    if args.controls is not None:
        text = args.controls.read_bytes().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            name = line.partition("#")[0].strip()
            if name:
                given.append((f"{args.controls}:{number}", name))
    names: list[str] = []
    for where, name in given:
        try:
            canonical = normalise_text(name).decode()
        except InvalidName as exc:
            raise UsageError(f"{where}: control {name!r}: {exc}") from None
        if canonical not in names:
            names.append(canonical)
    return names


# -------------------------------------------------------------- the command


def run_probe(args: argparse.Namespace) -> int:
    """Sample the list, ask the resolver, print the report; see the module doc."""
    return _guarded(_probe)(args)


def _probe(args: argparse.Namespace) -> int:
    path: Path = args.list
    data = _read_list(path)
    fmt = detect_format(data) if args.list_format == "auto" else Format(args.list_format)
    options = ParseOptions(
        str(path), plain_scope=Scope[args.mode.upper()], allow_tld=args.allow_tld
    )
    rules = rules_of(parse(data, fmt, options))
    if rules.total == 0:
        raise UsageError(
            f"{path}: no block rules to probe ({fmt.value} format; "
            f"{rules.invalid} invalid and {rules.ignored} ignored lines)"
        )
    controls = _control_names(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 32)
    sample = draw(rules, args.sample, seed, subdomains=args.subdomains)
    if not sample.targets:
        raise UsageError(f"{path}: every block rule is exempted by an allow rule of the list")
    sinkholes = DEFAULT_SINKHOLES | frozenset(args.sinkhole)
    targets = [*sample.targets, *(Target(name) for name in controls)]
    replies = ask_all_sync(
        args.resolver,
        [target.qname for target in targets],
        QTYPES[args.qtype],
        timeout=args.timeout,
        run_time=args.max_time,
        concurrency=args.concurrency,
    )
    checks = [
        Check(
            target,
            failed(reply.error)
            if reply.message is None
            else classify(reply.message, sinkholes, reply.transport),
        )
        for target, reply in zip(targets, replies, strict=True)
    ]
    probed, control_checks = checks[: len(sample.targets)], checks[len(sample.targets) :]
    worth_locating = {
        check.target.rule
        for check in probed
        if check.target.rule is not None and check.verdict.outcome is not Outcome.BLOCKED
    }
    lines = locate(data, fmt, options, worth_locating) if worth_locating else {}
    probed = [
        Check(check.target, check.verdict, lines.get(check.target.rule))
        if check.target.rule is not None
        else check
        for check in probed
    ]
    report = Report(
        RunInfo(
            resolver=str(args.resolver),
            list_path=str(path),
            list_format=fmt.value,
            block_rules=rules.total,
            requested=args.sample,
            sampled_rules=len(sample.rules),
            exempted=sample.exempted,
            seed=seed,
            qtype=args.qtype,
            sinkholes=tuple(sorted(map(str, sinkholes))),
            min_compliance=args.min_compliance,
        ),
        tuple(probed),
        tuple(control_checks),
    )
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text(), end="")
    return EXIT_PASS if report.passed else EXIT_FAILURE


# -------------------------------------------------------------- arguments


def _argument(convert: Callable[[str], object]) -> Callable[[str], object]:
    """Wrap ``convert`` so that its ``ValueError`` becomes an argparse usage error."""

    @functools.wraps(convert)
    def checked(text: str) -> object:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"invalid value {text!r}") from None

    return checked


def _resolver(text: str) -> Endpoint:
    return parse_endpoint(text, 53)


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _bounded(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], object]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise ValueError(f"{text} is not between {low:g} and {high:g}")
        return value

    return _argument(convert)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``probe`` to the ``filterd`` command (``handler=run_probe``)."""
    probe = commands.add_parser(
        "probe",
        help="check that a resolver blocks a list's names and resolves control names",
        description="Ask a resolver for a random sample of a list's blocked names and for "
        "control names that must resolve; print the compliance and every failure "
        "(docs/probe.md).",
    )
    probe.set_defaults(handler=run_probe)
    probe.add_argument(
        "--resolver",
        required=True,
        type=_argument(_resolver),
        metavar="HOST[:PORT]",
        help="the resolver to check (port 53 if omitted; [V6]:PORT for IPv6)",
    )
    probe.add_argument(
        "--list",
        required=True,
        type=Path,
        metavar="FILE",
        help="list file in any format filterd reads, or a (gzip) snapshot",
    )
    probe.add_argument(
        "--list-format",
        choices=["auto", *(f.value for f in Format)],
        default="auto",
        help="the list's format (default: detected from its content)",
    )
    probe.add_argument(
        "--mode",
        choices=["subtree", "exact"],
        default="subtree",
        help="what a bare name in a domains or hosts list covers (as the list's 'mode')",
    )
    probe.add_argument(
        "--allow-tld", action="store_true", help="accept single-label (top-level) entries"
    )
    probe.add_argument(
        "--sample",
        type=_bounded(int, 1, 100_000),
        default=200,
        metavar="N",
        help="block rules to probe (default 200; all of them if the list is smaller)",
    )
    probe.add_argument(
        "--seed",
        type=_bounded(int, 0, 2**64 - 1),
        metavar="S",
        help="random seed, to repeat a run (default: a new one, printed)",
    )
    probe.add_argument(
        "--subdomains",
        action="store_true",
        help="also probe a made-up subdomain of every sampled subtree rule",
    )
    probe.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="NAME",
        help="a name that must resolve (repeatable)",
    )
    probe.add_argument(
        "--controls", type=Path, metavar="FILE", help="names that must resolve, one per line"
    )
    probe.add_argument(
        "--sinkhole",
        action="append",
        default=[],
        type=_argument(_address),
        metavar="ADDR",
        help="an address that means blocked (repeatable; 0.0.0.0 and :: always do)",
    )
    probe.add_argument("--qtype", choices=sorted(QTYPES), default="A", help="query type")
    probe.add_argument(
        "--timeout",
        type=_bounded(float, 0.05, 60),
        default=2.0,
        metavar="T",
        help="seconds to wait for each answer (default 2; one retry after a timeout)",
    )
    probe.add_argument(
        "--max-time",
        type=_bounded(float, 1, 86400),
        default=120.0,
        metavar="T",
        help="seconds the whole run may take (default 120)",
    )
    probe.add_argument(
        "--concurrency",
        type=_bounded(int, 1, 256),
        default=32,
        metavar="N",
        help="queries in flight at once (default 32)",
    )
    probe.add_argument("--format", choices=["text", "json"], default="text", help="output")
    probe.add_argument(
        "--min-compliance",
        type=_bounded(float, 0, 100),
        default=100.0,
        metavar="PCT",
        help="compliance needed to pass, in percent (default 100)",
    )
