"""Documents signed by a node's key: receipts and reports.

A node signs what it tells the authority (receipts) and what its operator
hands over (``filterd report``) with its own Ed25519 key (filterd/audit/
anchor.py keeps it in the state directory). The signature travels inside
the JSON document, as its ``signature`` member::

    "signature": {"alg": "ed25519", "key_id": "<16 hex>",
                  "public_key": "<base64 raw key>", "value": "<base64>"}

and covers the document's *canonical form* without that member: JSON with
keys sorted, no white space, UTF-8 (``canonical``). Canonical JSON lets a
receipt travel through any JSON library (the authority parses it, stores it
as one line of ``receipts.jsonl``, exports it) and still verify.

The public key in the document says who claims to have signed it; trust
comes only from a key registered beforehand (the authority's node keys, an
operator's ``--node-key``): ``check`` takes the trusted key, never the one
in the document. Pure code.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from filterd.sync.model import SyncError, key_id, public_key_text

ALGORITHM: Final = "ed25519"


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes a signature covers: ``document`` without ``signature``, keys
    sorted, compact, UTF-8."""
    unsigned = {key: value for key, value in document.items() if key != "signature"}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign(document: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``document`` with its ``signature`` member (replacing any)."""
    public = private.public_key()
    signed = {key: value for key, value in document.items() if key != "signature"}
    signed["signature"] = {
        "alg": ALGORITHM,
        "key_id": key_id(public),
        "public_key": public_key_text(public),
        "value": base64.b64encode(private.sign(canonical(signed))).decode(),
    }
    return signed


def signature_value(document: dict[str, Any]) -> str | None:
    """The base64 signature, None if the document is not signed (or not as above)."""
    block = document.get("signature")
    value = block.get("value") if isinstance(block, dict) else None
    return value if isinstance(value, str) else None


def check(document: dict[str, Any], trusted: Ed25519PublicKey) -> None:
    """Raise ``SyncError`` (reason ``signature`` or ``key``) unless ``document``
    is signed by ``trusted``."""
    block = document.get("signature")
    if not isinstance(block, dict):
        raise SyncError("signature", "not signed")
    if block.get("alg") != ALGORITHM:
        raise SyncError("signature", f"signature algorithm {block.get('alg')!r}, not ed25519")
    if block.get("key_id") != key_id(trusted):
        raise SyncError(
            "key", f"signed with key {block.get('key_id')!r}, not the trusted {key_id(trusted)!r}"
        )
    try:
        raw = base64.b64decode(str(block.get("value")), validate=True)
        trusted.verify(raw, canonical(document))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SyncError("signature", "signature does not verify (altered after signing)") from None
