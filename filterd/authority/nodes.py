"""Node keys registered with the authority, and the audit heads nodes sent.

    DATA/nodes.json   {"OPERATOR/NODE": {"public_key": base64, "added_at": time}}

A node's public key (``<state_dir>/node.pub`` on the node) is registered
like an operator's token (``filterd authority node add``): from then on
every receipt from that node must be signed by that key, or it is refused.
``nodes.json`` is replaced atomically under the data directory's lock, and
re-read by the server when it changes, as ``operators.json`` is.

The heads: every signed receipt carries the node's audit head (seq, hash,
time); ``heads`` exports them from ``receipts.jsonl`` for one node, in the
order received, as the anchors file ``filterd audit verify --anchors``
reads (docs/authority.md, docs/audit.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from filterd.authority.operators import OPERATOR_ID
from filterd.authority.records import AuthorityError, ParsedFile, json_lines
from filterd.authority.store import Store
from filterd.errors import FilterdError
from filterd.files import write_atomically
from filterd.sync.model import format_time, load_public_key, public_key_text

NODES_FILE: Final = "nodes.json"
NODE_ID_MAX: Final = 200


class NodeKeys:
    """The registered node keys of one data directory."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.root / NODES_FILE
        self._file: ParsedFile[dict[str, dict[str, Any]]] = ParsedFile(self.path, self._parse, dict)

    def all(self) -> dict[str, dict[str, Any]]:
        """``{"operator/node": {"public_key": ..., "added_at": ...}}``, re-read
        only when the file was replaced."""
        return self._file.get()

    def _parse(self, data: bytes) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("public_key"), str) for v in raw.values()
            ):
                raise ValueError("not an object of {public_key: ...}")
        except ValueError as exc:
            raise FilterdError(f"{self.path}: damaged: {exc}") from None
        return raw

    def key(self, operator: str, node: str) -> Ed25519PublicKey | None:
        entry = self.all().get(f"{operator}/{node}")
        return load_public_key(entry["public_key"]) if entry is not None else None

    def add(self, operator: str, node: str, public_key: str, now: datetime) -> str:
        """Register (or replace) a node's key; returns its normalised text."""
        try:
            text = public_key_text(load_public_key(public_key))
        except ValueError as exc:
            raise AuthorityError(f"--key: {exc}") from None
        if not node or len(node) > NODE_ID_MAX or "/" in node or not node.isprintable():
            raise AuthorityError(f"node {node[:64]!r}: 1-{NODE_ID_MAX} printable characters, no /")
        with self.store.locked():
            if operator not in self.store.operators.all():
                raise AuthorityError(f"no operator {operator!r} (operator add first)")
            nodes = dict(self.all())
            nodes[f"{operator}/{node}"] = {"public_key": text, "added_at": format_time(now)}
            self._write(nodes)
        return text

    def remove(self, operator: str, node: str) -> None:
        with self.store.locked():
            nodes = dict(self.all())
            if nodes.pop(f"{operator}/{node}", None) is None:
                raise AuthorityError(f"no key registered for node {node!r} of {operator!r}")
            self._write(nodes)

    def _write(self, nodes: dict[str, dict[str, Any]]) -> None:
        text = json.dumps(nodes, indent=2, sort_keys=True) + "\n"
        write_atomically(self.path, text.encode(), mode=0o640)


def heads(store: Store, operator: str, node: str) -> dict[str, Any]:
    """The anchors of one node: the audit head of each of its signed receipts
    the authority accepted, in the order received."""
    if not OPERATOR_ID.fullmatch(operator):
        raise AuthorityError(f"operator id {operator!r}: not an operator id")
    rows = []
    for record in json_lines(store.receipts_path):
        head = record.get("audit_head")
        if (
            record.get("authenticated_operator") != operator
            or record.get("node") != node
            or not isinstance(head, dict)
            or not isinstance(record.get("signature"), dict)
        ):
            continue
        rows.append(
            {
                "seq": head.get("seq"),
                "hash": head.get("hash"),
                "time": head.get("time"),
                "received_at": record.get("received_at"),
                "list": record.get("list"),
                "serial": record.get("serial"),
            }
        )
    key = NodeKeys(store).all().get(f"{operator}/{node}")
    return {
        "type": "filterd-anchors",
        "version": 1,
        "operator": operator,
        "node": node,
        "public_key": key["public_key"] if key else None,
        "heads": rows,
    }
