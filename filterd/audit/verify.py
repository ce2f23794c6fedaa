"""Checking a trail: every link of the chain, the sequence, the head.

``verify`` walks the rotated files oldest first, then the current file, and
stops judging at the first broken record (later records are still decoded
and passed to ``on_record``, so a report can say what it was built from).
What a chain of ``prev`` hashes plus an external head detects, and what it
cannot, is spelled out in docs/audit.md; in short:

- an altered record: the next record's ``prev`` no longer matches (the last
  record: the head's hash no longer matches);
- a removed, duplicated, inserted or reordered record: ``seq`` does not
  increase by one, or ``prev`` does not match;
- records cut off the end: the head names a later seq than the trail ends with;
- records cut off the beginning: the first record is not seq 1 with 64 zeros
  in ``prev``, unless it opens a file whose predecessor a later ``rotate``
  record says was pruned (``audit.keep``);
- a rotated file removed, renamed or emptied: the link into the next file,
  or its name against its first seq, does not match;
- a loss found by the daemon at start-up: its ``recover`` record.

Someone able to rewrite the whole trail *and* the head from the altered
record onwards is not detected by these files alone: anchors taken earlier
(``--expect SEQ:HASH``, e.g. from a report already sent to the authority)
catch that, back to the anchor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filterd.audit.chain import (
    GENESIS,
    FormatError,
    Head,
    decode_record,
    head_path,
    line_hash,
    read_head,
    trail_files,
)

OnRecord = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class Result:
    """What ``verify`` found. ``problem`` is one line naming file:line and why."""

    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    head: str = GENESIS
    problem: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problem

    def summary(self) -> str:
        if self.problem:
            return self.problem
        span = f"seq {self.first_seq}..{self.last_seq}"
        return f"ok: {self.records} records, {span}, head {self.head}"


@dataclass(slots=True)
class _Position:
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class _Walk:
    """The state of one pass over the trail."""

    def __init__(self, expect: Mapping[int, str], on_record: OnRecord | None) -> None:
        self.result = Result()
        self.expect = dict(expect)
        self.on_record = on_record
        self.last: _Position | None = None
        self.last_prev = ""
        self.pruned: set[str] = set()
        self.starts_after: tuple[_Position, str] | None = None

    def fail(self, where: _Position | Path | str, message: str) -> None:
        if not self.result.problem:
            self.result.problem = f"{where}: {message}"

    def feed(self, where: _Position, raw: bytes, first_in_file: int | None) -> None:
        """One line (with its LF, if it had one). ``first_in_file``: the seq the
        file's name promises for its first record (None for the current file)."""
        line = raw[:-1] if raw.endswith(b"\n") else raw
        try:
            record = decode_record(line)
        except FormatError as exc:
            self.fail(where, f"{exc} (altered, or not written by filterd)")
            return
        if self.on_record is not None:
            self.on_record(record)
        if self.result.problem:
            pass  # judged up to the first problem; counted to the end
        elif not raw.endswith(b"\n"):
            self.fail(where, "incomplete last line (a crash during a write, or a cut)")
        else:
            self._check(where, record, line, first_in_file)
        self._count(where, record, line)

    def _check(
        self, where: _Position, record: dict[str, Any], line: bytes, first_in_file: int | None
    ) -> None:
        seq: int = record["seq"]
        result = self.result
        if where.line == 1 and first_in_file is not None and first_in_file != seq:
            self.fail(where, f"file named for seq {first_in_file} starts with seq {seq} (renamed?)")
        elif record["event"] == "recover" and record.get("lost") != 0:
            self.fail(where, f"seq {seq}: at start-up the daemon found: {record.get('problem')}")
        elif self.last is None:
            self._check_start(where, record)
        elif seq > result.last_seq + 1:
            gap = _span(result.last_seq + 1, seq - 1)
            self.fail(where, f"seq {seq} follows seq {result.last_seq}: {gap} removed or moved")
        elif seq <= result.last_seq:
            reason = "records reordered, or a record inserted"
            self.fail(where, f"seq {seq} follows seq {result.last_seq}: {reason}")
        elif record["prev"] != result.head:
            reason = f"its hash is not the prev of the next record ({where})"
            self.fail(self.last, f"record seq {result.last_seq} altered: {reason}")
        if record["event"] == "rotate":
            self.pruned.update(str(name) for name in record.get("pruned") or ())
        if seq in self.expect and self.expect.pop(seq) != line_hash(line):
            self.fail(where, f"seq {seq} differs from the expected hash (altered since)")

    def _count(self, where: _Position, record: dict[str, Any], line: bytes) -> None:
        result = self.result
        if result.records == 0:
            result.first_seq = record["seq"]
        result.records += 1
        result.last_seq = record["seq"]
        result.head = line_hash(line)
        self.last = where
        self.last_prev = str(record["prev"])

    def _check_start(self, where: _Position, record: dict[str, Any]) -> None:
        seq: int = record["seq"]
        if seq == 1:
            if record["prev"] != GENESIS:
                self.fail(where, "the first record's prev is not 64 zeros (records before it?)")
        elif record["event"] == "rotate" and where.line == 1:
            self.starts_after = (where, str(record.get("file")))
        else:
            self.fail(where, f"the trail starts at seq {seq}: records 1..{seq - 1} removed")

    def finish(self, head: Head | None, check_head: bool, trail: Path) -> None:
        result = self.result
        if self.last is None:
            self.fail(trail, "no audit records")
            return
        if self.starts_after is not None:
            where, previous = self.starts_after
            if previous in self.pruned:
                self.result.notes.append(
                    f"the chain starts at seq {result.first_seq}: "
                    f"earlier records were in {previous}, pruned (audit.keep)"
                )
            else:
                reason = "was removed, but no rotation pruned it"
                self.fail(where, f"{previous} (the file before) {reason}")
        for seq in sorted(self.expect):
            if seq < result.first_seq:
                result.notes.append(f"expected seq {seq} not checked: in a pruned file")
            else:
                reason = f"the trail ends at seq {result.last_seq} (truncated)"
                self.fail(self.last, f"expected seq {seq}, but {reason}")
        if check_head:
            self._check_head(head, head_path(trail))

    def _check_head(self, head: Head | None, head_file: Path) -> None:
        result = self.result
        assert self.last is not None
        if head is None:
            reason = "a cut at the end cannot be ruled out (--no-head for a copy without it)"
            self.fail(head_file, f"head file missing: {reason}")
        elif head.seq == result.last_seq and head.hash == result.head:
            return
        elif head.seq == result.last_seq and head.seq > 0:
            self.fail(self.last, f"last record seq {head.seq} does not match the head (altered)")
        elif head.seq > result.last_seq:
            gap = _span(result.last_seq + 1, head.seq)
            reason = f"the head names seq {head.seq}: {gap} removed (truncated)"
            self.fail(self.last, f"the trail ends at seq {result.last_seq} but {reason}")
        elif head.seq == result.last_seq - 1 and head.hash == self.last_prev:
            result.notes.append("the head is one record behind (a crash before its update)")
        else:
            reason = "records added after it was written, or its updates failed"
            self.fail(self.last, f"the trail goes past its head (seq {head.seq}): {reason}")


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


def verify(
    trail: Path,
    *,
    check_head: bool = True,
    expect: Mapping[int, str] | None = None,
    on_record: OnRecord | None = None,
) -> Result:
    """Walk ``trail`` (rotated files, then the current one) and check everything."""
    walk = _Walk(expect or {}, on_record)
    files = trail_files(trail)
    if not files:
        walk.fail(trail, "no audit trail here")
        return walk.result
    for path in files:
        named = path.name[len(trail.name) + 1 :] if path != trail else ""
        first = int(named) if named else None
        with path.open("rb") as file:
            number = 0
            for number, raw in enumerate(file, 1):
                walk.feed(_Position(path, number), raw, first)
            if number == 0 and path != trail:
                walk.fail(_Position(path, 1), "rotated file is empty")
    try:
        head = read_head(trail)
    except FormatError as exc:
        walk.fail(head_path(trail), str(exc))
        return walk.result
    walk.finish(head, check_head, trail)
    return walk.result
