"""Where synced lists live in the state directory, and what names them.

``config`` points a synced list's path at its snapshot and ``sync`` writes
it there; both name the place through this module so that neither imports
the other. The full layout of ``sync/ID/`` is in ``filterd.sync.store``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

LIST_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""An authority list id (docs/sync-protocol.md, "Lists")."""


def list_dir(state_dir: Path, list_id: str) -> Path:
    return state_dir / "sync" / list_id


def snapshot_path(state_dir: Path, list_id: str) -> Path:
    return list_dir(state_dir, list_id) / "snapshot.list"
