"""The authority's data directory: the one owner of every file the authority keeps.

Layout (``DATA`` is the directory given with ``--dir``)::

    authority.key              Ed25519 private key, PEM, mode 0600
    authority.pub              base64 raw public key: the text operators pin
    operators.json             {id: {"token_sha256": hex, "notify": [url, ...]}}
    receipts.jsonl             every accepted receipt, append-only
    lists/ID/staging.list      canonical snapshot being edited
    lists/ID/snapshots/S.gz    gzip of the canonical snapshot of serial S
    lists/ID/deltas/F-T.gz     gzip of the delta from serial F to serial T
    lists/ID/manifest.json     sealed envelope of the latest manifest (what GET serves)
    lists/ID/history.jsonl     one line per publication (serial, time, sha256, entries)

Why it is built this way:

- Every whole-file write goes to a temporary file in the same directory,
  is fsynced and renamed over the old one, and the directory is fsynced: a
  crash leaves the old or the new version, and a reader (the server, which
  is another process) never sees a half-written file.
- A publication writes the snapshot and the deltas first, the history line
  next and the manifest last, then prunes: a manifest never names a file
  that is not there yet, and an operator holding the previous manifest can
  still fetch what it names.
- Commands that change the directory hold an exclusive ``flock`` on
  ``DATA/.lock``, so two publishers (or an edit during a publish) cannot
  interleave. The server takes no lock: it only reads files replaced by
  rename, and it is the only writer of ``receipts.jsonl``.
- Tokens are stored only as SHA-256 and compared with ``hmac.compare_digest``
  against every operator, so a leaked ``operators.json`` grants nothing and
  the comparison time does not tell which operator nearly matched.
- The server needs neither the private key nor write access to anything but
  ``receipts.jsonl``: the key is read only by publishing and notifying.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from filterd.authority.operators import OperatorRegistry
from filterd.authority.records import SERVED_MODE, AuthorityError, append_line, json_lines
from filterd.errors import FilterdError
from filterd.files import write_atomically
from filterd.formats import NATIVE_HEADER
from filterd.model.layout import LIST_ID
from filterd.sync.model import (
    FileRef,
    Manifest,
    Receipt,
    SyncError,
    format_time,
    load_private_key,
    load_public_key,
    open_envelope,
    parse_manifest,
    parse_receipt,
    parse_time,
    private_key_pem,
    public_key_text,
    seal,
    sha256_hex,
    utc_now,
)
from filterd.sync.snapshot import (
    Delta,
    Entry,
    apply_delta,
    check_snapshot,
    diff,
    diff_at,
    parse_delta,
    serialize_snapshot,
    snapshot_entries,
)
from filterd.wire.names import InvalidName, normalise_text

MAX_ENTRIES: Final = 100_000_000
"""Sanity bound for a staging list (the operators' own limit is ``sync.max_entries``)."""
MAX_KEEP: Final = 100
EMPTY_SNAPSHOT: Final = NATIVE_HEADER + b"\n"
_SNAPSHOT_FILE: Final = re.compile(r"([1-9][0-9]*)\.gz")
_DELTA_FILE: Final = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)\.gz")


# ------------------------------------------------------------ documents


@dataclass(frozen=True, slots=True)
class Publication:
    """One line of a list's ``history.jsonl``."""

    serial: int
    published_at: datetime
    sha256: str
    entries: int


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """One line of ``receipts.jsonl``: the receipt and who delivered it, when."""

    receipt: Receipt
    received_at: datetime
    authenticated_operator: str
    signed: bool = False
    """Signed by the node's registered key (authority/receipts.py)."""


@dataclass(frozen=True, slots=True)
class Published:
    """The outcome of ``Store.publish``."""

    manifest: Manifest
    unchanged: bool
    """The snapshot equals the previous serial's (a new serial all the same)."""
    pruned: int
    """Snapshot and delta files removed because they fell out of ``keep``."""


# ---------------------------------------------------------------- store


class Store:
    """All reads and writes of one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.operators = OperatorRegistry(root / "operators.json", self.locked)

    # ------------------------------------------------------------ paths

    @property
    def key_path(self) -> Path:
        return self.root / "authority.key"

    @property
    def public_path(self) -> Path:
        return self.root / "authority.pub"

    @property
    def receipts_path(self) -> Path:
        return self.root / "receipts.jsonl"

    def list_dir(self, list_id: str) -> Path:
        if not LIST_ID.fullmatch(list_id):
            raise AuthorityError(f"list id {list_id!r}: expected [a-z0-9][a-z0-9-]{{0,62}}")
        return self.root / "lists" / list_id

    def staging_path(self, list_id: str) -> Path:
        return self.list_dir(list_id) / "staging.list"

    def manifest_path(self, list_id: str) -> Path:
        return self.list_dir(list_id) / "manifest.json"

    def history_path(self, list_id: str) -> Path:
        return self.list_dir(list_id) / "history.jsonl"

    def snapshot_path(self, list_id: str, serial: int) -> Path:
        return self.list_dir(list_id) / "snapshots" / f"{serial}.gz"

    def delta_path(self, list_id: str, base: int, target: int) -> Path:
        return self.list_dir(list_id) / "deltas" / f"{base}-{target}.gz"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock over the directory for one changing command."""
        self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ------------------------------------------------------------- keys

    def generate_key(self, *, force: bool = False) -> Ed25519PublicKey:
        """A new signing key. Refused over an existing one unless ``force``:
        every operator pins the public key, so replacing it stops their sync."""
        with self.locked():
            if self.key_path.exists() and not force:
                raise AuthorityError(
                    f"{self.key_path} exists; operators pin its public key "
                    "(use --force to replace it anyway)"
                )
            private = Ed25519PrivateKey.generate()
            write_atomically(self.key_path, private_key_pem(private))
            public = private.public_key()
            write_atomically(self.public_path, public_key_text(public).encode() + b"\n", mode=0o644)
            return public

    def private_key(self) -> Ed25519PrivateKey:
        try:
            pem = self.key_path.read_bytes()
        except FileNotFoundError:
            raise AuthorityError(f"no signing key {self.key_path}: run keygen first") from None
        try:
            return load_private_key(pem)
        except ValueError as exc:
            raise FilterdError(f"{self.key_path}: {exc}") from None

    def public_key(self) -> Ed25519PublicKey:
        try:
            text = self.public_path.read_text()
        except FileNotFoundError:
            raise AuthorityError(f"no public key {self.public_path}: run keygen first") from None
        try:
            return load_public_key(text)
        except ValueError as exc:
            raise FilterdError(f"{self.public_path}: {exc}") from None

    # ------------------------------------------------------------ lists

    def list_ids(self) -> list[str]:
        lists = self.root / "lists"
        if not lists.is_dir():
            return []
        return sorted(p.name for p in lists.iterdir() if LIST_ID.fullmatch(p.name) and p.is_dir())

    def init_list(self, list_id: str) -> None:
        with self.locked():
            directory = self.list_dir(list_id)
            if directory.exists():
                raise AuthorityError(f"list {list_id!r} exists")
            for sub in ("snapshots", "deltas"):
                (directory / sub).mkdir(mode=0o750, parents=True)
            write_atomically(self.staging_path(list_id), EMPTY_SNAPSHOT)

    def staging(self, list_id: str) -> bytes:
        try:
            return self.staging_path(list_id).read_bytes()
        except FileNotFoundError:
            raise AuthorityError(f"no list {list_id!r} (create it with init)") from None

    def add_entry(self, list_id: str, entry: Entry) -> bool:
        """Add or replace the entry for ``entry.name``; True if it replaced one."""
        with self.locked():
            staging = self.staging(list_id)
            replaced = _contains(staging, entry.name)
            changed = apply_delta(staging, Delta(0, 0, (), (entry,)))
            write_atomically(self.staging_path(list_id), changed)
        return replaced

    def remove_entry(self, list_id: str, name: str) -> bytes:
        """Remove the entry for ``name``; returns the canonical name removed."""
        try:
            canonical = normalise_text(name)
        except InvalidName as exc:
            raise AuthorityError(f"{name!r}: {exc}") from None
        with self.locked():
            staging = self.staging(list_id)
            if not _contains(staging, canonical):
                raise AuthorityError(f"{canonical.decode()} is not in list {list_id!r}")
            changed = apply_delta(staging, Delta(0, 0, (canonical,), ()))
            write_atomically(self.staging_path(list_id), changed)
        return canonical

    def replace_staging(self, list_id: str, entries: Iterable[Entry]) -> int:
        """Make ``entries`` the whole staging list; returns how many it holds."""
        text = serialize_snapshot(entries)
        with self.locked():
            self.staging(list_id)  # the list must exist
            write_atomically(self.staging_path(list_id), text)
        return snapshot_entries(text)

    # ------------------------------------------------------ publication

    def history(self, list_id: str) -> list[Publication]:
        out = []
        for record in json_lines(self.history_path(list_id)):
            with contextlib.suppress(KeyError, TypeError, ValueError, SyncError):
                out.append(
                    Publication(
                        int(record["serial"]),
                        parse_time(record["published_at"], "published_at"),
                        str(record["sha256"]),
                        int(record["entries"]),
                    )
                )
        return out

    def manifest(self, list_id: str) -> tuple[bytes, Manifest] | None:
        """The served envelope and its manifest, checked against our public key:
        ``SyncError`` for a manifest signed by a key since replaced (``status``
        and ``serve`` report it; the server itself serves the bytes as they are)."""
        try:
            envelope = self.manifest_path(list_id).read_bytes()
        except FileNotFoundError:
            return None
        return envelope, parse_manifest(open_envelope(envelope, self.public_key()), list_id)

    def publish(
        self, list_id: str, *, keep: int = 10, expires_days: int = 7, now: datetime | None = None
    ) -> Published:
        """Publish the staging list as the next serial (see the module docstring)."""
        if not 0 <= keep <= MAX_KEEP:
            raise AuthorityError(f"keep {keep}: expected 0 to {MAX_KEEP}")
        if expires_days < 1:
            raise AuthorityError(f"expires-days {expires_days}: expected at least 1")
        private = self.private_key()
        with self.locked():
            snapshot = self.staging(list_id)
            try:
                check_snapshot(snapshot, MAX_ENTRIES)
            except SyncError as exc:
                raise AuthorityError(
                    f"staging list of {list_id!r} is not canonical: {exc}"
                ) from None
            history = self.history(list_id)
            serial = max([p.serial for p in history] + [self._served_serial(list_id)]) + 1
            published_at = (now or utc_now()).replace(microsecond=0)
            digest = sha256_hex(snapshot)

            write_atomically(self.snapshot_path(list_id, serial), _gzip(snapshot), SERVED_MODE)
            recent = {p.serial for p in history[max(0, len(history) - keep) :]}
            deltas = []
            latest: Delta | None = None
            for base in sorted(recent, reverse=True):
                written = self._write_delta(list_id, base, serial, snapshot, latest)
                if written is not None:
                    deltas.append(written[0])
                    latest = latest or written[1]
            entries = snapshot_entries(snapshot)
            manifest = Manifest(
                list_id=list_id,
                serial=serial,
                published_at=published_at,
                expires_at=published_at + timedelta(days=expires_days),
                entries=entries,
                snapshot=FileRef(f"lists/{list_id}/snapshots/{serial}.gz", digest, len(snapshot)),
                deltas=tuple(deltas),
            )
            append_line(
                self.history_path(list_id),
                {
                    "serial": serial,
                    "published_at": format_time(published_at),
                    "sha256": digest,
                    "entries": entries,
                },
            )
            sealed = seal(manifest.to_json(), private)
            write_atomically(self.manifest_path(list_id), sealed, SERVED_MODE)
            pruned = self._prune(list_id, recent | {serial})
        unchanged = bool(history) and history[-1].sha256 == digest
        return Published(manifest, unchanged, pruned)

    def _served_serial(self, list_id: str) -> int:
        """The serial of the manifest being served, 0 if none can be read: a
        history line lost to a crash must not make a serial go backwards. A
        manifest signed by a replaced key is unreadable here, which is fine:
        publishing again is how it gets re-signed."""
        with contextlib.suppress(SyncError):
            served = self.manifest(list_id)
            if served is not None:
                return served[1].serial
        return 0

    def _write_delta(
        self, list_id: str, base: int, target: int, snapshot: bytes, latest: Delta | None
    ) -> tuple[FileRef, Delta] | None:
        """Write the delta from ``base`` (if its snapshot is still kept) to ``snapshot``.

        The first (newest) base is compared line by line: only the lines that
        differ become entries, since on a million-entry list the set
        difference is what costs. An older base whose delta to that newest
        base (``latest.base``) is still stored is rebased instead: only the
        names the two deltas touch can differ, and they are looked up, so
        each further kept serial costs a decompression, not a comparison of
        the whole list. Every result is checked by applying it, so a
        published delta always applies."""
        try:
            old = gzip.decompress(self.snapshot_path(list_id, base).read_bytes())
        except FileNotFoundError:
            return None
        earlier = self._stored_delta(list_id, base, latest.base) if latest else None
        if latest is not None and earlier is not None:
            touched = (*earlier.removes, *(e.name for e in earlier.adds))
            touched += (*latest.removes, *(e.name for e in latest.adds))
            delta = diff_at(old, snapshot, touched, (base, target))
        else:
            old_lines = set(old.split(b"\n")[1:-1])
            new_lines = set(snapshot.split(b"\n")[1:-1])
            delta = diff(
                _by_name(old_lines - new_lines), _by_name(new_lines - old_lines), (base, target)
            )
        if apply_delta(old, delta) != snapshot:
            raise FilterdError(f"delta {base}-{target} of {list_id!r} does not reproduce the list")
        text = delta.serialize()
        write_atomically(self.delta_path(list_id, base, target), _gzip(text), SERVED_MODE)
        path = f"lists/{list_id}/deltas/{base}-{target}.gz"
        return FileRef(path, sha256_hex(text), len(text), base), delta

    def _stored_delta(self, list_id: str, base: int, target: int) -> Delta | None:
        try:
            text = gzip.decompress(self.delta_path(list_id, base, target).read_bytes())
            return parse_delta(text, base, target)
        except (OSError, EOFError, zlib.error, SyncError):
            return None  # not kept, or damaged: compared line by line instead

    def _prune(self, list_id: str, kept: set[int]) -> int:
        """Remove snapshots outside ``kept``, deltas not between two kept serials,
        and temporary files a crashed command left (none is live: we hold the lock)."""
        removed = 0
        for sub, pattern in (("snapshots", _SNAPSHOT_FILE), ("deltas", _DELTA_FILE)):
            for path in (self.list_dir(list_id) / sub).iterdir():
                match = pattern.fullmatch(path.name)
                stale = match is None or not {int(s) for s in match.groups()} <= kept
                if stale:
                    path.unlink()
                    removed += match is not None
        return removed

    # ---------------------------------------------------------- receipts

    def append_receipt(
        self,
        receipt: Receipt,
        operator_id: str,
        received_at: datetime,
        signature: dict[str, Any] | None = None,
    ) -> None:
        record = receipt.to_json()
        if signature is not None:
            record["signature"] = signature
        record["received_at"] = format_time(received_at)
        record["authenticated_operator"] = operator_id
        append_line(self.receipts_path, record)

    def receipts(self) -> Iterator[ReceiptRecord]:
        """Every readable receipt, oldest first."""
        for record in json_lines(self.receipts_path):
            with contextlib.suppress(KeyError, TypeError, SyncError):
                yield ReceiptRecord(
                    parse_receipt(record),
                    parse_time(record["received_at"], "received_at"),
                    str(record["authenticated_operator"]),
                    isinstance(record.get("signature"), dict),
                )


def _contains(snapshot: bytes, name: bytes) -> bool:
    return b"\n" + name + b" " in snapshot


def _by_name(lines: Iterable[bytes]) -> dict[bytes, Entry]:
    """Lines of a snapshot this store wrote (checked when published) as entries."""
    entries = {}
    for line in lines:
        name, kind, category, reference = line.split(b" ", 3)
        entries[name] = Entry(name, kind, category, reference)
    return entries


def _gzip(data: bytes) -> bytes:
    """Reproducible gzip (no timestamp): the same list gives the same file."""
    return gzip.compress(data, compresslevel=6, mtime=0)
