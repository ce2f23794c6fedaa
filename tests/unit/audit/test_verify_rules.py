"""Stricter verification: forged appends, time, lifecycle, rotation, anchors.

Every case builds a real trail with the writer, tampers with the files the
way someone with write access to the state directory could, and checks the
verdict and its message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from filterd.audit.anchors import load_anchors
from filterd.audit.chain import decode_record, encode_record, head_path, line_hash, read_head
from filterd.audit.trail import TrailWriter
from filterd.audit.verify import Result, verify
from filterd.cli import main

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


RUN: list[tuple[float, str, dict[str, Any]]] = [
    (0, "start", {"version": "0.1.0", "node": "n1"}),
    (1, "lists", {"generation": 1, "cause": "start", "lists": []}),
    (60, "stats", {"boundary": None, "queries": {}, "blocked": []}),
    (61, "stop", {"clean": True, "error": None}),
]


def write(path: Path, records: list[tuple[float, str, dict[str, Any]]] = RUN) -> None:
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(records[0][0]))
    for seconds, event, fields in records:
        writer.append(event, fields, at(seconds))
    writer.close()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def append_forged(path: Path, event: str, fields: dict[str, Any], seconds: float) -> bytes:
    """A record chained correctly to the last one, appended; the head left alone."""
    last = lines(path)[-1]
    record = decode_record(last)
    line = encode_record(record["seq"] + 1, at(seconds), event, fields, line_hash(last))
    with path.open("ab") as file:
        file.write(line + b"\n")
    return line


def rechain(path: Path, records: list[tuple[float, str, dict[str, Any]]]) -> None:
    """Write the trail *and* its head from scratch: what a forger with write
    access does to get past the chain (caught by the rules, or by anchors)."""
    path.unlink()
    head_path(path).unlink()
    prev, out = "0" * 64, []
    for seq, (seconds, event, fields) in enumerate(records, 1):
        line = encode_record(seq, at(seconds), event, fields, prev)
        out.append(line + b"\n")
        prev = line_hash(line)
    path.write_bytes(b"".join(out))
    head_path(path).write_text(json.dumps({"seq": len(records), "hash": prev, "time": "x"}))


def broken(result: Result, *words: str) -> None:
    assert result.verdict == "broken", result.summary()
    for word in words:
        assert word in result.problem, result.problem


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    write(path)
    return path


# ------------------------------------------------------------ forged append


def test_a_forged_record_appended_with_the_head_left_alone_never_verifies(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_forged(trail, "start", {"version": "0.1.0", "node": "n1"}, 70)
    result = verify(trail)
    assert result.verdict == "unverified"
    assert result.summary().startswith("unverified: 5 records, seq 1..5")
    assert "past the head (seq 4)" in result.unvouched[5]
    assert main(["audit", "verify", "--path", str(trail)]) == 3
    out = capsys.readouterr().out
    assert out.startswith("unverified: ") and "\nunverified: seq 5: past the head" in out
    assert "ok" not in out.split("\n")[0]


def test_the_restart_after_a_forged_append_records_it_and_it_stays_unverified(
    trail: Path,
) -> None:
    append_forged(trail, "start", {"version": "0.1.0", "node": "n1"}, 70)
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(at(100))
    writer.append("start", {"version": "0.1.0"}, at(100))
    writer.close()
    recover = decode_record(lines(trail)[-2])
    assert recover["event"] == "recover" and recover["unvouched_seq"] == 5
    assert recover["unclean_stop"] is True  # the forged start never stopped
    result = verify(trail)
    assert result.verdict == "unverified" and list(result.unvouched) == [5]


# ---------------------------------------------------------------- time


def test_time_going_back_is_caught(trail: Path) -> None:
    rechain(trail, [*RUN[:2], (-5, "stats", RUN[2][2]), RUN[3]])
    broken(verify(trail), ":3: time goes back 6.000 s from seq 2", "no clock_step record")


def test_a_small_jitter_is_tolerated(trail: Path) -> None:
    rechain(trail, [*RUN[:2], (0, "stats", RUN[2][2]), RUN[3]])  # 1 s back: within 2 s
    assert verify(trail).ok


def test_a_clock_step_is_recorded_and_accepted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(0))
    writer.append("start", {"version": "x"}, at(0), monotonic=1000.0)
    # 60 s later by the monotonic clock, but the wall clock was set back an hour
    writer.append("stats", {"boundary": None}, at(60 - 3600), monotonic=1060.0)
    writer.append("stop", {"clean": True}, at(61 - 3600), monotonic=1061.0)
    # a restart with the clock still an hour behind the records before
    writer.close()
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(100 - 3600))
    writer.append("start", {"version": "x"}, at(100 - 3600))
    writer.close()
    events = [decode_record(line) for line in lines(path)]
    assert [e["event"] for e in events] == ["start", "clock_step", "stats", "stop", "start"]
    assert events[1]["step_seconds"] == -3600.0
    assert events[1]["expected"] == "2026-11-23T10:01:00.000Z"
    result = verify(path)
    assert result.ok, result.problem
    # the same story with its clock_step record cut out and the chain redone
    rechain(path, [(0, "start", {}), (-3540, "stats", {}), (-3539, "stop", {})])
    broken(verify(path), "time goes back 3540.000 s")


def test_forward_steps_within_a_run_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(0))
    writer.append("start", {"version": "x"}, at(0), monotonic=10.0)
    writer.append("stats", {"boundary": None}, at(10), monotonic=11.0)  # +9 s
    writer.append("stats", {"boundary": None}, at(11.5), monotonic=12.0)  # +0.5 s: jitter
    writer.close()
    events = [decode_record(line) for line in lines(path)]
    assert [e["event"] for e in events] == ["start", "clock_step", "stats", "stats"]
    assert events[1]["step_seconds"] == 9.0


# ------------------------------------------------------------- lifecycle


def test_stats_after_stop_without_a_start(trail: Path) -> None:
    rechain(trail, [*RUN, (62, "stats", RUN[2][2])])
    broken(verify(trail), ":5: seq 5: stats record after the run that ended at seq 4")


def test_records_before_any_start(trail: Path) -> None:
    rechain(trail, [RUN[1], *RUN])
    broken(verify(trail), ":1: seq 1: lists record before any start")


def test_a_second_start_without_stop_or_recovery(trail: Path) -> None:
    rechain(trail, [*RUN[:3], (62, "start", {}), RUN[3]])
    broken(verify(trail), ":4: seq 4: start, but the run started at seq 1 has no stop")


def test_a_stop_without_a_start(trail: Path) -> None:
    rechain(trail, [*RUN, (62, "stop", RUN[3][2])])
    broken(verify(trail), ":5: seq 5: stop without a start (the last run ended at seq 4)")


def test_a_killed_run_is_closed_by_a_recovery_at_the_next_start(trail: Path) -> None:
    rechain(trail, RUN[:3])  # no stop: the daemon was killed
    writer = TrailWriter(trail, 1 << 20, 0)
    writer.open(at(100))
    writer.append("start", {"version": "x"}, at(100))
    writer.close()
    recover = decode_record(lines(trail)[-2])
    assert recover["unclean_stop"] is True and recover["lost"] == 0
    assert verify(trail).ok


# -------------------------------------------------------------- rotation


def test_a_rotate_record_must_name_the_file_before(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = TrailWriter(path, 400, 0)
    writer.open(at(0))
    writer.append("start", {"version": "x"}, at(0))
    for i in range(6):
        writer.append("reload", {"result": "success", "generation": i}, at(i + 1))
    writer.close()
    assert verify(path).ok
    first = decode_record(lines(path)[0])
    assert first["event"] == "rotate"
    # forge the current file: the rotate record claims another range, chain intact
    forged = {k: v for k, v in first.items() if k not in ("seq", "time", "event", "prev")}
    forged["first_seq"] = 2
    content = lines(path)
    line = encode_record(first["seq"], at(7), "rotate", forged, first["prev"])
    rest = [decode_record(raw) for raw in content[1:]]
    out, prev = [line], line_hash(line)
    for record in rest:
        fields = {k: v for k, v in record.items() if k not in ("seq", "time", "event", "prev")}
        again = encode_record(record["seq"], at(8), record["event"], fields, prev)
        out.append(again)
        prev = line_hash(again)
    path.write_bytes(b"".join(raw + b"\n" for raw in out))
    head = read_head(path)
    assert head is not None
    head_path(path).write_text(json.dumps({"seq": head.seq, "hash": prev, "time": "x"}))
    broken(verify(path), "rotate record names audit.jsonl.", "with seq 2..", "but the file before")


def test_a_rotation_cut_short_by_a_crash_is_finished_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(0))
    for seconds, event, fields in RUN:
        writer.append(event, fields, at(seconds))
    writer.close()
    path.rename(path.with_name("audit.jsonl.1"))  # renamed; the rotate record never written
    writer = TrailWriter(path, 1 << 20, 0)
    writer.open(at(100))
    writer.append("start", {"version": "x"}, at(100))
    writer.close()
    first = decode_record(lines(path)[0])
    assert first["event"] == "rotate" and (first["first_seq"], first["last_seq"]) == (1, 4)
    result = verify(path)
    assert result.ok, result.problem


# --------------------------------------------------------------- anchors


def anchors_file(path: Path, trail: Path, seqs: list[int]) -> Path:
    content = lines(trail)
    heads = [
        {"seq": seq, "hash": line_hash(content[seq - 1]), "time": "t", "received_at": f"r{seq}"}
        for seq in seqs
    ]
    path.write_text(json.dumps({"type": "filterd-anchors", "node": "n1", "heads": heads}))
    return path


def test_anchors_pin_the_trail_and_say_what_is_not_yet_anchored(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchors = anchors_file(tmp_path / "anchors.json", trail, [1, 2])
    result = verify(trail, anchors=load_anchors(anchors))
    assert result.ok and result.anchored_seq == 2 and result.anchors_checked == 2
    assert main(["audit", "verify", "--path", str(trail), "--anchors", str(anchors)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok: 4 records, seq 1..4")
    assert out[1] == "anchored: seq 1..2 (2 anchors match; the last, seq 2, taken r2)"
    assert out[2].startswith("not yet anchored: seq 3..4 (only the head on this machine")
    assert main(["audit", "verify", "--path", str(trail)]) == 0
    assert "not anchored: seq 1..4 (no anchors given" in capsys.readouterr().out


def test_a_trail_rewritten_with_its_head_is_caught_by_an_anchor(
    trail: Path, tmp_path: Path
) -> None:
    anchors = anchors_file(tmp_path / "anchors.json", trail, [3])
    forged = dict(RUN[2][2], queries={"udp": {"A": {"blocked": 500000}}})
    rechain(trail, [*RUN[:2], (60, "stats", forged), RUN[3]])
    assert verify(trail).ok  # the files alone cannot tell
    broken(verify(trail, anchors=load_anchors(anchors)), ":3: seq 3 differs from anchor seq 3")


def test_a_cut_trail_misses_its_anchor(trail: Path, tmp_path: Path) -> None:
    anchors = anchors_file(tmp_path / "anchors.json", trail, [4])
    rechain(trail, RUN[:2])
    broken(verify(trail, anchors=load_anchors(anchors)), "anchor seq 4", "is missing", "truncated")


def test_two_anchors_of_one_record_that_disagree(trail: Path, tmp_path: Path) -> None:
    path = anchors_file(tmp_path / "anchors.json", trail, [2, 3])
    document = json.loads(path.read_text())
    document["heads"].append(dict(document["heads"][0], hash="ab" * 32, received_at="r9"))
    path.write_text(json.dumps(document))
    broken(verify(trail, anchors=load_anchors(path)), "two hashes for one record", "rewritten")


def test_anchors_as_text_and_bad_anchor_files(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "anchors.txt"
    text.write_text(f"# from the last report\n2:{line_hash(lines(trail)[1])}\n")
    assert verify(trail, anchors=load_anchors(text)).anchored_seq == 2
    for content, message in [
        ('{"heads": [{"seq": 0, "hash": "x"}]}', "seq missing or not a positive"),
        ("{}", 'no "heads" list'),
        ("2:abc\n", "not SEQ:HASH"),
    ]:
        text.write_text(content)
        assert main(["audit", "verify", "--path", str(trail), "--anchors", str(text)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    missing = tmp_path / "none.json"
    assert main(["audit", "verify", "--path", str(trail), "--anchors", str(missing)]) == 2
    assert "No such file" in capsys.readouterr().err
