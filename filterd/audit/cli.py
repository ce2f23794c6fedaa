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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from filterd.audit.anchor import key_path, load_node_key, public_path, rotate_node_key
from filterd.audit.anchors import Anchor, load_anchors, parse_anchor
from filterd.audit.render import FORMATS, render
from filterd.audit.report import ReportBuilder, parse_date
from filterd.audit.sealing import seal, verify_report
from filterd.audit.verify import read_records, verify
from filterd.commands import EXIT_FAILURE, UsageError, error, guarded
from filterd.config import AuditConfig, default_state_dir
from filterd.config.load import load_config
from filterd.files import write_atomically
from filterd.sync.model import SyncError, key_id, load_public_key, public_key_text

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


def state_dir_of(args: argparse.Namespace) -> Path:
    """Where the node key is: the configuration's state directory, else the
    one ``--path`` lies in (``<state_dir>/audit/audit.jsonl``: the directory
    above ``audit``; else the trail's own directory), else the default."""
    if getattr(args, "state_dir", None) is not None:
        return Path(args.state_dir)
    if args.config is not None:
        return load_config(Path(args.config)).state_dir
    if getattr(args, "path", None) is not None:
        directory = Path(args.path).resolve().parent
        return directory.parent if directory.name == "audit" else directory
    return default_state_dir()


def _report(args: argparse.Namespace) -> int:
    if args.verify is not None:
        return _verify_report(args)
    if args.start is None or args.end is None:
        raise UsageError("--from and --to are required (or --verify FILE)")
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
    state_dir = state_dir_of(args)
    private = load_node_key(state_dir, create=False)
    if private is None:
        _error(f"warning: report not signed: no node key in {state_dir} (filterd node-key show)")
    else:
        text = seal(text, args.format, private)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.output), text.encode(), mode=0o640)
    return 0


def _verify_report(args: argparse.Namespace) -> int:
    """``report --verify FILE``: the signature against the node's key, then the
    head the report states against the trail (when one is found)."""
    try:
        text = Path(args.verify).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--verify {args.verify}: {exc}") from None
    trusted = _trusted_key(args)
    try:
        checked = verify_report(text, trusted)
    except SyncError as exc:
        print(f"{args.verify}: NOT verified: {exc}")
        return EXIT_FAILURE
    print(f"{args.verify}: signature ok ({checked.format}, node key {checked.key_id})")
    if checked.last_seq is None or checked.head is None:
        print("trail not checked: the report states no head (HTML: check its JSON or CSV twin)")
        return 0
    path = trail_path(args)
    if args.path is None and args.config is None and not path.exists():
        print(f"trail not checked: no trail at {path} (-c CONFIG or --path FILE)")
        return 0
    anchor = Anchor(checked.last_seq, checked.head, source="the report's head")
    result = verify(path, anchors=[anchor, *(anchors_of(args) or [])], check_head=False)
    if result.problem:
        print(f"the trail does not hold what the report was made from: {result.problem}")
        return EXIT_FAILURE
    print(f"the trail holds the report's head: seq {checked.last_seq} {checked.head}")
    return 0


def _trusted_key(args: argparse.Namespace) -> Ed25519PublicKey:
    text = args.node_key
    source = "--node-key"
    if text is None:
        path = public_path(state_dir_of(args))
        source = str(path)
        try:
            text = path.read_text()
        except OSError:
            raise UsageError(f"no trusted key: {path} missing (give --node-key KEY)") from None
    elif Path(text).is_file():
        text = Path(text).read_text()
    try:
        return load_public_key(text)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None


def _node_key(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    if args.action == "rotate":
        old, new = rotate_node_key(state_dir)
        print(new)
        if old is not None:
            print(f"replaced {old} (kept as {key_path(state_dir).name}.<time>)")
        print("register the new key with the authority (filterd authority node add) now")
        return 0
    private = load_node_key(state_dir)
    assert private is not None
    public = private.public_key()
    print(public_key_text(public))
    print(f"node key {key_id(public)} in {key_path(state_dir)}")
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
    report.add_argument("--from", dest="start", metavar="DATE", help="YYYY-MM-DD or RFC 3339")
    report.add_argument(
        "--to",
        dest="end",
        metavar="DATE",
        help="YYYY-MM-DD (the end of that day) or RFC 3339 (excluded)",
    )
    report.add_argument(
        "--verify",
        metavar="FILE",
        help="check a report's signature, and that the trail holds the head it states",
    )
    report.add_argument(
        "--node-key", metavar="KEY_OR_FILE", help="the node's public key (default: its node.pub)"
    )
    report.add_argument("--format", choices=FORMATS, default="json")
    report.add_argument(
        "--sla", type=float, metavar="SECONDS", help="lag SLA (default: sync.lag_sla in force)"
    )
    report.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    _trail_options(report)

    keys = subparsers.add_parser(
        "node-key",
        help="show or rotate this node's key (signed receipts and reports)",
        description="Each node has its own Ed25519 key in its state directory (node.key), "
        "created at first use; the authority registers its public key (node.pub).",
    )
    keys.set_defaults(handler=_guarded(_node_key))
    keys.add_argument("action", choices=("show", "rotate"))
    where = keys.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="CONFIG", help="configuration (its state_dir)")
    where.add_argument("--state-dir", metavar="DIR", help="the state directory")
