"""No sequence of edits to an anchored trail passes for what was anchored.

A real trail (several runs, written by the writer) has anchors taken at
some of its heads, the way the authority stores them from receipts. Then a
random sequence of edits is applied, the kind someone with write access to
the state directory can make: delete, swap or edit lines, insert a forged
record and redo the chain after it, append a chained record, cut the end,
each with or without rewriting the head. Whatever the edits:

- if the head was never rewritten and the trail changed, it is not ``ok``;
- if it is ``ok``, every anchored record is byte for byte the one anchored,
  the last anchor is the last record called anchored, and anything after it
  is reported as not yet anchored;
- any change to a record at or before the last anchor is caught.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.audit.anchors import Anchor
from filterd.audit.chain import decode_record, encode_record, head_path, line_hash
from filterd.audit.trail import TrailWriter
from filterd.audit.verify import verify

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CHAIN = ("seq", "time", "event", "prev")


def original(path: Path) -> list[bytes]:
    """Three runs: start, lists, stats..., stop."""
    writer = TrailWriter(path, 1 << 20, 0)
    second = 0
    writer.open(T0)
    for run in range(3):
        run_records: list[tuple[str, dict[str, Any]]] = [
            ("start", {"version": "0.1.0", "pid": run}),
            ("lists", {"generation": 1, "cause": "start", "lists": []}),
            ("stats", {"boundary": None, "queries": {"udp": {"A": {"blocked": run}}}}),
            ("stats", {"boundary": None, "queries": {"udp": {"A": {"blocked": run + 1}}}}),
            ("stop", {"clean": True, "error": None}),
        ]
        for event, fields in run_records:
            second += 10
            writer.append(event, fields, T0 + timedelta(seconds=second))
    writer.close()
    return path.read_bytes().splitlines()


def fields_of(line: bytes) -> tuple[str, datetime, dict[str, Any]]:
    record = decode_record(line)
    moment = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    return record["event"], moment, {k: v for k, v in record.items() if k not in CHAIN}


def rechained(lines: list[bytes], start: int) -> list[bytes]:
    """``lines`` with seq and prev redone from index ``start`` on."""
    out = lines[:start]
    prev = line_hash(out[-1]) if out else "0" * 64
    for seq, line in enumerate(lines[start:], start + 1):
        event, moment, fields = fields_of(line)
        again = encode_record(seq, moment, event, fields, prev)
        out.append(again)
        prev = line_hash(again)
    return out


def forged(after: bytes | None) -> bytes:
    """A plausible record a second after ``after``: a start between runs (the
    rules would catch anything else there), else a stats record."""
    if after is None:
        return encode_record(1, T0, "start", {"version": "0.1.0"}, "0" * 64)
    event, moment, _ = fields_of(after)
    moment += timedelta(seconds=1)
    if event == "stop":
        return encode_record(1, moment, "start", {"version": "0.1.0", "pid": 9}, "0" * 64)
    fields = {"boundary": None, "queries": {"udp": {"A": {"blocked": 500000}}}}
    return encode_record(1, moment, "stats", fields, "0" * 64)


index = st.integers(min_value=0, max_value=20)
edits = st.lists(
    st.one_of(
        st.tuples(st.just("delete"), index),
        st.tuples(st.just("swap"), index),
        st.tuples(st.just("edit"), index),
        st.tuples(st.just("insert"), index, st.booleans()),
        st.tuples(st.just("append"), st.booleans()),
        st.tuples(st.just("cut"), st.integers(min_value=1, max_value=4), st.booleans()),
    ),
    min_size=1,
    max_size=4,
)


def apply(lines: list[bytes], edit: tuple[Any, ...]) -> tuple[list[bytes], bool]:
    """One edit; returns the new lines and whether the head is to be rewritten."""
    kind, *args = edit
    lines = list(lines)
    if not lines:
        return lines, False
    at = args[0] % len(lines) if kind in ("delete", "swap", "edit", "insert") else 0
    if kind == "delete":
        del lines[at]
    elif kind == "swap" and at + 1 < len(lines):
        lines[at], lines[at + 1] = lines[at + 1], lines[at]
    elif kind == "edit":
        lines[at] = (
            lines[at]
            .replace(b'"blocked":', b'"blocked":9')
            .replace(b'"clean":true', b'"clean":false')
        )
    elif kind == "insert":
        lines.insert(at, forged(lines[at - 1] if at else None))
        return rechained(lines, at), args[1]
    elif kind == "append":
        lines.append(forged(lines[-1]))
        return rechained(lines, len(lines) - 1), args[0]
    elif kind == "cut":
        return lines[: max(0, len(lines) - args[0])], args[1]
    return lines, False


@settings(max_examples=150, deadline=None)
@given(anchored=st.sets(st.integers(min_value=1, max_value=15), min_size=1), edits=edits)
def test_edits_never_pass_for_what_was_anchored(
    anchored: set[int], edits: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "audit.jsonl"
        before = original(path)
        anchors = [Anchor(seq, line_hash(before[seq - 1])) for seq in sorted(anchored)]
        last_anchor = max(anchored)
        lines, head_rewritten = before, False
        for edit in edits:
            lines, rewrite = apply(lines, edit)
            head_rewritten |= rewrite
            if rewrite and lines:
                head = {"seq": decode_record(lines[-1])["seq"], "hash": line_hash(lines[-1])}
                head_path(path).write_text(json.dumps({**head, "time": "x"}))
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        result = verify(path, anchors=anchors)
        changed = lines != before
        if changed and not head_rewritten:
            assert not result.ok, (edits, result.summary())
        if lines[:last_anchor] != before[:last_anchor]:
            assert not result.ok, (edits, result.summary())
        if result.ok:
            assert lines[:last_anchor] == before[:last_anchor]
            assert result.anchored_seq == last_anchor
            details = "\n".join(result.details())
            if result.last_seq > last_anchor:
                assert f"not yet anchored: seq {last_anchor + 1}..{result.last_seq}" in details
