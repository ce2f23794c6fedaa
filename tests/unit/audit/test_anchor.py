"""The node key, signed receipts carrying the audit head, and signed reports."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from filterd.audit.anchor import (
    key_path,
    load_node_key,
    public_path,
    rotate_node_key,
    signed_receipt,
)
from filterd.audit.chain import read_head
from filterd.audit.recorder import AuditRecorder
from filterd.audit.sealing import seal, verify_report
from filterd.audit.trail import TrailWriter
from filterd.cli import main
from filterd.config import AuditConfig
from filterd.sync.model import (
    AuditHead,
    Receipt,
    SyncError,
    load_public_key,
    parse_receipt,
    public_key_text,
)
from filterd.sync.signed import check

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
RECEIPT = Receipt("vnpt-hanoi", "resolver-01", "national", 7, T0, "ab" * 32, 3, "filterd 0.1.0")
HEAD = AuditHead(42, "cd" * 32, T0 + timedelta(seconds=5))


def test_the_node_key_is_created_once_private_and_rotated_keeping_the_old(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    assert load_node_key(state, create=False) is None
    first = load_node_key(state)
    assert first is not None
    assert oct(key_path(state).stat().st_mode & 0o777) == "0o600"
    assert public_path(state).read_text().strip() == public_key_text(first.public_key())
    again = load_node_key(state)
    assert again is not None and public_key_text(again.public_key()) == public_key_text(
        first.public_key()
    )
    old, new = rotate_node_key(state, T0)
    assert old == public_key_text(first.public_key()) and new != old
    assert (state / "node.key.20261123T100000Z").exists()
    assert public_path(state).read_text().strip() == new


def test_a_signed_receipt_carries_the_head_and_verifies_only_with_its_node_key(
    tmp_path: Path,
) -> None:
    document = signed_receipt(tmp_path / "n1", HEAD, RECEIPT, now=T0 + timedelta(seconds=9))
    key = load_public_key(public_path(tmp_path / "n1").read_text())
    check(document, key)
    parsed = parse_receipt(json.loads(json.dumps(document)))  # through any JSON library
    assert parsed.audit_head == HEAD
    assert parsed.sent_at == T0 + timedelta(seconds=9)
    assert document["audit_head"] == {"seq": 42, "hash": "cd" * 32, "time": "2026-11-23T10:00:05Z"}
    check(json.loads(json.dumps(document, indent=3, sort_keys=True)), key)
    with pytest.raises(SyncError, match="does not verify"):
        check(dict(document, serial=8), key)
    with pytest.raises(SyncError, match="does not verify"):
        check(dict(document, audit_head=dict(document["audit_head"], seq=43)), key)
    other = signed_receipt(tmp_path / "n2", HEAD, RECEIPT)
    with pytest.raises(SyncError, match="signed with key"):
        check(other, key)
    with pytest.raises(SyncError, match="not signed"):
        check(RECEIPT.to_json(), key)


def test_the_recorder_gives_the_head_a_receipt_carries(tmp_path: Path) -> None:
    recorder = AuditRecorder(AuditConfig(path=tmp_path / "a" / "audit.jsonl"), tmp_path)

    async def scenario() -> AuditHead | None:
        recorder.open()
        recorder.emit("start", {"version": "x"})
        recorder.emit("reload", {"result": "success"})
        await recorder.flush()
        anchor = recorder.anchor()
        await recorder.close()
        return anchor

    anchor = asyncio.run(scenario())
    head = read_head(recorder.path)
    assert anchor is not None and head is not None
    assert (anchor.seq, anchor.hash) == (head.seq, head.hash) == (2, head.hash)
    last = json.loads(recorder.path.read_text().splitlines()[-1])
    assert anchor.time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" == last["time"]
    # a restart: the head is known before the first record of the new run
    reopened = AuditRecorder(AuditConfig(path=recorder.path), tmp_path)

    async def reopen() -> AuditHead | None:
        reopened.open()
        await reopened.flush()
        anchor = reopened.anchor()
        await reopened.close()
        return anchor

    assert asyncio.run(reopen()) is not None


# ------------------------------------------------------------------ reports


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A node's state directory with a trail of one run."""
    state = tmp_path / "state"
    writer = TrailWriter(state / "audit" / "audit.jsonl", 1 << 20, 0)
    writer.open(T0)
    writer.append("start", {"version": "0.1.0"}, T0)
    writer.append("lists", {"generation": 1, "cause": "start", "lists": []}, T0)
    writer.append("stop", {"clean": True, "error": None}, T0 + timedelta(hours=1))
    writer.close()
    return state


def report(capsys: pytest.CaptureFixture[str], trail: Path, fmt: str, out: Path) -> str:
    argv = ["report", "--from", "2026-11-23", "--to", "2026-11-23", "--path", str(trail)]
    assert main([*argv, "--format", fmt, "-o", str(out)]) == 0
    return capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "csv", "html"])
def test_reports_are_signed_and_checked(
    fmt: str, node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail = node / "audit" / "audit.jsonl"
    out = tmp_path / f"report.{fmt}"
    assert "report not signed: no node key" in report(capsys, trail, fmt, out)
    assert main(["node-key", "show", "--state-dir", str(node)]) == 0
    public = capsys.readouterr().out.splitlines()[0]
    assert report(capsys, trail, fmt, out) == ""
    assert main(["report", "--verify", str(out), "--path", str(trail)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: signature ok ({fmt}, node key {lines[0].split()[-1][:-1]})"
    if fmt != "html":
        assert lines[1].startswith("the trail holds the report's head: seq 3 ")
    # a forged report: one number changed
    text = out.read_text()
    forged = text.replace('"records": 3', '"records": 4').replace("records,3", "records,4")
    if fmt == "html":
        forged = text.replace('<td>records</td><td class="n">3<', "<td>records</td><td>4<")
    assert forged != text
    out.write_text(forged)
    assert main(["report", "--verify", str(out), "--node-key", public]) == 1
    assert "NOT verified: signature does not verify" in capsys.readouterr().out


def test_a_report_signed_by_another_key_or_over_a_rewritten_trail(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trail = node / "audit" / "audit.jsonl"
    out = tmp_path / "report.json"
    load_node_key(node)
    report(capsys, trail, "json", out)
    other = load_node_key(tmp_path / "other")
    assert other is not None
    resigned = seal(out.read_text(), "json", other)
    (tmp_path / "resigned.json").write_text(resigned)
    assert main(["report", "--verify", str(tmp_path / "resigned.json"), "--path", str(trail)]) == 1
    assert "NOT verified: signed with key" in capsys.readouterr().out
    with pytest.raises(SyncError, match="not signed"):
        verify_report("section,row,field,value\n", other.public_key())
    # the trail rewritten after the report was made (and its head with it)
    writer = TrailWriter(tmp_path / "copy" / "audit.jsonl", 1 << 20, 0)
    writer.open(T0)
    writer.append("start", {"version": "9.9.9"}, T0)
    writer.close()
    trail.write_bytes((tmp_path / "copy" / "audit.jsonl").read_bytes())
    status = main(["report", "--verify", str(out), "--path", str(trail)])
    text = capsys.readouterr().out
    assert status == 1 and "does not hold what the report was made from" in text
    assert "anchor seq 3 (the report's head" in text
