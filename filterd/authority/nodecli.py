"""``filterd authority node`` and ``filterd authority heads`` (docs/authority.md).

Registering a node's public key (the node prints it with ``filterd node-key
show``) is what makes its receipts count as the node's: from then on every
receipt from it must be signed by that key (receipts.py). ``heads`` exports
the audit heads a node's signed receipts carried, the anchors file that
``filterd audit verify --anchors`` checks the node's trail against.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from filterd.authority.nodes import NodeKeys, heads
from filterd.authority.store import Store
from filterd.files import write_atomically
from filterd.sync.model import key_id, load_public_key, utc_now

Handler = Callable[[argparse.Namespace], int]
Guard = Callable[[Handler], Handler]


def _node_add(args: argparse.Namespace) -> int:
    key = args.key
    if Path(key).is_file():
        key = Path(key).read_text()
    text = NodeKeys(Store(args.dir)).add(args.operator, args.node, key, utc_now())
    print(f"node {args.node} of {args.operator}: key {key_id(load_public_key(text))} registered")
    print("from now on its receipts must be signed with this key")
    return 0


def _node_remove(args: argparse.Namespace) -> int:
    NodeKeys(Store(args.dir)).remove(args.operator, args.node)
    print(f"node {args.node} of {args.operator}: key removed")
    return 0


def _node_list(args: argparse.Namespace) -> int:
    nodes = NodeKeys(Store(args.dir)).all()
    if not nodes:
        print("no node keys (register one with: node add)")
    for name, entry in sorted(nodes.items()):
        public = load_public_key(entry["public_key"])
        print(f"{name}: key {key_id(public)} {entry['public_key']} (added {entry['added_at']})")
    return 0


def _heads(args: argparse.Namespace) -> int:
    document = heads(Store(args.dir), args.operator, args.node)
    text = json.dumps(document, indent=2) + "\n"
    if args.output is None:
        print(text, end="")
    else:
        write_atomically(Path(args.output), text.encode(), mode=0o644)
        print(f"{len(document['heads'])} heads of node {args.node} written to {args.output}")
    return 0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    guard: Guard,
    data_dir: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``node`` (add, remove, list) and ``heads`` to ``filterd authority``."""
    node = commands.add_parser("node", help="register nodes' public keys (signed receipts)")
    node_commands = node.add_subparsers(dest="node_command", required=True)

    def node_command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = node_commands.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(handler=guard(handler))
        data_dir(parser)
        return parser

    def who(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--operator", required=True, help="operator id")
        parser.add_argument("--node", required=True, help="node name (the node's sync.node)")

    add = node_command("add", _node_add, "register (or replace) a node's public key")
    who(add)
    add.add_argument(
        "--key", required=True, metavar="TEXT_OR_FILE", help="the node's node.pub (base64)"
    )
    who(node_command("remove", _node_remove, "remove a node's key"))
    node_command("list", _node_list, "list registered node keys")

    help_text = "export the audit heads a node's signed receipts carried (anchors, JSON)"
    export = commands.add_parser("heads", help=help_text, description=help_text)
    export.set_defaults(handler=guard(_heads))
    data_dir(export)
    who(export)
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
