"""What the operator keeps of each synced list, in the state directory.

For list ``ID``: ``sync/ID/snapshot.list`` (the canonical snapshot being
enforced, which the compiler reads like any list file), ``manifest.json``
(the signed envelope it came with) and ``state.json`` (serial, times, hash,
whether the receipt is still owed). Each file is written to a temporary name,
fsynced and renamed, and the directory fsynced, so a crash leaves either the
old or the new version, never a mix: the snapshot is written first and
``state.json`` last, so the state never names a snapshot that is not there.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from filterd.files import write_atomically

LIST_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""An authority list id (docs/sync-protocol.md, "Lists")."""


def list_dir(state_dir: Path, list_id: str) -> Path:
    return state_dir / "sync" / list_id


def snapshot_path(state_dir: Path, list_id: str) -> Path:
    return list_dir(state_dir, list_id) / "snapshot.list"


@dataclass(frozen=True, slots=True)
class SyncedState:
    serial: int
    published_at: str
    expires_at: str
    applied_at: str
    sha256: str
    entries: int
    receipt_sent: bool = False


def load_state(state_dir: Path, list_id: str) -> SyncedState | None:
    """The persisted state of a list, or ``None`` if it was never obtained."""
    path = list_dir(state_dir, list_id) / "state.json"
    if not path.exists() or not snapshot_path(state_dir, list_id).exists():
        return None
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return SyncedState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def load_snapshot(state_dir: Path, list_id: str) -> bytes:
    return snapshot_path(state_dir, list_id).read_bytes()


def save(
    state_dir: Path,
    list_id: str,
    snapshot: bytes | None,
    envelope: bytes | None,
    state: SyncedState,
) -> None:
    """Persist a new serial (snapshot and manifest first, state last)."""
    directory = list_dir(state_dir, list_id)
    directory.mkdir(parents=True, exist_ok=True)
    if snapshot is not None:
        write_atomically(directory / "snapshot.list", snapshot)
    if envelope is not None:
        write_atomically(directory / "manifest.json", envelope)
    write_atomically(directory / "state.json", json.dumps(asdict(state)).encode())
