"""Which receipts the authority accepts: signed by the node's registered key, once.

A receipt is what a node says it enforces; the compliance view and the
anchors (the audit heads receipts carry) rest on it. The bearer token says
which *operator* sent it; the node's signature says which *node* did, and
that the node's own key, not just anyone holding the operator's token,
vouches for the serial, the hash and the audit head in it:

- a node whose key is registered (``filterd authority node add``) must sign
  every receipt with that key: unsigned, signed by another key (another
  node's), or altered after signing is refused (``403``);
- a signed receipt from a node with no registered key is refused (``403``):
  the authority cannot tell whose key it is;
- an unsigned receipt from a node with no registered key is accepted and
  shown as unsigned in the compliance view, unless ``serve
  --require-signed-receipts`` (then ``403``): the way to upgrade a fleet
  node by node, and the setting to use once it is done;
- a replayed receipt (a signature already received) and a receipt signed
  more than ``MAX_AGE`` before or after it arrives are refused (``409``): a
  node's old receipt cannot be sent again to make it look alive.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from filterd.authority.nodes import NodeKeys
from filterd.authority.records import json_lines
from filterd.authority.store import Store
from filterd.sync.model import Receipt, SyncError, format_time
from filterd.sync.signed import check, signature_value

MAX_AGE: Final = timedelta(minutes=10)
"""How far ``sent_at`` may lie from the time of arrival (clock skew and retries)."""


class ReceiptRefused(Exception):
    """A receipt not accepted: the HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReceiptCheck:
    def __init__(self, store: Store, *, require_signed: bool = False) -> None:
        self.nodes = NodeKeys(store)
        self.require_signed = require_signed
        self._seen = {
            value
            for record in json_lines(store.receipts_path)
            if (value := signature_value(record)) is not None
        }

    def check(
        self, document: dict[str, Any], receipt: Receipt, operator: str, now: datetime
    ) -> dict[str, Any] | None:
        """The signature block to store with the receipt (None: unsigned and
        allowed); ``ReceiptRefused`` otherwise."""
        key = self.nodes.key(operator, receipt.node)
        value = signature_value(document)
        node = f"node {receipt.node!r} of {operator!r}"
        if value is None:
            if key is not None:
                raise ReceiptRefused(403, f"unsigned receipt: {node} has a registered key")
            if self.require_signed:
                raise ReceiptRefused(403, f"unsigned receipt: {node} has no registered key")
            return None
        if key is None:
            # Nothing to check it against: as good as unsigned, no better. A
            # node signs from its first start, before its key is registered.
            if self.require_signed:
                raise ReceiptRefused(403, f"signed receipt, but {node} has no registered key")
            return None
        try:
            check(document, key)
        except SyncError as exc:
            raise ReceiptRefused(403, f"receipt not signed by {node}'s key: {exc}") from None
        if receipt.sent_at is None:
            raise ReceiptRefused(422, "signed receipt without sent_at")
        if abs(now - receipt.sent_at) > MAX_AGE:
            raise ReceiptRefused(
                409,
                f"stale receipt: signed at {format_time(receipt.sent_at)}, received at "
                f"{format_time(now)} (a replay, or a clock {MAX_AGE} off)",
            )
        if value in self._seen:
            raise ReceiptRefused(409, "replayed receipt: this signature was received before")
        block = document["signature"]
        assert isinstance(block, dict)
        return block

    def accepted(self, signature: dict[str, Any] | None) -> None:
        """Remember a stored receipt's signature (after the write succeeded)."""
        if signature is not None:
            self._seen.add(str(signature["value"]))
