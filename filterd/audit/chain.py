"""The trail's format: records, the hash chain, the head, the file names.

Pure code shared by the writer, the verifier and the report, so the three
cannot disagree on what a record is. A record is one line of compact JSON,
keys in a fixed order: ``seq``, ``time``, ``event``, the event's fields, and
``prev``, the hex SHA-256 of the previous record's exact line bytes (without
its LF; 64 zeros before the first record). A record carries no hash of its
own: the next record's ``prev`` is its hash, and the last record's is kept
in the *head* file beside the trail, which is what makes cutting records
off the end detectable (docs/audit.md, "What verify detects").

Files: ``audit.jsonl`` is written; when full it is renamed
``audit.jsonl.<seq of its first record>`` and a new one begins whose first
record (a ``rotate`` event) chains to the last record of the renamed file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

GENESIS: Final = "0" * 64
"""``prev`` of the very first record of a trail."""

HEX64: Final = re.compile(r"[0-9a-f]{64}")
RESERVED: Final = ("seq", "time", "event", "prev")
EVENTS: Final = (
    "start",  # the daemon started (before anything is enforced)
    "stop",  # the daemon stopped (after the workers drained)
    "lists",  # lists installed: every source now enforced, with its version
    "reload",  # SIGHUP: configuration reloaded, or rejected
    "sync_applied",  # an authority serial verified, persisted and swapped in
    "sync_rejected",  # an authority update refused (bounded reason)
    "stats",  # counters since the daemon started (periodic, and at stop)
    "rotate",  # first record of a new file: what was rotated and pruned
    "recover",  # at start-up: a crash or a loss found, and what was done about it
    "clock_step",  # the wall clock stepped (more than CLOCK_TOLERANCE) between records
)

CLOCK_TOLERANCE: Final = 2.0
"""Seconds a record's time may lie before the previous record's without a
``clock_step`` record between them, and the largest difference between the
wall clock and the monotonic clock the writer lets pass without one."""


class FormatError(ValueError):
    """A line that is not a record."""


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-11-23T10:00:00.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset) as an aware UTC datetime."""
    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"RFC 3339 time without an offset: {text!r}")
    return moment.astimezone(UTC)


def encode_record(
    seq: int, moment: datetime, event: str, fields: Mapping[str, Any], prev: str
) -> bytes:
    """One record's line, without its LF. JSON escapes control characters, so
    a line can never contain a newline whatever the fields hold."""
    assert event in EVENTS, event
    clash = set(fields) & set(RESERVED)
    assert not clash, clash
    record = {"seq": seq, "time": format_time(moment), "event": event, **fields, "prev": prev}
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode()


def line_hash(line: bytes) -> str:
    """The hash that the next record's ``prev`` must hold."""
    return hashlib.sha256(line).hexdigest()


def decode_record(line: bytes) -> dict[str, Any]:
    """Parse a line; raises ``FormatError`` unless it has the fields every record has."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise FormatError("not a JSON record") from None
    if not isinstance(record, dict):
        raise FormatError("not a JSON object")
    seq = record.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise FormatError("seq missing or not a positive whole number")
    if record.get("event") not in EVENTS:
        raise FormatError(f"unknown event {record.get('event')!r}")
    if not isinstance(record.get("prev"), str) or not HEX64.fullmatch(record["prev"]):
        raise FormatError("prev missing or not a hex SHA-256")
    try:
        parse_time(record.get("time"))  # type: ignore[arg-type]
    except ValueError:
        raise FormatError("time missing or not an RFC 3339 time") from None
    return record


# ------------------------------------------------------------------- head


@dataclass(frozen=True, slots=True)
class Head:
    """The last record written: its seq and the hash of its line."""

    seq: int
    hash: str

    def encode(self, moment: datetime) -> bytes:
        return (
            json.dumps({"seq": self.seq, "hash": self.hash, "time": format_time(moment)}) + "\n"
        ).encode()


def head_path(trail: Path) -> Path:
    """``audit.jsonl`` -> ``audit.head``, in the same directory."""
    return trail.with_suffix(".head")


def read_head(trail: Path) -> Head | None:
    """The head beside ``trail``, None if there is none; ``FormatError`` if unreadable."""
    try:
        raw = json.loads(head_path(trail).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise FormatError(f"{head_path(trail)}: unreadable head: {exc}") from None
    seq, digest = (raw.get("seq"), raw.get("hash")) if isinstance(raw, dict) else (None, None)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise FormatError(f"{head_path(trail)}: head without a valid seq")
    if not isinstance(digest, str) or not HEX64.fullmatch(digest):
        raise FormatError(f"{head_path(trail)}: head without a valid hash")
    return Head(seq, digest)


# ------------------------------------------------------------------ files


def rotated_name(trail: Path, first_seq: int) -> Path:
    return trail.with_name(f"{trail.name}.{first_seq}")


def rotated_files(trail: Path) -> list[tuple[int, Path]]:
    """Rotated files of ``trail`` as (first seq, path), oldest first."""
    prefix = trail.name + "."
    found = []
    try:
        candidates = list(trail.parent.iterdir())
    except FileNotFoundError:
        return []
    for candidate in candidates:
        suffix = candidate.name[len(prefix) :]
        if candidate.name.startswith(prefix) and suffix.isdigit() and suffix.isascii():
            found.append((int(suffix), candidate))
    return sorted(found)


def trail_files(trail: Path) -> list[Path]:
    """Every file of the trail in chain order: rotated files, then the current one."""
    files = [path for _, path in rotated_files(trail)]
    if trail.exists():
        files.append(trail)
    return files
