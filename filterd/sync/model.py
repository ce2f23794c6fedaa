"""The documents of the authority sync protocol (docs/sync-protocol.md), both sides.

Pure code, shared by the operator's client and the reference authority, so
that the canonical snapshot form, the delta arithmetic and the signature
checks cannot drift apart between the two ends:

- signed envelopes (Ed25519 over the exact payload bytes);
- manifest, notification and receipt documents with strict validation;
- canonical snapshots and deltas are in ``filterd.sync.snapshot``.

Every rejection is a ``SyncError`` whose ``reason`` is one of ``REASONS``: a
bounded label for the failure metric.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from filterd.errors import FilterdError
from filterd.model.layout import LIST_ID

VERSION: Final = 1
DELTA_HEADER: Final = b"#filterd-delta 1"
CATEGORY: Final = re.compile(rb"[a-z0-9][a-z0-9_-]{0,63}|-")
MAX_REFERENCE: Final = 200
CLOCK_SKEW: Final = timedelta(minutes=5)

REASONS: Final = (
    "network",  # connection refused, reset, DNS failure
    "timeout",  # no complete answer in time (slow server included)
    "http",  # unexpected HTTP status
    "json",  # a document that is not the JSON expected
    "key",  # envelope signed with a key other than the pinned one
    "signature",  # signature does not verify
    "manifest",  # manifest fields missing, wrong type or wrong list
    "rollback",  # serial lower than the one enforced (replay of an old manifest)
    "future",  # published_at in the future
    "expired",  # the manifest's expires_at has passed: not applied as fresh
    "fork",  # the authority's serial equals the node's but its content differs
    "size",  # body or entry count over the announced size or the limit
    "truncated",  # body shorter than announced, or not a complete gzip stream
    "hash",  # SHA-256 of a snapshot or delta not as announced
    "syntax",  # an entry that is not in canonical form
    "delta",  # a delta that does not apply to the enforced snapshot
    "apply",  # the new list could not be compiled or installed
)


class SyncError(FilterdError):
    """A sync step failed; ``reason`` is a metric label from ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------- time


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, second precision: ``2026-11-23T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object, field: str) -> datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise SyncError("manifest", f"{field}: expected an RFC 3339 UTC time, got {text!r}")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SyncError("manifest", f"{field}: not a time: {text!r}") from None


# ------------------------------------------------------------------- keys


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """The form operators pin in their configuration: base64 of the raw 32 bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError("not a base64 Ed25519 public key (32 bytes)") from None


def private_key_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


# --------------------------------------------------------------- envelope


def seal(document: dict[str, Any], private: Ed25519PrivateKey) -> bytes:
    """Sign ``document`` and wrap it in an envelope (JSON bytes)."""
    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(private.sign(payload)).decode(),
        "key_id": key_id(private.public_key()),
    }
    return json.dumps(envelope).encode()


def open_envelope(raw: bytes, public: Ed25519PublicKey) -> dict[str, Any]:
    """Verify an envelope against the pinned key and return its document."""
    try:
        envelope = json.loads(raw)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
        signer = envelope["key_id"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SyncError("json", "not a signed envelope") from None
    if signer != key_id(public):
        raise SyncError("key", f"signed with key {signer!r}, not the pinned {key_id(public)!r}")
    try:
        public.verify(signature, payload)
    except InvalidSignature:
        raise SyncError("signature", "signature does not verify") from None
    try:
        document = json.loads(payload)
    except ValueError:
        raise SyncError("json", "signed payload is not JSON") from None
    if not isinstance(document, dict):
        raise SyncError("json", "signed payload is not a JSON object")
    return document


# --------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class FileRef:
    path: str
    sha256: str
    size: int
    base: int = 0
    """For a delta: the serial it starts from."""


@dataclass(frozen=True, slots=True)
class Manifest:
    list_id: str
    serial: int
    published_at: datetime
    expires_at: datetime
    entries: int
    snapshot: FileRef
    deltas: tuple[FileRef, ...]

    def delta_from(self, serial: int) -> FileRef | None:
        for delta in self.deltas:
            if delta.base == serial:
                return delta
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "filterd-manifest",
            "version": VERSION,
            "list": self.list_id,
            "serial": self.serial,
            "published_at": format_time(self.published_at),
            "expires_at": format_time(self.expires_at),
            "entries": self.entries,
            "snapshot": {
                "path": self.snapshot.path,
                "sha256": self.snapshot.sha256,
                "size": self.snapshot.size,
            },
            "deltas": [
                {"from": d.base, "path": d.path, "sha256": d.sha256, "size": d.size}
                for d in self.deltas
            ],
        }


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SyncError("manifest", f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _check_type(document: dict[str, Any], expected: str) -> None:
    if document.get("type") != expected or document.get("version") != VERSION:
        raise SyncError(
            "manifest", f"expected a version {VERSION} {expected}, got {document.get('type')!r}"
        )


def _file_ref(raw: Any, name: str, base: int = 0) -> FileRef:
    if not isinstance(raw, dict):
        raise SyncError("manifest", f"{name}: expected an object")
    path = _field(raw, "path", str)
    sha = _field(raw, "sha256", str)
    size = _field(raw, "size", int)
    if not re.fullmatch(r"[0-9a-f]{64}", sha) or size < 0 or ".." in path or path.startswith("/"):
        raise SyncError("manifest", f"{name}: bad path, sha256 or size")
    return FileRef(path, sha, size, base)


def parse_manifest(document: dict[str, Any], list_id: str) -> Manifest:
    _check_type(document, "filterd-manifest")
    if document.get("list") != list_id:
        raise SyncError("manifest", f"manifest for list {document.get('list')!r}, not {list_id!r}")
    serial = _field(document, "serial", int)
    entries = _field(document, "entries", int)
    if serial < 1 or entries < 0:
        raise SyncError("manifest", "serial and entries must be positive")
    deltas = []
    for i, raw in enumerate(_field(document, "deltas", list)):
        if not isinstance(raw, dict):
            raise SyncError("manifest", f"deltas[{i}]: expected an object")
        base = _field(raw, "from", int)
        if not 0 < base < serial:
            raise SyncError("manifest", f"deltas[{i}]: from must be below the serial")
        deltas.append(_file_ref(raw, f"deltas[{i}]", base))
    return Manifest(
        list_id=list_id,
        serial=serial,
        published_at=parse_time(document.get("published_at"), "published_at"),
        expires_at=parse_time(document.get("expires_at"), "expires_at"),
        entries=entries,
        snapshot=_file_ref(document.get("snapshot"), "snapshot"),
        deltas=tuple(deltas),
    )


@dataclass(frozen=True, slots=True)
class Notify:
    list_id: str
    serial: int

    def to_json(self, sent_at: datetime) -> dict[str, Any]:
        return {
            "type": "filterd-notify",
            "version": VERSION,
            "list": self.list_id,
            "serial": self.serial,
            "sent_at": format_time(sent_at),
        }


def parse_notify(document: dict[str, Any]) -> Notify:
    _check_type(document, "filterd-notify")
    list_id = _field(document, "list", str)
    if not LIST_ID.fullmatch(list_id):
        raise SyncError("manifest", f"bad list id {list_id!r}")
    return Notify(list_id, _field(document, "serial", int))


@dataclass(frozen=True, slots=True)
class AuditHead:
    """A node's audit head when it sent a receipt: the anchor the authority keeps."""

    seq: int
    hash: str
    time: datetime

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "time": format_time(self.time)}


@dataclass(frozen=True, slots=True)
class Receipt:
    operator: str
    node: str
    list_id: str
    serial: int
    applied_at: datetime
    sha256: str
    entries: int
    software: str
    audit_head: AuditHead | None = None
    """The node's audit head (signed receipts carry it; filterd/audit/anchor.py)."""
    sent_at: datetime | None = None
    """When the node signed it: a replay later than ``CLOCK_SKEW`` is refused."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": "filterd-receipt",
            "version": VERSION,
            "operator": self.operator,
            "node": self.node,
            "list": self.list_id,
            "serial": self.serial,
            "applied_at": format_time(self.applied_at),
            "sha256": self.sha256,
            "entries": self.entries,
            "software": self.software,
        }
        if self.audit_head is not None:
            document["audit_head"] = self.audit_head.to_json()
        if self.sent_at is not None:
            document["sent_at"] = format_time(self.sent_at)
        return document


def parse_receipt(document: dict[str, Any]) -> Receipt:
    _check_type(document, "filterd-receipt")
    sha = _field(document, "sha256", str)
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise SyncError("manifest", "sha256: expected 64 hex digits")
    names = {k: _field(document, k, str) for k in ("operator", "node", "list", "software")}
    if any(not v or len(v) > 200 for v in names.values()):
        raise SyncError("manifest", "text field empty or longer than 200 characters")
    if not LIST_ID.fullmatch(names["list"]):
        raise SyncError("manifest", f"list: {names['list'][:64]!r} is not a list id")
    serial = _field(document, "serial", int)
    entries = _field(document, "entries", int)
    if serial < 1 or entries < 0:
        raise SyncError("manifest", "serial must be positive and entries not negative")
    return Receipt(
        operator=names["operator"],
        node=names["node"],
        list_id=names["list"],
        serial=serial,
        applied_at=parse_time(document.get("applied_at"), "applied_at"),
        sha256=sha,
        entries=entries,
        software=names["software"],
        audit_head=_audit_head(document.get("audit_head")),
        sent_at=parse_time(document["sent_at"], "sent_at") if "sent_at" in document else None,
    )


def _audit_head(raw: Any) -> AuditHead | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SyncError("manifest", "audit_head: expected an object")
    seq, digest = _field(raw, "seq", int), _field(raw, "hash", str)
    if seq < 0 or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise SyncError("manifest", "audit_head: seq not a whole number or hash not 64 hex digits")
    return AuditHead(seq, digest, parse_time(raw.get("time"), "audit_head.time"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publication_window(published_at: datetime, now: datetime) -> None:
    """Refuse documents from the future (beyond the allowed clock skew)."""
    if published_at - now > CLOCK_SKEW:
        raise SyncError("future", f"published_at {format_time(published_at)} is in the future")
