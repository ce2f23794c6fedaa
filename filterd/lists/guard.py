"""A list never shrinks by accident: the checks a parsed list file must pass.

A list file that was replaced by an HTML error page, a binary blob or one
50 MB line still parses: almost every line is invalid, and the blocks it
held would silently vanish on the next reload. So before a parsed file list
joins an index it must pass three checks, each with a per-list threshold
(``lists[]``; stricter defaults for mandatory lists):

- ``max_invalid``: at most this share of the lines that look like entries
  (accepted + invalid) may be invalid;
- ``min_entries``: at least this many accepted entries (an empty result is
  refused unless the operator sets 0);
- ``max_shrink``: at most this share of the entries of the last good version
  (the baseline, kept in the state directory) may disappear in one update.

A refused list stops the whole compile (``ListRefused``): on a reload the
running generation keeps serving, at start-up the daemon does not start.
An intended large shrink is acknowledged with ``filterd accept-shrink``,
which records the SHA-256 of the file as it is now: exactly that content is
then accepted once, whatever its size.

Authority lists are not checked here: their content is signed and hashed by
the authority (docs/sync-protocol.md), and the authority decides its size.

The checks are pure (the compiler passes counts and the baseline in); the
baseline's storage in the state directory is at the end of this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from filterd.errors import ListError
from filterd.files import read_json_object, write_atomically

REASONS: Final = ("invalid", "empty", "shrink")
"""Bounded labels of ``filterd_list_refusals_total``."""


class ListRefused(ListError):
    """A list file failed a guard; ``list_name`` and ``reason`` label the metric."""

    def __init__(self, list_name: str, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.list_name = list_name
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses the compiler's pipe as itself, not as a bare ListError.
        return (ListRefused, (self.list_name, self.reason, str(self)))


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_entries: int
    max_invalid: float
    max_shrink: float


@dataclass(frozen=True, slots=True)
class Baseline:
    """What the guard compares against: the last good size of each file list
    (by list name) and the contents acknowledged to shrink (list name ->
    SHA-256 of the file)."""

    accepted: dict[str, int]
    acknowledged: dict[str, str]


def check(
    name: str,
    thresholds: Thresholds,
    accepted: int,
    invalid: int,
    sha256: str,
    baseline: Baseline,
) -> None:
    """Raise ``ListRefused`` if the parsed list ``name`` must not be installed."""
    where = f"list {name!r}"
    kept = "; refused, the last good version keeps serving"
    looked_like = accepted + invalid
    if looked_like and invalid / looked_like > thresholds.max_invalid:
        raise ListRefused(
            name,
            "invalid",
            f"{where}: {invalid} of {looked_like} entries invalid, more than max_invalid "
            f"{thresholds.max_invalid:g} (a truncated download or an error page?){kept}",
        )
    if accepted < thresholds.min_entries:
        raise ListRefused(
            name,
            "empty",
            f"{where}: {accepted} entries accepted, fewer than min_entries "
            f"{thresholds.min_entries} ({invalid} invalid){kept}",
        )
    before = baseline.accepted.get(name)
    if (
        before
        and accepted < before * (1 - thresholds.max_shrink)
        and baseline.acknowledged.get(name) != sha256
    ):
        raise ListRefused(
            name,
            "shrink",
            f"{where}: {accepted} entries, down from {before} in the last good version "
            f"(more than max_shrink {thresholds.max_shrink:g}){kept}. If intended, run "
            f"'filterd accept-shrink -c CONFIG {name}' and reload",
        )


# ----------------------------------------------------------------- storage


def baseline_path(state_dir: Path) -> Path:
    return state_dir / "lists" / "baseline.json"


def acknowledged_path(state_dir: Path) -> Path:
    return state_dir / "lists" / "accept-shrink.json"


def _read(path: Path) -> dict[str, Any]:
    return read_json_object(path) or {}


def load_baseline(state_dir: Path) -> Baseline:
    accepted = {k: v for k, v in _read(baseline_path(state_dir)).items() if isinstance(v, int)}
    acked = {k: v for k, v in _read(acknowledged_path(state_dir)).items() if isinstance(v, str)}
    return Baseline(accepted, acked)


def save_baseline(state_dir: Path, installed: dict[str, tuple[int, str]]) -> None:
    """After an install: each file list's size becomes its baseline, and the
    acknowledgements of the contents now installed are used up."""
    directory = baseline_path(state_dir).parent
    directory.mkdir(parents=True, exist_ok=True)
    current = {name: accepted for name, (accepted, _) in installed.items()}
    if _read(baseline_path(state_dir)) != current:
        write_atomically(baseline_path(state_dir), json.dumps(current, sort_keys=True).encode())
    acked = _read(acknowledged_path(state_dir))
    remaining = {
        name: sha
        for name, sha in acked.items()
        if name not in installed or installed[name][1] != sha
    }
    if remaining != acked:
        write_atomically(acknowledged_path(state_dir), json.dumps(remaining).encode())


def acknowledge(state_dir: Path, name: str, sha256: str) -> None:
    """``filterd accept-shrink``: accept this content of list ``name`` once."""
    directory = acknowledged_path(state_dir).parent
    directory.mkdir(parents=True, exist_ok=True)
    acked = _read(acknowledged_path(state_dir))
    acked[name] = sha256
    write_atomically(acknowledged_path(state_dir), json.dumps(acked, sort_keys=True).encode())
