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
- a loss found by the daemon at start-up: its ``recover`` record;
- records made up in the wrong shape: time going back without a
  ``clock_step`` record, runs out of order, a rotation that does not name
  the file before it (rules.py).

Verdicts (``Result.verdict``, and the exit status of ``filterd audit
verify``): ``ok`` every record is vouched for; ``broken`` the first problem
found; ``unverified`` the chain is intact but some records are vouched for
by nothing: the record past the head (the head is updated after each
record, so a crash leaves one record past it, and a forger who appends a
correctly chained record but cannot touch the head leaves the same), and a
record the daemon found past the head at start-up (its ``recover`` record
names it). Such records are listed, never reported as verified, and left
out of reports.

Someone able to rewrite the whole trail *and* the head from the altered
record onwards is not detected by these files alone: anchors (anchors.py:
heads the authority received with the node's receipts, or a report's head)
catch that, back to the last anchor. Records after the last anchor are
*not yet anchored*: only the node's own head vouches for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filterd.audit.anchors import Anchor, order_problem
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
from filterd.audit.rules import Order, rotation_problem

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
    unvouched: dict[int, str] = field(default_factory=dict)
    """Records nothing vouches for (seq: why): never counted as verified."""
    anchored: bool = False
    """Anchors were given (an empty anchors file counts: nothing is anchored)."""
    anchors_checked: int = 0
    anchored_seq: int = 0
    """The last record pinned by an anchor (0: none)."""
    anchored_at: str | None = None
    """When that anchor was taken (the authority's receipt time, or the node's)."""

    @property
    def verdict(self) -> str:
        """``ok``, ``unverified`` (records vouched for by nothing) or ``broken``."""
        if self.problem:
            return "broken"
        return "unverified" if self.unvouched else "ok"

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def summary(self) -> str:
        if self.problem:
            return self.problem
        span = f"seq {self.first_seq}..{self.last_seq}"
        if self.unvouched:
            seqs = ", ".join(str(seq) for seq in sorted(self.unvouched))
            return (
                f"unverified: {self.records} records, {span}, head {self.head}; "
                f"nothing vouches for seq {seqs}"
            )
        return f"ok: {self.records} records, {span}, head {self.head}"

    def details(self) -> list[str]:
        """The lines after the summary: unverified records, what is anchored, notes."""
        lines = [f"unverified: seq {seq}: {why}" for seq, why in sorted(self.unvouched.items())]
        if self.records and not self.problem:
            lines += self._anchoring()
        lines += [f"note: {note}" for note in self.notes]
        return lines

    def _anchoring(self) -> list[str]:
        if not self.anchored:
            return [
                f"not anchored: seq {self.first_seq}..{self.last_seq} "
                "(no anchors given: only the head on this machine vouches for them)"
            ]
        lines = []
        if self.anchored_seq:
            when = f", taken {self.anchored_at}" if self.anchored_at else ""
            lines.append(
                f"anchored: seq {self.first_seq}..{self.anchored_seq} "
                f"({self.anchors_checked} anchors match; the last, seq {self.anchored_seq}{when})"
            )
        if self.anchored_seq < self.last_seq:
            first = max(self.anchored_seq + 1, self.first_seq)
            lines.append(
                f"not yet anchored: seq {first}..{self.last_seq} "
                "(only the head on this machine vouches for them)"
            )
        return lines


@dataclass(slots=True)
class _Position:
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class _Walk:
    """The state of one pass over the trail."""

    def __init__(self, anchors: Sequence[Anchor] | None, on_record: OnRecord | None) -> None:
        self.result = Result(anchored=anchors is not None)
        self.expect = {anchor.seq: anchor for anchor in anchors or ()}
        self.on_record = on_record
        self.last: _Position | None = None
        self.last_prev = ""
        self.pruned: set[str] = set()
        self.starts_after: tuple[_Position, str] | None = None
        self.order = Order()
        self.file_before: tuple[str, int, int] | None = None
        """The file walked before the current one: name, first seq, last seq."""
        self.file_first = 0

    def fail(self, where: _Position | Path | str, message: str) -> None:
        if not self.result.problem:
            self.result.problem = f"{where}: {message}"

    def end_file(self, path: Path) -> None:
        if self.file_first:
            self.file_before = (path.name, self.file_first, self.result.last_seq)
        self.file_first = 0

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
            if not self.result.problem:
                self._check_rules(where, record)
        if where.line == 1:
            self.file_first = record["seq"]
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
        anchor = self.expect.pop(seq, None)
        if anchor is None:
            return
        if anchor.hash != line_hash(line):
            self.fail(where, f"seq {seq} differs from {anchor.label()}: altered since")
        else:
            result.anchors_checked += 1
            result.anchored_seq = seq
            result.anchored_at = anchor.received or anchor.time

    def _check_rules(self, where: _Position, record: dict[str, Any]) -> None:
        problem = self.order.check(record)
        if record["event"] == "rotate":
            walked_before = self.file_before if self.last is not None else None
            problem = problem or rotation_problem(record, where.line, walked_before)
        elif where.line == 1 and self.last is not None:
            problem = f"seq {record['seq']}: a file that does not begin with a rotate record"
        unvouched = record.get("unvouched_seq")
        if record["event"] == "recover" and isinstance(unvouched, int) and unvouched > 0:
            self.result.unvouched[unvouched] = (
                f"past the head at start-up (recover record seq {record['seq']}): written "
                "just before a crash, or appended while filterd was down"
            )
        if problem:
            self.fail(where, problem)

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
        for seq, anchor in sorted(self.expect.items()):
            if seq < result.first_seq:
                result.notes.append(f"{anchor.label()} not checked: in a pruned file")
            else:
                reason = f"the trail ends at seq {result.last_seq} (truncated)"
                self.fail(self.last, f"{anchor.label()} is missing: {reason}")
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
            if result.anchored_seq < result.last_seq:
                result.unvouched[result.last_seq] = (
                    f"past the head (seq {head.seq}): written just before a crash "
                    "(the next start records it), or appended by someone else"
                )
        else:
            reason = "records added after it was written, or its updates failed"
            self.fail(self.last, f"the trail goes past its head (seq {head.seq}): {reason}")


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


def verify(
    trail: Path,
    *,
    check_head: bool = True,
    anchors: Sequence[Anchor] | None = None,
    expect: Mapping[int, str] | None = None,
    on_record: OnRecord | None = None,
) -> Result:
    """Walk ``trail`` (rotated files, then the current one) and check everything.
    ``anchors``: heads taken off the node (None: none given); ``expect``:
    record seq must hash to this (``--expect``), also counted as anchors."""
    given = list(anchors) if anchors is not None else None
    if expect:
        given = (given or []) + [Anchor(s, h, source="--expect") for s, h in expect.items()]
    walk = _Walk(given, on_record)
    problem = order_problem(given or ())
    if problem:
        walk.fail("anchors", problem)
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
        walk.end_file(path)
    try:
        head = read_head(trail)
    except FormatError as exc:
        walk.fail(head_path(trail), str(exc))
        return walk.result
    walk.finish(head, check_head, trail)
    return walk.result


def read_records(trail: Path) -> Iterator[dict[str, Any]]:
    """Every decodable record of the trail, in file order (no checks)."""
    for path in trail_files(trail):
        with path.open("rb") as file:
            for raw in file:
                if raw.endswith(b"\n"):
                    try:
                        yield decode_record(raw[:-1])
                    except FormatError:
                        continue
