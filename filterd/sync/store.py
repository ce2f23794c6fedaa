"""What the operator keeps of each synced list, in the state directory.

For list ``ID``, in ``sync/ID/``:

- ``snapshot.list``: the newest verified canonical snapshot (the compiler
  reads it like any list file), ``manifest.json`` (the signed envelope it
  came with) and ``state.json`` (its serial, times, hash and entry count).
  This is what was *obtained*; it may be newer than what is enforced.
- ``enforced.json``: the serial, hash and times of the snapshot the workers
  serve, written only after an install committed on every worker, and
  whether its receipt is still owed. This, never ``state.json``, is what
  the node reports (metrics, receipts, audit trail).
- ``checked.json``: when the authority's manifest was last verified to be
  the one enforced (``last_success``), so that staleness alerts keep working
  across a restart.
- ``pinned-SERIAL-HASH.list``: hard links to the snapshot a compile is
  reading. A newer serial may replace ``snapshot.list`` while a compile of
  the previous one runs; the link keeps the bytes the compiler was told
  about, so the version it reports is the one it parsed.

Each file is written to a temporary name, fsynced and renamed, and the
directory fsynced, so a crash leaves either the old or the new version,
never a mix: the snapshot is written first and ``state.json`` last. A crash
between the two leaves a snapshot newer than its state, which
``load_state`` detects by its hash and refuses (the list is fetched again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from filterd.files import read_json_object, write_atomically
from filterd.model.layout import list_dir, snapshot_path

HASH_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class SyncedState:
    """One verified serial of a list: obtained (``state.json``) or enforced
    (``enforced.json``, where ``applied_at`` is when it first served)."""

    serial: int
    published_at: str
    expires_at: str
    applied_at: str
    sha256: str
    entries: int
    receipt_sent: bool = False

    def same_content(self, other: SyncedState | None) -> bool:
        return other is not None and (self.serial, self.sha256) == (other.serial, other.sha256)


def _state(raw: dict[str, Any] | None) -> SyncedState | None:
    if raw is None:
        return None
    try:
        return SyncedState(**raw)
    except TypeError:
        return None


def load_state(state_dir: Path, list_id: str) -> SyncedState | None:
    """The obtained state of a list, or ``None`` if it was never obtained (or
    its snapshot is missing or is not the one the state names)."""
    state = _state(read_json_object(list_dir(state_dir, list_id) / "state.json"))
    if state is None:
        return None
    try:
        if file_sha256(snapshot_path(state_dir, list_id)) != state.sha256:
            return None
    except OSError:
        return None
    return state


def load_enforced(state_dir: Path, list_id: str) -> SyncedState | None:
    """What was last enforced (possibly before a restart), or ``None``."""
    return _state(read_json_object(list_dir(state_dir, list_id) / "enforced.json"))


def save_enforced(state_dir: Path, list_id: str, state: SyncedState) -> None:
    directory = list_dir(state_dir, list_id)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "enforced.json", json.dumps(asdict(state)).encode())


def load_last_success(state_dir: Path, list_id: str) -> float:
    raw = read_json_object(list_dir(state_dir, list_id) / "checked.json") or {}
    value = raw.get("last_success", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def save_last_success(state_dir: Path, list_id: str, moment: float) -> None:
    directory = list_dir(state_dir, list_id)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "checked.json", json.dumps({"last_success": moment}).encode())


def load_snapshot(state_dir: Path, list_id: str) -> bytes:
    return snapshot_path(state_dir, list_id).read_bytes()


def save(
    state_dir: Path,
    list_id: str,
    snapshot: bytes | None,
    envelope: bytes | None,
    state: SyncedState,
) -> None:
    """Persist a newly obtained serial (snapshot and manifest first, state last)."""
    directory = list_dir(state_dir, list_id)
    directory.mkdir(parents=True, exist_ok=True)
    if snapshot is not None:
        write_atomically(directory / "snapshot.list", snapshot)
    if envelope is not None:
        write_atomically(directory / "manifest.json", envelope)
    write_atomically(directory / "state.json", json.dumps(asdict(state)).encode())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ pins


@dataclass(frozen=True, slots=True)
class Pin:
    """The obtained snapshot a compile must read, and what it is: the
    compiler checks the bytes it parses against ``state.sha256``."""

    list_id: str
    path: Path
    state: SyncedState


def pin(state_dir: Path, list_id: str, state: SyncedState) -> Pin:
    """Hard-link the obtained snapshot under a name of its own content.

    Call it right after ``load_state`` without awaiting in between (the
    supervisor's event loop is the only writer of ``snapshot.list``)."""
    directory = list_dir(state_dir, list_id)
    pinned = directory / f"pinned-{state.serial}-{state.sha256[:16]}.list"
    if not pinned.exists():
        temporary = directory / f".{pinned.name}.tmp"
        temporary.unlink(missing_ok=True)
        os.link(snapshot_path(state_dir, list_id), temporary)
        os.replace(temporary, pinned)
    return Pin(list_id, pinned, state)


def pin_in_place(state_dir: Path, list_id: str) -> Pin | None:
    """The obtained snapshot where it lies, for a one-off compile by a command
    (``check-config``, ``lookup``) that must not write in the state directory;
    None if the list was never obtained. A daemon replacing it meanwhile makes
    that compile fail on the hash, never report the wrong serial."""
    state = load_state(state_dir, list_id)
    return None if state is None else Pin(list_id, snapshot_path(state_dir, list_id), state)


def unpin(state_dir: Path, list_id: str) -> None:
    """Remove the list's pins once the compile that read them is over
    (compiles never overlap; an installed index does not need its pin)."""
    for candidate in list_dir(state_dir, list_id).glob("pinned-*.list"):
        with contextlib.suppress(OSError):
            candidate.unlink()
