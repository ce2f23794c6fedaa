"""The node's identity and the anchors it sends: its key, signed receipts.

Each node has its own Ed25519 key, kept in the state directory:

    <state_dir>/node.key     private key, PEM (PKCS#8), mode 0600
    <state_dir>/node.pub     base64 of the raw public key: what the authority
                             registers (``filterd authority node add``)

It is created the first time it is needed (the daemon's first start, the
first receipt, or ``filterd node-key show``) and replaced only by
``filterd node-key rotate``, which keeps the old key as
``node.key.<UTC time>`` so reports signed with it can still be traced.

Every receipt the node sends carries its current audit head (seq, hash and
time of the last record written) and is signed with the node key
(``signed_receipt``): the authority, which the operator does not control,
keeps the heads it receives, and those heads are the anchors ``filterd audit
verify --anchors`` checks the trail against (docs/audit.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from filterd.errors import FilterdError
from filterd.files import write_atomically
from filterd.sync.model import (
    AuditHead,
    Receipt,
    load_private_key,
    private_key_pem,
    public_key_text,
)
from filterd.sync.signed import sign

KEY_FILE: Final = "node.key"
PUBLIC_FILE: Final = "node.pub"


def key_path(state_dir: Path) -> Path:
    return state_dir / KEY_FILE


def public_path(state_dir: Path) -> Path:
    return state_dir / PUBLIC_FILE


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One creator at a time (a daemon and a command started together)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / ".node-key.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_node_key(state_dir: Path, *, create: bool = True) -> Ed25519PrivateKey | None:
    """The node's key; created (0600) when missing and ``create``, else None."""
    path = key_path(state_dir)
    if not path.exists():
        if not create:
            return None
        with _locked(state_dir):
            if not path.exists():
                _write(state_dir, Ed25519PrivateKey.generate())
    try:
        return load_private_key(path.read_bytes())
    except ValueError as exc:
        raise FilterdError(f"{path}: {exc}") from None


def rotate_node_key(state_dir: Path, now: datetime | None = None) -> tuple[str | None, str]:
    """A new node key; the old one is kept as ``node.key.<time>``. Returns the
    old and the new public key (base64): the authority must register the new
    one before the next receipt."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    with _locked(state_dir):
        path = key_path(state_dir)
        old = None
        if path.exists():
            old = public_key_text(load_private_key(path.read_bytes()).public_key())
            os.replace(path, path.with_name(f"{KEY_FILE}.{moment}"))
        private = Ed25519PrivateKey.generate()
        _write(state_dir, private)
    return old, public_key_text(private.public_key())


def _write(state_dir: Path, private: Ed25519PrivateKey) -> None:
    write_atomically(key_path(state_dir), private_key_pem(private))
    text = public_key_text(private.public_key()) + "\n"
    write_atomically(public_path(state_dir), text.encode(), mode=0o644)


def signed_receipt(
    state_dir: Path, head: AuditHead | None, receipt: Receipt, now: datetime | None = None
) -> dict[str, Any]:
    """The receipt document to POST: ``receipt`` with the node's audit
    ``head`` (None: the trail is disabled or not written yet) and the time
    of signing, signed with the node key (created if missing)."""
    private = load_node_key(state_dir)
    assert private is not None
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    document = receipt.to_json()
    document.pop("audit_head", None)
    if head is not None:
        document["audit_head"] = head.to_json()
    document["sent_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return sign(document, private)
