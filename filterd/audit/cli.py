"""``filterd audit verify`` and ``filterd report`` (docs/audit.md).

``register`` adds both commands to the ``filterd`` parser; each handler is
``args.handler(args) -> int``. The trail is found with ``--path FILE``, or
from a configuration (``-c``: its ``audit.path``, by default
``<state_dir>/audit/audit.jsonl``), or else at the default state directory.

Exit statuses: 0 success (``verify``: every record is vouched for); 1 the
trail is broken or cannot be read; 2 bad usage or input (a date, an anchor,
a configuration); 3 (``verify``) the chain is intact but some records are
vouched for by nothing (verify.py, "Verdicts"). Every error is one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from filterd.audit.anchors import Anchor, load_anchors, parse_anchor
from filterd.audit.render import FORMATS, render
from filterd.audit.report import ReportBuilder, parse_date
from filterd.audit.verify import read_records, verify
from filterd.commands import EXIT_FAILURE, UsageError, error, guarded
from filterd.config import AuditConfig, default_state_dir, load_config
from filterd.files import write_atomically

EXIT_UNVERIFIED: Final = 3
VERDICT_STATUS: Final = {"ok": 0, "broken": EXIT_FAILURE, "unverified": EXIT_UNVERIFIED}

_guarded = guarded("filterd")


def _error(message: str) -> None:
    error("filterd", message)


def trail_path(args: argparse.Namespace) -> Path:
    if args.path is not None:
        return Path(args.path)
    if args.config is not None:
        config = load_config(Path(args.config))
        return config.audit.resolve(config.state_dir)
    return AuditConfig().resolve(default_state_dir())


# ----------------------------------------------------------------- verify


def anchors_of(args: argparse.Namespace) -> list[Anchor] | None:
    """``--anchors FILE`` and ``--expect SEQ:HASH``; None when neither is given."""
    if args.anchors is None and not args.expect:
        return None
    try:
        anchors = load_anchors(Path(args.anchors)) if args.anchors is not None else []
        anchors += [parse_anchor(text) for text in args.expect]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--anchors {args.anchors}: {exc.strerror or exc}") from None
    return anchors


def _verify(args: argparse.Namespace) -> int:
    anchors = anchors_of(args)
    result = verify(trail_path(args), check_head=not args.no_head, anchors=anchors)
    print(result.summary())
    for line in result.details():
        print(line)
    return VERDICT_STATUS[result.verdict]


# ----------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    try:
        start = parse_date(args.start)
        end = parse_date(args.end, end=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if end <= start:
        raise UsageError(f"--to {args.end} is not after --from {args.start}")
    if args.sla is not None and not args.sla >= 0:
        raise UsageError(f"--sla {args.sla:g}: must be a number of seconds, 0 or more")
    builder = ReportBuilder(start, end, args.sla)
    unreadable: list[int] = []

    def add(record: dict[str, Any]) -> None:
        try:
            builder.add(record)
        except (KeyError, TypeError, ValueError, AttributeError):
            unreadable.append(int(record["seq"]))

    path = trail_path(args)
    result = verify(path, anchors=anchors_of(args))
    for record in read_records(path):  # what nothing vouches for is left out
        if record["seq"] not in result.unvouched:
            add(record)
    if unreadable:
        note = f"{len(unreadable)} record(s) with unreadable fields skipped (seq {unreadable[0]}"
        result.notes.append(note + (", ...)" if len(unreadable) > 1 else ")"))
    if not result.ok:
        _error(f"warning: the audit trail does not verify: {result.summary()}")
    text = render(builder.build(result), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.output), text.encode(), mode=0o640)
    return 0


# --------------------------------------------------------------- register


def _anchor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--anchors",
        metavar="FILE",
        help="heads taken off this node (filterd authority heads, or SEQ:HASH lines): "
        "the trail must contain each of them",
    )
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="the record SEQ must still hash to HASH, e.g. a head from an earlier report "
        "(repeatable)",
    )


def _trail_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="CONFIG", help="configuration (its audit.path)")
    where.add_argument("--path", metavar="FILE", help="the current trail file (audit.jsonl)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` (with ``verify``) and ``report`` to the ``filterd`` command."""
    audit = subparsers.add_parser(
        "audit",
        help="check the audit trail",
        description="The audit trail of list applications, updates and reloads (docs/audit.md).",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True)
    check = commands.add_parser(
        "verify",
        help="check the hash chain, the sequence and the head",
        description="Walk the rotated files and the current one; print 'ok: ...' (exit 0), "
        "'unverified: ...' when records are vouched for by nothing (exit 3), or the first "
        "broken record as FILE:LINE (exit 1); then what is anchored and what is not yet.",
    )
    check.set_defaults(handler=_guarded(_verify))
    _trail_options(check)
    _anchor_options(check)
    check.add_argument(
        "--no-head", action="store_true", help="do not compare with audit.head (a copy without it)"
    )

    report = subparsers.add_parser(
        "report",
        help="the periodic report to the authority, from the audit trail",
        description="Lists enforced and for how long, authority updates and their lag "
        "against the SLA, sync failures, reloads, queries and blocked answers in a window.",
    )
    report.set_defaults(handler=_guarded(_report))
    _anchor_options(report)
    report.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="YYYY-MM-DD or RFC 3339"
    )
    report.add_argument(
        "--to",
        dest="end",
        required=True,
        metavar="DATE",
        help="YYYY-MM-DD (the end of that day) or RFC 3339 (excluded)",
    )
    report.add_argument("--format", choices=FORMATS, default="json")
    report.add_argument(
        "--sla", type=float, metavar="SECONDS", help="lag SLA (default: sync.lag_sla in force)"
    )
    report.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    _trail_options(report)
