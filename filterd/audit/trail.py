"""Writing the trail: append, fsync, rotate, prune, keep the head.

``TrailWriter`` is plain blocking code (the supervisor runs it on a thread
of its own, see recorder.py). There is one writer: it holds an exclusive
``flock`` on the trail's directory, so a second daemon pointed at the same
state directory fails to write (and counts it) instead of interleaving
records and breaking the chain. Each
``append`` writes one whole line with one ``write``, fsyncs it, then
replaces the head file atomically; events are rare (a list update, a
reload, an hourly statistics record), so a few fsyncs each cost nothing.

Opening is where crashes are repaired and surprises are written down,
each in a ``recover`` record (never silently), before anything else:

- a last line without its LF (a crash in the middle of a write, before the
  record was acknowledged) is cut off (``dropped_bytes``, ``lost: 0``);
- a head one record behind the file (a crash between the record's fsync
  and the head's rename, or a record appended by someone else while the
  daemon was down: the files cannot tell which) is brought forward, and the
  record names that last record in ``unvouched_seq``: ``verify`` never
  counts it as verified;
- a rotation cut short between the rename and its ``rotate`` record (no
  current file, rotated ones present) is finished: the ``rotate`` record
  comes first;
- a trail whose last record is not a ``stop`` (the previous run was killed,
  crashed, or lost power): ``unclean_stop: true``, which closes that run;
- anything else (the head names a later record than the file ends with, or
  another hash, or is missing while the file is not) means records were
  lost or altered while the daemon was down. The writer cannot undo that;
  it says what it found (``lost``: how many records, or null when it cannot
  tell) and continues the sequence numbers after the head's, so a number
  is never reused. ``filterd audit verify`` reports such a record as a
  failure: the trail admits a loss.

Time: every record's time comes from the wall clock, which can step (NTP,
an operator). When a record's time differs from what the monotonic clock
says since the previous record by more than ``CLOCK_TOLERANCE`` (or, for the
first record of a run, lies before the last record's time by more), a
``clock_step`` record (``step_seconds``, ``expected``) is written first, so
``verify`` can hold the trail to monotonic time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from filterd.audit import tail
from filterd.audit.chain import (
    CLOCK_TOLERANCE,
    GENESIS,
    FormatError,
    Head,
    encode_record,
    format_time,
    head_path,
    line_hash,
    read_head,
    rotated_files,
    rotated_name,
)
from filterd.files import fsync_directory, write_atomically

log = logging.getLogger("filterd.audit")


class TrailWriter:
    """The one writer of a trail (current file ``path`` and its rotated files)."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: BinaryIO | None = None
        self._lock: int | None = None
        self._size = 0
        self._first_seq = 0
        """Seq of the current file's first record; 0 while it is empty."""
        self._seq = 0
        self._prev = GENESIS
        self._opened = False
        """Opened once: a later ``open`` (after a failed write) is within one run."""
        self._time: datetime | None = None
        """Time of the last record written or found."""
        self._monotonic: float | None = None
        """Monotonic clock at that record (None: not written by this process)."""

    @property
    def head(self) -> Head:
        return Head(self._seq, self._prev)

    @property
    def last_time(self) -> datetime | None:
        """Time of the last record written or found."""
        return self._time

    # ------------------------------------------------------------------ open

    def open(self, moment: datetime) -> None:
        """Find where the trail ends, repair or record what is wrong, open for append."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        dropped = tail.drop_partial_line(self.path)
        last_line = tail.last_line(self.path)
        first_seq = 0
        unfinished: tuple[str, int, int] | None = None
        """A rotation cut short after the rename: (renamed file, first seq, last seq)."""
        if last_line is not None:
            first_line = tail.first_line(self.path)
            first_seq = tail.seq_of(first_line) if first_line is not None else 0
        else:
            rotated = rotated_files(self.path)
            if rotated:
                last_line = tail.last_line(rotated[-1][1])
                if last_line is not None:
                    unfinished = (rotated[-1][1].name, rotated[-1][0], tail.seq_of(last_line))
        seq, prev = 0, GENESIS
        readable = True
        if last_line is not None:
            prev = line_hash(last_line)
            seq = tail.seq_of(last_line)
            readable = seq > 0
        try:
            head = read_head(self.path)
        except FormatError:
            head = None
            readable = False
        problem, lost = _compare(head, seq, prev, last_line, readable)
        if head is not None and problem:
            seq = max(seq, head.seq)  # a seq is never reused, even after a loss
            if last_line is None:
                prev = head.hash
        problems = [problem] if problem else []
        unvouched = None
        if not problem and head is not None and last_line is not None and head.seq == seq - 1:
            unvouched = seq
            problems.append(
                f"record seq {seq} is past the head (seq {head.seq}): written just before "
                "a crash, or appended while filterd was down; nothing vouches for it"
            )
        last_event = tail.event_of(last_line) if last_line is not None else "stop"
        unclean = not self._opened and last_event not in ("stop", "recover")
        if unclean:
            problems.append(
                "the last run ended without a stop record (killed, crashed or power lost)"
            )
        if dropped:
            log.warning(
                "audit trail %s: dropped %d bytes of a partial last line", self.path, dropped
            )
            problems.append("partial last line dropped (a crash during a write)")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = self._file.tell()
        self._first_seq = first_seq if self._size else 0
        self._seq, self._prev = seq, prev
        self._time = tail.time_of(last_line) if last_line is not None else None
        self._monotonic = None
        self._opened = True
        if unfinished is not None:
            # a crash between the rename and the rotate record: finish the rotation
            name, first, last = unfinished
            fields = {"file": name, "first_seq": first, "last_seq": last, "pruned": []}
            self._append("rotate", fields, moment)
        if problems:
            self._clock_step(moment, None)
            for found in problems:
                log.error("audit trail %s: %s", self.path, found)
            fields = {
                "problem": "; ".join(problems),
                "dropped_bytes": dropped,
                "head_seq": head.seq if head is not None else None,
                "trail_seq": tail.seq_of(last_line) if last_line is not None else 0,
                "lost": lost,
                "unvouched_seq": unvouched,
                "unclean_stop": unclean,
            }
            self._append("recover", fields, moment)
        elif head is None or head.seq != seq:
            self._write_head(moment)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            message = f"{self.path.parent}: another process writes this audit trail"
            raise OSError(message) from None
        self._lock = fd

    # ---------------------------------------------------------------- append

    def append(
        self,
        event: str,
        fields: Mapping[str, Any],
        moment: datetime,
        monotonic: float | None = None,
    ) -> Head:
        """Write one record (rotating first if it would overflow ``max_bytes``).
        ``monotonic``: ``time.monotonic()`` taken with ``moment``, which lets
        a clock step within a run be recorded (see the module's header)."""
        if self._file is None:
            self.open(moment)
        self._clock_step(moment, monotonic)
        line = encode_record(self._seq + 1, moment, event, fields, self._prev)
        if self._size > 0 and self._size + len(line) + 1 > self.max_bytes:
            self._rotate(moment, monotonic)
        return self._append(event, fields, moment, monotonic)

    def _clock_step(self, moment: datetime, monotonic: float | None) -> None:
        """A ``clock_step`` record if the wall clock stepped since the last record."""
        last = self._time
        if last is None:
            return
        expected: datetime | None = None
        if monotonic is not None and self._monotonic is not None:
            expected = last + timedelta(seconds=monotonic - self._monotonic)
            step = (moment - expected).total_seconds()
        else:
            step = min(0.0, (moment - last).total_seconds())  # forward: filterd was down
        if abs(step) <= CLOCK_TOLERANCE:
            return
        log.warning("audit trail %s: the wall clock stepped %+.3f s", self.path, step)
        fields = {
            "step_seconds": round(step, 3),
            "expected": format_time(expected) if expected is not None else None,
            "last_time": format_time(last),
        }
        self._append("clock_step", fields, moment, monotonic)

    def _append(
        self,
        event: str,
        fields: Mapping[str, Any],
        moment: datetime,
        monotonic: float | None = None,
    ) -> Head:
        assert self._file is not None
        seq = self._seq + 1
        line = encode_record(seq, moment, event, fields, self._prev)
        try:
            self._file.write(line + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            self._abandon()
            raise
        self._size += len(line) + 1
        self._seq, self._prev = seq, line_hash(line)
        self._time, self._monotonic = moment, monotonic
        if not self._first_seq:
            self._first_seq = seq
        self._write_head(moment)
        return self.head

    def _abandon(self) -> None:
        """After a failed write: cut what may have been written, reopen on next use."""
        file = self._file
        self._file = None
        if file is None:
            return
        with contextlib.suppress(OSError):  # else open() drops the partial line
            file.truncate(self._size)
        with contextlib.suppress(OSError):
            file.close()

    def _write_head(self, moment: datetime) -> None:
        write_atomically(head_path(self.path), self.head.encode(moment))

    # --------------------------------------------------------------- rotate

    def _rotate(self, moment: datetime, monotonic: float | None) -> None:
        """Rename the full file, prune old ones, start the new file with a
        ``rotate`` record chained to the renamed file's last record."""
        assert self._file is not None
        first, last = self._first_seq, self._seq
        self._file.close()
        self._file = None
        target = rotated_name(self.path, first)
        os.rename(self.path, target)
        fsync_directory(self.path.parent)
        pruned = self._prune()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = 0
        self._first_seq = 0
        fsync_directory(self.path.parent)
        log.info("audit trail rotated to %s (seq %d..%d)", target.name, first, last)
        fields = {"file": target.name, "first_seq": first, "last_seq": last, "pruned": pruned}
        self._append("rotate", fields, moment, monotonic)

    def _prune(self) -> list[str]:
        if self.keep <= 0:
            return []
        rotated = rotated_files(self.path)
        pruned = []
        for _, path in rotated[: max(0, len(rotated) - self.keep)]:
            path.unlink(missing_ok=True)
            pruned.append(path.name)
        if pruned:
            fsync_directory(self.path.parent)
        return pruned


# ------------------------------------------------------------------ helpers


def _compare(
    head: Head | None, seq: int, prev: str, last_line: bytes | None, readable: bool
) -> tuple[str, int | None]:
    """What is wrong between the head and the end of the trail: (problem, lost records)."""
    if not readable:
        return "the last record or the head is unreadable", None
    if head is None:
        return ("", 0) if last_line is None else ("head file missing", None)
    if last_line is None:
        if head.seq == 0:
            return "", 0
        return f"trail files missing: the head names seq {head.seq}", head.seq
    if head.seq == seq and head.hash == prev:
        return "", 0
    if head.seq == seq - 1 and tail.prev_of(last_line) == head.hash:
        return "", 0  # a crash between the record's fsync and the head's update
    if head.seq > seq:
        return (
            f"trail ends at seq {seq} but the head names seq {head.seq}: "
            f"records {seq + 1}..{head.seq} lost (truncated)",
            head.seq - seq,
        )
    return f"trail (seq {seq}) does not match its head (seq {head.seq}, another hash)", None
