"""``filterd authority``: the Department's commands (docs/authority.md).

``register`` adds the ``authority`` command and its subcommands to the
``filterd`` parser; each subcommand's handler is ``args.handler(args) -> int``.
Running this module (``python -m filterd.authority.cli authority ...``)
builds a parser of its own around ``register``, for use without the main
``filterd`` command.

Exit statuses, as for the rest of filterd: 0 success; 1 an operational
failure (a file that cannot be written, a port in use, an envelope that
does not verify, a notification that was not accepted by ``notify``); 2 bad
usage or input (an unknown list, an invalid name, an existing key). Every
error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Final

from filterd.authority import nodecli
from filterd.authority.convert import import_list
from filterd.authority.notify import Outcome, Target, notification, push
from filterd.authority.records import AuthorityError
from filterd.authority.server import AuthorityServer, check_manifests, serve
from filterd.authority.store import Store
from filterd.commands import EXIT_FAILURE, error, guarded
from filterd.config import Endpoint, parse_endpoint
from filterd.formats import Format
from filterd.logs import configure_logging
from filterd.sync.model import (
    SyncError,
    format_time,
    key_id,
    load_public_key,
    open_envelope,
    parse_manifest,
    parse_notify,
    public_key_text,
    sha256_hex,
    utc_now,
)
from filterd.sync.snapshot import make_entry, snapshot_entries

PROG: Final = "filterd authority"
MIN_ADMIN_TOKEN: Final = 16

Handler = Callable[[argparse.Namespace], int]


_guarded = guarded(PROG, (AuthorityError,))


def _error(message: str) -> None:
    error(PROG, message)


# ------------------------------------------------------------ commands


def _keygen(args: argparse.Namespace) -> int:
    public = Store(args.dir).generate_key(force=args.force)
    print(public_key_text(public))
    print(f"key id {key_id(public)}: give operators the line above (sync.public_key)")
    return 0


def _operator_add(args: argparse.Namespace) -> int:
    token = Store(args.dir).operators.add(args.id, args.notify)
    print(token)
    print(f"operator {args.id}: the token above is shown once; only its SHA-256 is kept")
    return 0


def _operator_token(args: argparse.Namespace) -> int:
    token = Store(args.dir).operators.new_token(args.id)
    print(token)
    print(f"operator {args.id}: new token shown once; the previous one no longer works")
    return 0


def _operator_remove(args: argparse.Namespace) -> int:
    Store(args.dir).operators.remove(args.id)
    print(f"operator {args.id} removed; its token no longer works")
    return 0


def _operator_list(args: argparse.Namespace) -> int:
    operators = Store(args.dir).operators.all()
    if not operators:
        print("no operators (add one with: operator add)")
    for operator in operators.values():
        urls = ", ".join(operator.notify) or "no notify URL"
        print(f"{operator.operator_id}: {urls}")
    return 0


def _init(args: argparse.Namespace) -> int:
    Store(args.dir).init_list(args.list)
    print(f"list {args.list} created (empty staging list)")
    return 0


def _add(args: argparse.Namespace) -> int:
    try:
        entry = make_entry(args.name, args.kind, args.category, " ".join(args.reference))
    except ValueError as exc:
        raise AuthorityError(str(exc)) from None
    replaced = Store(args.dir).add_entry(args.list, entry)
    verb = "replaced" if replaced else "added"
    print(f"{verb} in {args.list} staging: {entry.line().decode()}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    name = Store(args.dir).remove_entry(args.list, args.name)
    print(f"removed from {args.list} staging: {name.decode()}")
    return 0


def _import(args: argparse.Namespace) -> int:
    store = Store(args.dir)
    before = snapshot_entries(store.staging(args.list))
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise AuthorityError(f"{args.file}: {exc.strerror}") from None
    result = import_list(data, Format(args.format) if args.format else None, str(args.file))
    print(
        f"{args.file} ({result.format.value}): {result.lines_accepted} lines accepted, "
        f"{result.lines_invalid} invalid, {result.lines_ignored} ignored"
    )
    for problem in result.parse_problems:
        print(f"  {problem.describe(str(args.file))}")
    if result.merged:
        print(f"{result.merged} rules merged into the entry of a name already seen")
    if result.actions_dropped:
        print(
            f"{result.actions_dropped} RPZ actions not carried (the native format has none: "
            "each operator's action for the category applies)"
        )
    for reason, count in sorted(result.skipped.items()):
        print(f"{count} names skipped or cut: {reason}")
    for example in result.examples:
        print(f"  {example}")
    if not result.entries:
        raise AuthorityError(f"{args.file}: no entry to import; staging left as it was")
    count = store.replace_staging(args.list, result.entries)
    print(f"staging of {args.list}: {count} entries (was {before}); publish to make it effective")
    return 0


def _publish(args: argparse.Namespace) -> int:
    store = Store(args.dir)
    published = store.publish(args.list, keep=args.keep, expires_days=args.expires_days)
    manifest = published.manifest
    bases = ", ".join(str(d.base) for d in manifest.deltas) or "none"
    print(
        f"published {manifest.list_id} serial {manifest.serial}: {manifest.entries} entries, "
        f"sha256 {manifest.snapshot.sha256}, deltas from {bases}, "
        f"expires {format_time(manifest.expires_at)}"
    )
    if published.unchanged:
        print(f"note: the list is unchanged since serial {manifest.serial - 1}; published anyway")
    if published.pruned:
        print(f"pruned {published.pruned} snapshot and delta files outside --keep")
    if args.no_notify:
        return 0
    outcomes = _notify_all(store, manifest.list_id, manifest.serial)
    if outcomes is not None and not all(o.accepted for o in outcomes):
        print("note: nodes not notified pull the new serial at their next interval")
    return 0


def _notify(args: argparse.Namespace) -> int:
    store = Store(args.dir)
    history = store.history(args.list) if store.list_dir(args.list).is_dir() else []
    if not history:
        raise AuthorityError(f"list {args.list!r} has no publication to notify")
    outcomes = _notify_all(store, args.list, history[-1].serial)
    failed = sum(not o.accepted for o in outcomes or [])
    if failed:
        _error(f"{failed} of {len(outcomes or [])} nodes did not accept the notification")
        return EXIT_FAILURE
    return 0


def _notify_all(store: Store, list_id: str, serial: int) -> list[Outcome] | None:
    """Push serial ``serial`` to every registered node; None if there is none."""
    targets = [
        Target(op.operator_id, url) for op in store.operators.all().values() for url in op.notify
    ]
    if not targets:
        print("no notify URL registered: operators pull at their interval")
        return None
    envelope = notification(list_id, serial, store.private_key())
    outcomes = asyncio.run(push(envelope, targets))
    for outcome in outcomes:
        print(outcome.describe())
    accepted = sum(o.accepted for o in outcomes)
    print(f"notified serial {serial} of {list_id}: {accepted} of {len(outcomes)} nodes accepted")
    return outcomes


def _serve(args: argparse.Namespace) -> int:
    store = Store(args.dir)
    if not args.dir.is_dir():
        raise AuthorityError(f"{args.dir}: no such data directory")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise AuthorityError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise AuthorityError("--tls-client-ca needs --tls-cert and --tls-key")
    tls = None
    if args.tls_cert is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
            if args.tls_client_ca is not None:  # mutual TLS: nodes must show a certificate
                tls.load_verify_locations(cafile=args.tls_client_ca)
                tls.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise AuthorityError(f"TLS certificate, key or client CA: {exc}") from None
    admin_token = _admin_token(args.admin_token_file)
    store.operators.all()  # a damaged operators.json stops start-up, not every request
    configure_logging("info", "authority")
    check_manifests(store)
    server = AuthorityServer(
        store,
        admin_token=admin_token,
        loopback_open=args.compliance_open,
        require_signed=args.require_signed,
    )
    asyncio.run(serve(server, args.listen, tls))
    return 0


def _admin_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise AuthorityError(f"{path}: {exc.strerror}") from None
    if len(token) < MIN_ADMIN_TOKEN:
        raise AuthorityError(f"{path}: admin token shorter than {MIN_ADMIN_TOKEN} characters")
    return token


def _verify(args: argparse.Namespace) -> int:
    key_text = args.public_key
    key_file = Path(key_text)
    try:
        if key_file.is_file():
            key_text = key_file.read_text()
        public = load_public_key(key_text)
        raw = args.file.read_bytes()
    except ValueError as exc:
        raise AuthorityError(f"public key: {exc}") from None
    except OSError as exc:
        raise AuthorityError(f"{exc.filename}: {exc.strerror}") from None
    try:
        document = open_envelope(raw, public)
    except SyncError as exc:
        _error(f"{args.file}: does not verify ({exc.reason}): {exc}")
        return EXIT_FAILURE
    print(json.dumps(document, indent=2, ensure_ascii=False))
    kind = document.get("type")
    try:
        if kind == "filterd-manifest":
            manifest = parse_manifest(document, str(document.get("list", "")))
            if manifest.expires_at < utc_now():
                print(f"warning: expired at {format_time(manifest.expires_at)} (stale)")
        elif kind == "filterd-notify":
            parse_notify(document)
        else:
            _error(f"{args.file}: signed, but neither a manifest nor a notification")
            return EXIT_FAILURE
    except SyncError as exc:
        _error(f"{args.file}: signed, but not a valid {kind}: {exc}")
        return EXIT_FAILURE
    print(f"verified: {kind}, signed by key {key_id(public)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    store = Store(args.dir)
    if not args.dir.is_dir():
        raise AuthorityError(f"{args.dir}: no such data directory")
    print(f"data directory: {args.dir}")
    try:
        public = store.public_key()
        print(f"signing key: id {key_id(public)}, public key {public_key_text(public)}")
    except AuthorityError:
        print("signing key: none (run keygen)")
    operators = store.operators.all()
    urls = sum(len(op.notify) for op in operators.values())
    print(f"operators: {len(operators)}, notify URLs: {urls}")
    lists = store.list_ids()
    if not lists:
        print("lists: none (create one with init)")
    now = utc_now()
    for list_id in lists:
        staging = store.staging(list_id)
        history = store.history(list_id)
        latest = history[-1] if history else None
        if latest is None:
            state = "never published"
        elif latest.sha256 == sha256_hex(staging):
            state = f"same as serial {latest.serial}"
        else:
            state = "unpublished changes"
        print(f"list {list_id}: staging {snapshot_entries(staging)} entries ({state})")
        if latest is None:
            continue
        print(
            f"  serial {latest.serial}: published {format_time(latest.published_at)}, "
            f"{latest.entries} entries, {len(history)} publications"
        )
        try:
            served = store.manifest(list_id)
        except SyncError as exc:
            print(f"  served manifest does not verify with authority.pub: {exc}")
            continue
        if served is not None:
            manifest = served[1]
            stale = " (EXPIRED: publish again)" if manifest.expires_at < now else ""
            left = manifest.expires_at - now
            days = f", {left // timedelta(days=1)} days left" if not stale else ""
            bases = ", ".join(str(d.base) for d in manifest.deltas) or "none"
            print(
                f"  served: serial {manifest.serial}, expires "
                f"{format_time(manifest.expires_at)}{stale}{days}; deltas from {bases}"
            )
    return 0


# -------------------------------------------------------------- parser


def _endpoint(text: str) -> Endpoint:
    try:
        return parse_endpoint(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}")
        return int(text)

    return convert


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``authority`` and its subcommands to the ``filterd`` command."""
    authority = subparsers.add_parser(
        "authority",
        help="run a list authority (keys, operators, lists, publishing, serving)",
        description="Reference authority of the sync protocol (docs/authority.md).",
    )
    commands = authority.add_subparsers(dest="authority_command", required=True)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(handler=_guarded(handler))
        return parser

    def data_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dir", type=Path, required=True, metavar="DATA", help="data directory"
        )

    def list_option(parser: argparse.ArgumentParser) -> None:
        data_dir(parser)
        parser.add_argument("--list", required=True, metavar="ID", help="list id")

    keygen = command("keygen", _keygen, "create the signing key; print the public key to pin")
    data_dir(keygen)
    keygen.add_argument("--force", action="store_true", help="replace an existing key")

    operator = commands.add_parser("operator", help="register operators and their tokens")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True)

    def operator_command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = operator_commands.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(handler=_guarded(handler))
        data_dir(parser)
        return parser

    add_operator = operator_command("add", _operator_add, "register an operator; print its token")
    add_operator.add_argument("--id", required=True, help="operator id, e.g. vnpt-hanoi")
    add_operator.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="a node's admin base URL for push notifications (repeatable)",
    )
    operator_command("list", _operator_list, "list operators and their notify URLs")
    token = operator_command("token", _operator_token, "issue a new token (revokes the old one)")
    token.add_argument("--id", required=True)
    remove_operator = operator_command("remove", _operator_remove, "remove an operator")
    remove_operator.add_argument("--id", required=True)

    list_option(command("init", _init, "create a list with an empty staging list"))

    add = command("add", _add, "add or replace one entry in a staging list")
    list_option(add)
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "kind", metavar="KIND", help="block, block-exact, block-below, allow or allow-exact"
    )
    add.add_argument("category", metavar="CATEGORY", nargs="?", default="-")
    add.add_argument("reference", metavar="REFERENCE", nargs="*", help="the decision (free text)")

    remove = command("remove", _remove, "remove one entry from a staging list")
    list_option(remove)
    remove.add_argument("name", metavar="NAME")

    imported = command("import", _import, "replace a staging list with a list file's entries")
    list_option(imported)
    imported.add_argument("file", type=Path, metavar="FILE")
    imported.add_argument(
        "--format", choices=[f.value for f in Format], help="list format (default: detected)"
    )

    publish = command("publish", _publish, "publish the staging list as the next serial")
    list_option(publish)
    publish.add_argument(
        "--keep",
        type=_count(0, 100),
        default=10,
        metavar="N",
        help="earlier serials operators can update from with a delta (default 10)",
    )
    publish.add_argument(
        "--expires-days",
        type=_count(1, 3650),
        default=7,
        metavar="D",
        help="days until the manifest is reported stale (default 7)",
    )
    publish.add_argument("--no-notify", action="store_true", help="do not push to the nodes")

    list_option(command("notify", _notify, "push the latest serial of a list to every node again"))

    serve_parser = command("serve", _serve, "serve the lists, receipts and compliance over HTTP")
    data_dir(serve_parser)
    serve_parser.add_argument("--listen", type=_endpoint, required=True, metavar="ADDR:PORT")
    serve_parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain")
    serve_parser.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    serve_parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="require node certificates signed by these CAs (mutual TLS)",
    )
    serve_parser.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="file holding the admin token for the compliance view",
    )
    serve_parser.add_argument(
        "--require-signed-receipts",
        dest="require_signed",
        action="store_true",
        help="refuse unsigned receipts even from nodes with no registered key",
    )
    serve_parser.add_argument(
        "--compliance-loopback-open",
        dest="compliance_open",
        action="store_true",
        help="serve /compliance without a token to direct loopback clients",
    )

    verify = command("verify", _verify, "check a signed manifest or notification file")
    verify.add_argument(
        "--public-key", required=True, metavar="TEXT_OR_FILE", help="the pinned public key"
    )
    verify.add_argument("file", type=Path, metavar="FILE")

    data_dir(command("status", _status, "lists, serials, entries and publication times"))
    nodecli.register(commands, _guarded, data_dir)
