"""The documents of the authority sync protocol (docs/sync-protocol.md), both sides.

Pure code, shared by the operator's client and the reference authority, so
that the canonical snapshot form, the delta arithmetic and the signature
checks cannot drift apart between the two ends:

- signed envelopes (Ed25519 over the exact payload bytes);
- manifest, notification and receipt documents with strict validation;
- canonical snapshots (sorted native list) and deltas, with a delta applied
  by binary search over the sorted snapshot text, so its cost follows the
  size of the change, not of the list.

Every rejection is a ``SyncError`` whose ``reason`` is one of ``REASONS``: a
bounded label for the failure metric.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from filterd.errors import FilterdError
from filterd.formats import NATIVE_HEADER, NATIVE_KINDS
from filterd.model.layout import LIST_ID
from filterd.wire.names import InvalidName, normalise

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


# ---------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    """One list entry in canonical form (see docs/sync-protocol.md)."""

    name: bytes
    kind: bytes = b"block"
    category: bytes = b"-"
    reference: bytes = b"-"

    def line(self) -> bytes:
        return b" ".join((self.name, self.kind, self.category, self.reference))


def make_entry(name: str, kind: str, category: str = "-", reference: str = "-") -> Entry:
    """An entry from what a person typed: the name is normalised, the rest checked."""
    try:
        canonical = normalise(name.strip().encode())
    except InvalidName as exc:
        raise ValueError(f"{name!r}: {exc}") from None
    raw_kind = kind.strip().lower().encode()
    if raw_kind not in NATIVE_KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(k.decode() for k in NATIVE_KINDS)}")
    raw_category = category.strip().lower().encode() or b"-"
    if not CATEGORY.fullmatch(raw_category):
        raise ValueError(f"category {category!r}: [a-z0-9][a-z0-9_-]* or '-'")
    ref = " ".join(reference.split()).encode() or b"-"
    if len(ref) > MAX_REFERENCE:
        raise ValueError("reference longer than 200 bytes (UTF-8)")
    return Entry(canonical, raw_kind, raw_category, ref)


def parse_entry(line: bytes) -> Entry:
    """Read one canonical entry line; ``SyncError('syntax')`` if it is not canonical."""
    fields = line.split(b" ", 3)
    if len(fields) != 4:
        raise SyncError("syntax", f"entry {line[:80]!r}: expected NAME KIND CATEGORY REFERENCE")
    name, kind, category, ref = fields
    _canonical_name(name)
    if (
        kind not in NATIVE_KINDS
        or not CATEGORY.fullmatch(category)
        or not ref
        or len(ref) > MAX_REFERENCE
        or b"  " in ref
        or ref != ref.strip()
    ):
        raise SyncError("syntax", f"entry {line[:80]!r} is not in canonical form")
    return Entry(name, kind, category, ref)


def _canonical_name(name: bytes) -> bytes:
    try:
        canonical = normalise(name)
    except InvalidName as exc:
        raise SyncError("syntax", f"name {name[:80]!r}: {exc}") from None
    if canonical != name:
        raise SyncError("syntax", f"name {name[:80]!r} is not in canonical form")
    return name


def serialize_snapshot(entries: Iterable[Entry]) -> bytes:
    """The canonical snapshot text: header, entries sorted by name, final LF."""
    ordered = sorted(entries)
    lines = [NATIVE_HEADER] + [entry.line() for entry in ordered]
    return b"\n".join(lines) + b"\n"


def snapshot_entries(text: bytes) -> int:
    return text.count(b"\n") - 1


_CANONICAL_LINE: Final = re.compile(
    rb"(?m)^((?=[^ \n]{1,253} )(?:[a-z0-9_-]{1,63}\.)+(?![0-9]+ )[a-z0-9_-]{1,63}) "
    rb"(?:block|block-exact|block-below|allow|allow-exact) (?:[a-z0-9][a-z0-9_-]{0,63}|-) "
    rb"[^\s](?:[^\n]{0,198}[^\s])?$"
)


def check_snapshot(text: bytes, max_entries: int) -> None:
    """Validate a whole snapshot: header, canonical entries, sorted unique names.

    Done once per downloaded snapshot, before anything is applied. The common
    case (every line canonical, ASCII names) is checked by one regular
    expression over the text and one comparison pass; a snapshot where that
    does not hold is checked line by line for a precise error."""
    if not text.startswith(NATIVE_HEADER + b"\n") or not text.endswith(b"\n"):
        raise SyncError("syntax", "snapshot does not start with the native header line")
    count = text.count(b"\n") - 1
    if count > max_entries:
        raise SyncError("size", f"snapshot has {count} entries, limit {max_entries}")
    body = text[len(NATIVE_HEADER) + 1 :]
    names: list[bytes] = _CANONICAL_LINE.findall(body)
    if len(names) != count or b"  " in body:
        names = [parse_entry(line).name for line in body.split(b"\n")[:-1]]
    if not all(map(operator.lt, names, names[1:])):
        previous = b""
        for name in names:
            if name <= previous:
                raise SyncError("syntax", f"entry {name!r} out of order or repeated")
            previous = name


@dataclass(frozen=True, slots=True)
class Delta:
    base: int
    target: int
    removes: tuple[bytes, ...]
    adds: tuple[Entry, ...]

    def serialize(self) -> bytes:
        head = DELTA_HEADER + f" from={self.base} to={self.target}".encode()
        lines = [head] + [b"- " + name for name in sorted(self.removes)]
        lines += [b"+ " + entry.line() for entry in sorted(self.adds)]
        return b"\n".join(lines) + b"\n"


def diff(base: dict[bytes, Entry], target: dict[bytes, Entry], serials: tuple[int, int]) -> Delta:
    """The delta from ``base`` to ``target`` (entries keyed by name)."""
    removes = tuple(sorted(name for name in base if name not in target))
    adds = tuple(sorted(e for name, e in target.items() if base.get(name) != e))
    return Delta(serials[0], serials[1], removes, adds)


def diff_at(base: bytes, target: bytes, names: Iterable[bytes], serials: tuple[int, int]) -> Delta:
    """The delta from snapshot ``base`` to snapshot ``target`` when only
    ``names`` can differ (e.g. the names two consecutive deltas touch): each
    is looked up by binary search, so the cost does not grow with the list."""
    removes: list[bytes] = []
    adds: list[Entry] = []
    for name in sorted(set(names)):
        before, after = entry_in(base, name), entry_in(target, name)
        if after is None and before is not None:
            removes.append(name)
        elif after is not None and after != before:
            adds.append(after)
    return Delta(serials[0], serials[1], tuple(removes), tuple(adds))


def entry_in(snapshot: bytes, name: bytes) -> Entry | None:
    """The entry for ``name`` in a canonical snapshot, or None."""
    start, end, found = _locate(snapshot, snapshot.index(b"\n") + 1, name)
    return parse_entry(snapshot[start : end - 1]) if found else None


def parse_delta(text: bytes, base: int, target: int) -> Delta:
    header, _, body = text.partition(b"\n")
    expected = DELTA_HEADER + f" from={base} to={target}".encode()
    if header != expected or (body and not body.endswith(b"\n")):
        raise SyncError("syntax", f"delta header {header[:60]!r}, expected {expected!r}")
    removes: list[bytes] = []
    adds: list[Entry] = []
    for line in body.split(b"\n")[:-1] if body else []:
        if line.startswith(b"- "):
            if adds:
                raise SyncError("syntax", "delta removals must come before additions")
            removes.append(_canonical_name(line[2:]))
        elif line.startswith(b"+ "):
            adds.append(parse_entry(line[2:]))
        else:
            raise SyncError("syntax", f"delta line {line[:60]!r}")
    if removes != sorted(set(removes)) or [a.name for a in adds] != sorted({a.name for a in adds}):
        raise SyncError("syntax", "delta lines not sorted or repeated")
    return Delta(base, target, tuple(removes), tuple(adds))


def apply_delta(snapshot: bytes, delta: Delta) -> bytes:
    """The canonical snapshot after ``delta``, without parsing the unchanged lines.

    Each change is located by binary search over the sorted snapshot text,
    so the cost is about (changes x log entries) comparisons and one copy:
    a 100-entry delta on a million-entry list takes milliseconds. A removal
    of a name that is not there means the delta is for another base: it is
    refused (the manifest hash check would refuse it anyway)."""
    header_end = snapshot.index(b"\n") + 1
    changes: dict[bytes, Entry | None] = {name: None for name in delta.removes}
    for entry in delta.adds:
        changes[entry.name] = entry
    pieces: list[bytes] = [snapshot[:header_end]]
    cursor = header_end
    for name in sorted(changes):
        start, end, found = _locate(snapshot, header_end, name)
        if start < cursor:
            raise SyncError("delta", "delta changes out of order")
        if changes[name] is None and not found:
            raise SyncError("delta", f"delta removes {name!r}, which the enforced list lacks")
        pieces.append(snapshot[cursor:start])
        replacement = changes[name]
        if replacement is not None:
            pieces.append(replacement.line() + b"\n")
        cursor = end if found else start
    pieces.append(snapshot[cursor:])
    return b"".join(pieces)


def _locate(text: bytes, low: int, name: bytes) -> tuple[int, int, bool]:
    """Where the line for ``name`` is, or would be, in sorted snapshot ``text``:
    (start, end, found); start == end when it is not there."""
    high = len(text)
    # Invariant: every line starting before ``low`` has a smaller name; every
    # line starting at or after ``high`` has a name >= ``name``.
    while low < high:
        middle = (low + high) // 2
        # ``low`` is a line start, so the line holding ``middle`` starts at or after it.
        line_start = text.rfind(b"\n", 0, middle) + 1
        line_end = text.index(b"\n", line_start) + 1
        line_name = text[line_start : text.index(b" ", line_start, line_end)]
        if line_name < name:
            low = line_end
        else:
            high = line_start
    if low < len(text):
        end = text.index(b"\n", low) + 1
        if text[low : text.index(b" ", low, end)] == name:
            return low, end, True
    return low, low, False


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publication_window(published_at: datetime, now: datetime) -> None:
    """Refuse documents from the future (beyond the allowed clock skew)."""
    if published_at - now > CLOCK_SKEW:
        raise SyncError("future", f"published_at {format_time(published_at)} is in the future")
