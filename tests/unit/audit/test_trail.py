"""The trail: chain, rotation, recovery, and every kind of tampering detected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from filterd.audit.chain import (
    GENESIS,
    decode_record,
    encode_record,
    head_path,
    line_hash,
    read_head,
    rotated_files,
)
from filterd.audit.trail import TrailWriter
from filterd.audit.verify import Result, verify

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)
"""After any record ``write`` makes: a restart."""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def write(path: Path, count: int, *, max_bytes: int = 1 << 20, keep: int = 0) -> TrailWriter:
    """A run of ``count`` records: a start, then reloads (generation = seq)."""
    clock = Clock()
    writer = TrailWriter(path, max_bytes, keep)
    writer.open(clock())
    writer.append("start", {"version": "0.1.0"}, clock())
    for i in range(1, count):
        writer.append("reload", {"result": "success", "generation": i + 1, "error": None}, clock())
    writer.close()
    return writer


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    write(path, 8)
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def put(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(content))


def broken(result: Result, where: str, *words: str) -> None:
    assert not result.ok, result.summary()
    assert result.problem.startswith(where), result.problem
    for word in words:
        assert word in result.problem, result.problem


# ------------------------------------------------------------------- chain


def test_records_chain_from_64_zeros_and_the_head_names_the_last(trail: Path) -> None:
    records = [decode_record(line.rstrip(b"\n")) for line in lines(trail)]
    assert [r["seq"] for r in records] == list(range(1, 9))
    assert records[0]["prev"] == GENESIS
    for before, after in zip(lines(trail), records[1:], strict=False):
        assert after["prev"] == line_hash(before.rstrip(b"\n"))
    assert list(records[0])[:3] == ["seq", "time", "event"] and list(records[0])[-1] == "prev"
    head = read_head(trail)
    assert head is not None and head.seq == 8
    assert head.hash == line_hash(lines(trail)[-1].rstrip(b"\n"))
    result = verify(trail)
    assert result.ok, result.problem
    assert result.summary() == f"ok: 8 records, seq 1..8, head {head.hash}"
    assert oct(trail.stat().st_mode & 0o777) == "0o600"


def test_a_reopened_trail_continues_the_chain(trail: Path) -> None:
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(LATER)
    writer.append("start", {"version": "0.1.0"}, LATER)
    writer.append("stop", {"clean": True, "error": None}, LATER)
    writer.close()
    events = [(r["seq"], r["event"]) for r in map(decode_record, trail.read_bytes().splitlines())]
    assert events[-3:] == [(9, "recover"), (10, "start"), (11, "stop")]  # the first run: killed
    assert verify(trail).ok
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(LATER)  # after a stop: nothing to recover
    writer.close()
    assert len(lines(trail)) == 11


def test_a_record_cannot_hold_a_newline_or_shadow_the_chain_fields() -> None:
    line = encode_record(1, T0, "reload", {"error": "bad\nline\u2028"}, GENESIS)
    assert b"\n" not in line
    with pytest.raises(AssertionError):
        encode_record(1, T0, "reload", {"prev": GENESIS}, GENESIS)


# --------------------------------------------------------------- tampering


def test_an_edited_field_names_the_edited_line(trail: Path) -> None:
    content = lines(trail)
    content[2] = content[2].replace(b'"generation":3', b'"generation":4')
    put(trail, content)
    result = verify(trail)
    broken(result, f"{trail}:3:", "record seq 3 altered", f"{trail}:4")
    assert (result.records, result.last_seq) == (8, 8)  # judged to line 3, counted to the end


def test_an_edited_last_record_is_caught_by_the_head(trail: Path) -> None:
    content = lines(trail)
    content[-1] = content[-1].replace(b"success", b"failure")
    put(trail, content)
    broken(verify(trail), f"{trail}:8:", "does not match the head")


def test_a_deleted_middle_record(trail: Path) -> None:
    content = lines(trail)
    del content[3]
    put(trail, content)
    broken(verify(trail), f"{trail}:4:", "seq 5 follows seq 3", "record 4 removed")


def test_swapped_records(trail: Path) -> None:
    content = lines(trail)
    content[3], content[4] = content[4], content[3]
    put(trail, content)
    broken(verify(trail), f"{trail}:4:", "seq 5 follows seq 3")
    content = lines(trail)
    content[4], content[5] = content[5], content[4]  # adjacent seqs: 4 and 6 swapped back
    put(trail, content)
    assert not verify(trail).ok


def test_an_inserted_record_with_a_correct_prev(trail: Path) -> None:
    content = lines(trail)
    moment = T0 + timedelta(seconds=4)  # the time of seq 3: only the chain can tell
    forged = encode_record(4, moment, "reload", {"result": "success"}, line_hash(content[2][:-1]))
    content.insert(3, forged + b"\n")
    put(trail, content)
    broken(verify(trail), f"{trail}:5:", "seq 4 follows seq 4", "inserted")


def test_a_rewritten_tail_without_the_head(trail: Path) -> None:
    """A forger who inserts a record and recomputes every later link still
    cannot make the trail end where the head says it does."""
    records = [decode_record(line[:-1]) for line in lines(trail)]
    fields = [{k: v for k, v in r.items() if k not in ("seq", "time", "event", "prev")}
              for r in records]  # fmt: skip
    fields.insert(3, {"result": "failure", "generation": 3, "error": "forged"})
    events = [r["event"] for r in records]
    events.insert(3, "reload")
    prev, out = GENESIS, []
    for seq, (event, extra) in enumerate(zip(events, fields, strict=True), 1):
        line = encode_record(seq, T0, event, extra, prev)
        out.append(line + b"\n")
        prev = line_hash(line)
    put(trail, out)
    broken(verify(trail), f"{trail}:9:", "goes past its head")


def test_a_cut_tail_is_caught_by_the_head(trail: Path) -> None:
    put(trail, lines(trail)[:-2])
    broken(verify(trail), f"{trail}:6:", "head names seq 8", "records 7..8 removed", "truncated")
    assert verify(trail, check_head=False).ok


def test_a_cut_beginning(trail: Path) -> None:
    put(trail, lines(trail)[2:])
    broken(verify(trail), f"{trail}:1:", "starts at seq 3", "records 1..2 removed")


def test_garbage_and_a_partial_last_line(trail: Path) -> None:
    content = lines(trail)
    put(trail, [*content[:2], b"not json\n", *content[3:]])
    broken(verify(trail), f"{trail}:3:", "not a JSON record")
    put(trail, [*content[:-1], content[-1][:-5]])
    broken(verify(trail), f"{trail}:8:", "not a JSON record")
    put(trail, [*content[:-1], content[-1][:-1]])
    broken(verify(trail), f"{trail}:8:", "incomplete last line")


def test_the_head_missing_or_an_empty_trail(trail: Path, tmp_path: Path) -> None:
    head_path(trail).unlink()
    broken(verify(trail), str(head_path(trail)), "head file missing")
    assert verify(trail, check_head=False).ok
    broken(verify(tmp_path / "none.jsonl"), str(tmp_path / "none.jsonl"), "no audit trail")


def test_anchors_from_an_earlier_report(trail: Path) -> None:
    content = lines(trail)
    anchor = {5: line_hash(content[4][:-1])}
    assert verify(trail, expect=anchor).ok
    assert not verify(trail, expect={5: "0" * 64}).ok
    broken(verify(trail, expect={12: "0" * 64}), f"{trail}:8:", "anchor seq 12", "is missing")


# ---------------------------------------------------------------- rotation


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1024)
    rotated = rotated_files(path)
    assert len(rotated) >= 3
    for first_seq, file in rotated:
        assert decode_record(lines(file)[0][:-1])["seq"] == first_seq
        assert file.stat().st_size <= 1024
    first_of_current = decode_record(lines(path)[0][:-1])
    assert first_of_current["event"] == "rotate"
    assert first_of_current["prev"] == line_hash(lines(rotated[-1][1])[-1][:-1])
    result = verify(path)
    assert result.ok, result.problem
    assert result.first_seq == 1 and result.records == result.last_seq


def test_a_broken_link_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1024)
    (_, first), (second_seq, second) = rotated_files(path)[:2]
    put(first, lines(first)[:-1])
    broken(verify(path), f"{second}:1:", f"seq {second_seq} follows seq {second_seq - 2}")


def test_a_removed_or_renamed_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1024)
    rotated = rotated_files(path)
    rotated[0][1].unlink()
    broken(verify(path), f"{rotated[1][1]}:1:", "was removed, but no rotation pruned it")
    middle_seq, middle = rotated[1]
    middle.rename(middle.with_name(f"{path.name}.{middle_seq + 1}"))
    assert "renamed" in verify(path).problem


def test_keep_prunes_old_files_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 60, max_bytes=1024, keep=2)
    rotated = rotated_files(path)
    assert len(rotated) == 2
    rotates = [decode_record(line[:-1]) for line in lines(path)[:1]]
    assert rotates[0]["pruned"]
    result = verify(path)
    assert result.ok, result.problem
    assert result.first_seq > 1
    assert any("pruned (audit.keep)" in note for note in result.notes)
    assert verify(path, expect={1: "0" * 64}).notes[-1].endswith("in a pruned file")


# ---------------------------------------------------------------- recovery


def test_a_partial_line_from_a_crash_is_dropped_and_recorded(trail: Path) -> None:
    with trail.open("ab") as file:
        file.write(b'{"seq":9,"time":"2026-')
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(LATER)
    writer.close()
    record = decode_record(lines(trail)[-1][:-1])
    assert record["event"] == "recover" and record["seq"] == 9
    assert record["dropped_bytes"] == 22 and record["lost"] == 0
    assert record["unclean_stop"] is True and record["unvouched_seq"] is None
    assert "partial last line dropped" in record["problem"]
    result = verify(trail)
    assert result.ok, result.problem


def test_a_record_past_the_head_is_never_verified(trail: Path) -> None:
    """A crash between a record's fsync and the head's update leaves exactly
    what a forger leaves who appends one correctly chained record and cannot
    touch the head: neither is verified, before or after a restart."""
    content = lines(trail)
    behind = {"seq": 7, "hash": line_hash(content[6][:-1]), "time": "2026-11-23T10:00:00.000Z"}
    head_path(trail).write_text(json.dumps(behind))
    result = verify(trail)
    assert result.verdict == "unverified" and not result.ok
    assert result.summary().startswith("unverified: 8 records, seq 1..8")
    assert "past the head (seq 7)" in result.unvouched[8]
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(LATER)  # the restart: the head is brought forward, and said so
    writer.append("start", {"version": "0.1.0"}, LATER)
    writer.close()
    recover = decode_record(lines(trail)[-2][:-1])
    assert recover["event"] == "recover" and recover["unvouched_seq"] == 8
    assert recover["lost"] == 0 and "past the head (seq 7)" in recover["problem"]
    result = verify(trail)
    assert result.verdict == "unverified" and list(result.unvouched) == [8]
    assert "recover record seq 9" in result.unvouched[8]


def test_a_cut_found_at_start_up_is_recorded_and_never_verifies_again(trail: Path) -> None:
    put(trail, lines(trail)[:-3])
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(LATER)
    writer.append("start", {"version": "x"}, LATER)
    writer.close()
    recover = decode_record(lines(trail)[-2][:-1])
    assert recover["event"] == "recover" and recover["lost"] == 3
    assert recover["seq"] == 9  # numbers of the lost records are not reused
    broken(verify(trail), f"{trail}:6:", "at start-up the daemon found", "records 6..8 lost")


def test_a_failed_write_is_cut_back_and_the_next_one_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(T0)
    writer.append("start", {"version": "x"}, T0)
    with pytest.raises(ValueError, match="JSON"):
        writer.append("stats", {"queries": float("nan")}, T0)  # nothing reaches the file
    writer.append("stop", {"clean": True}, T0)
    writer.close()
    assert [decode_record(line[:-1])["seq"] for line in lines(path)] == [1, 2]
    assert verify(path).ok


def test_one_writer_at_a_time(trail: Path) -> None:
    """A second daemon on the same state directory must not interleave records."""
    first = TrailWriter(trail, 1 << 20, 0)
    first.open(LATER)
    second = TrailWriter(trail, 1 << 20, 0)
    with pytest.raises(OSError, match="another process writes this audit trail"):
        second.append("start", {"version": "x"}, LATER)
    first.append("start", {"version": "x"}, LATER)
    first.append("stop", {"clean": True}, LATER)
    first.close()
    second.append("start", {"version": "x"}, LATER)  # free again
    second.close()
    assert verify(trail).ok
