"""Audit heads anchored at the authority, end to end, with real processes.

First, a real node (``filterd run``) syncs from a real ``filterd authority serve``
and writes its audit trail; its key (``filterd node-key show``) is
registered at the authority (``filterd authority node add``); receipts
signed with it carry the node's audit head. Then every tampering case the
authority and the anchors must catch, each with its message: an unsigned
receipt, one signed by another node, an altered one, a replayed one, a stale
one; and a trail rewritten together with its head, which the files alone
cannot reveal but the heads exported by the authority do. Then the trail
of a real run, tampered with in every other way: a forged record appended,
the head rewritten, the end cut, records reordered, time set back, and a
signed report edited.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dns.rcode

from filterd.audit.anchor import signed_receipt
from filterd.audit.chain import GENESIS, decode_record, encode_record, head_path, line_hash
from filterd.audit.chain import parse_time as audit_time
from filterd.sync.model import AuditHead, Receipt, parse_time, utc_now
from tests.integration.conftest import DaemonFactory, standard_config, synced_node
from tests.integration.daemon import FILTERD
from tests.peers.authoritative import FakeUpstream
from tests.peers.processes import wait_until
from tests.peers.reference_authority import ServerFactory, cli, make_data

CHAIN = ("seq", "time", "event", "prev")


def filterd(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FILTERD), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def head_of(trail: Path) -> AuditHead:
    """The node's head as the recorder gives it: the last record's seq, hash, time."""
    last = trail.read_bytes().splitlines()[-1]
    record = decode_record(last)
    return AuditHead(record["seq"], line_hash(last), audit_time(record["time"]))


def rewrite(trail: Path, change: dict[str, Any], at_seq: int) -> None:
    """Rewrite the whole trail with one record changed, every link redone
    and the head to match: what someone with root on the node can do."""
    prev, out = GENESIS, []
    for line in trail.read_bytes().splitlines():
        record = decode_record(line)
        fields = {k: v for k, v in record.items() if k not in CHAIN}
        if record["seq"] == at_seq:
            fields.update(change)
        moment = audit_time(record["time"])
        again = encode_record(record["seq"], moment, record["event"], fields, prev)
        out.append(again + b"\n")
        prev = line_hash(again)
    trail.write_bytes(b"".join(out))
    last = decode_record(out[-1][:-1])
    head_path(trail).write_text(json.dumps({"seq": last["seq"], "hash": prev, "time": "x"}))


def test_signed_receipts_anchor_the_trail_and_catch_a_rewrite(
    tmp_path: Path, start_server: ServerFactory, make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    data = make_data(tmp_path)
    cli("init", "--dir", data.path, "--list", "national")
    cli("add", "--dir", data.path, "--list", "national", "casino.example", "block", "gambling")
    cli("publish", "--dir", data.path, "--list", "national", "--no-notify")
    server = start_server(data, "--admin-token-file", str(data.admin_token_file))
    daemon = synced_node(make_daemon, data, server, upstream)
    daemon.start()
    receipts = 'filterd_sync_receipts_total{list="national",result="sent"}'
    wait_until(lambda: daemon.metrics()[receipts] == 1)  # unsigned: no key registered yet
    assert daemon.stop() == 0
    config, trail = daemon.config_path, daemon.directory / "state" / "audit" / "audit.jsonl"

    # --- the node's key, registered like an operator's token
    shown = filterd("node-key", "show", "-c", config)
    assert shown.returncode == 0, shown.stderr
    public = shown.stdout.splitlines()[0]
    assert (daemon.directory / "state" / "node.pub").read_text().strip() == public
    add = ("node", "add", "--dir", data.path, "--operator", "vnpt-hanoi", "--node", "resolver-01")
    assert "registered" in cli(*add, "--key", public).stdout

    # --- receipts signed by the node carry its head
    published = data.history("national")[-1]
    receipt = Receipt("vnpt-hanoi", "resolver-01", "national", 1,
                      parse_time(published["published_at"], "t"), published["sha256"], 1,
                      "filterd 0.1.0")  # fmt: skip
    head = head_of(trail)
    state = daemon.directory / "state"
    document = signed_receipt(state, head, receipt)
    assert server.post_receipt("vnpt-hanoi", document) == 204

    refused = [
        (receipt.to_json(), 403, "unsigned receipt: node 'resolver-01' of 'vnpt-hanoi' has a"),
        (signed_receipt(tmp_path / "other-node", head, receipt), 403, "not signed by node"),
        (dict(document, serial=2), 403, "signature does not verify"),
        (document, 409, "replayed receipt"),
        (signed_receipt(state, head, receipt, now=utc_now() - timedelta(hours=1)), 409, "stale"),
    ]
    token = data.tokens["vnpt-hanoi"]
    for body, status, message in refused:
        got = server.request("POST", "/v1/receipts", token=token, body=json.dumps(body).encode())
        assert got[0] == status and message in got[2].decode(), (status, got[2])
        assert message in server.log
    stored = (data.path / "receipts.jsonl").read_text().splitlines()
    assert len(stored) == 2 and json.loads(stored[-1])["audit_head"]["seq"] == head.seq

    # --- the compliance view shows the signed receipt and the node's head
    status, _, page = server.request("GET", "/v1/compliance", token=data.admin_token)
    node = json.loads(page)["nodes"][0]
    assert status == 200 and node["signed"] is True
    assert node["audit_head"]["seq"] == head.seq and node["audit_head"]["hash"] == head.hash
    status, _, metrics = server.request("GET", "/metrics", token=data.admin_token)
    labels = 'list="national",node="resolver-01",operator="vnpt-hanoi"'
    assert status == 200
    assert f"filterd_authority_node_receipt_signed{{{labels}}} 1.0" in metrics.decode()
    assert 'filterd_authority_receipts_total{result="refused"} 5.0' in metrics.decode()
    assert server.request("GET", "/metrics")[0] == 401

    # --- a second run: records after the last anchor are not yet anchored
    daemon.start()
    assert daemon.stop() == 0
    anchors = tmp_path / "anchors.json"
    cli("heads", "--dir", data.path, "--operator", "vnpt-hanoi", "--node", "resolver-01",
        "-o", anchors)  # fmt: skip
    exported = json.loads(anchors.read_text())
    assert exported["public_key"] == public and len(exported["heads"]) == 1
    verified = filterd("audit", "verify", "-c", config, "--anchors", anchors)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    last = head_of(trail).seq
    lines = verified.stdout.splitlines()
    assert lines[0].startswith(f"ok: {last} records, seq 1..{last}")
    assert lines[1].startswith(f"anchored: seq 1..{head.seq} (1 anchors match; the last, seq")
    assert lines[2].startswith(f"not yet anchored: seq {head.seq + 1}..{last}")

    # --- a rewrite of an anchored record, head and all: only the anchor tells
    first_lists = next(
        decode_record(line)["seq"]
        for line in trail.read_bytes().splitlines()
        if decode_record(line)["event"] == "lists"
    )
    rewrite(trail, {"generation": 99}, first_lists)
    assert filterd("audit", "verify", "-c", config).returncode == 0
    caught = filterd("audit", "verify", "-c", config, "--anchors", anchors)
    assert caught.returncode == 1
    assert f"seq {head.seq} differs from anchor seq {head.seq}" in caught.stdout
    assert "altered since" in caught.stdout


def test_every_tampering_case_on_a_real_trail(
    tmp_path: Path, make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """The trail of a real run, tampered with in each way the issue lists; each
    is caught by ``filterd audit verify`` (or ``report --verify``) with a clear
    message, and a restart on a forged trail records what it found."""
    daemon = make_daemon(standard_config(upstream.endpoint, extra="audit: {stats_interval: 1}\n"))
    daemon.start()
    for _ in range(3):
        assert daemon.query("phishing.example.com").rcode() == dns.rcode.NXDOMAIN
    time.sleep(1.2)  # a periodic statistics record
    assert daemon.stop() == 0
    config = daemon.config_path
    audit = daemon.directory / "state" / "audit"
    trail = audit / "audit.jsonl"
    pristine = {path.name: path.read_bytes() for path in audit.iterdir()}
    lines = trail.read_bytes().splitlines(keepends=True)
    assert filterd("audit", "verify", "-c", config).returncode == 0

    def restore() -> None:
        for name, content in pristine.items():
            (audit / name).write_bytes(content)

    def verify(status: int, *words: str) -> str:
        result = filterd("audit", "verify", "-c", config)
        assert result.returncode == status, result.stdout + result.stderr
        for word in words:
            assert word in result.stdout, result.stdout
        return result.stdout

    def append(event: str, fields: dict[str, Any]) -> None:
        last = decode_record(lines[-1][:-1])
        moment = audit_time(last["time"]) + timedelta(seconds=1)
        line = encode_record(last["seq"] + 1, moment, event, fields, line_hash(lines[-1][:-1]))
        trail.write_bytes(b"".join(lines) + line + b"\n")

    # a single forged statistics record appended, head left alone: the run had stopped
    stats = next(decode_record(x[:-1]) for x in reversed(lines) if b'"event":"stats"' in x)
    forged = {k: v for k, v in stats.items() if k not in CHAIN}
    forged["blocked"] = [dict(row, count=500_000) for row in forged["blocked"]]
    append("stats", forged)
    verify(1, "stats record after the run that ended at seq")
    today = utc_now().date()
    window = [str(today - timedelta(days=1)), str(today + timedelta(days=1))]
    report = filterd("report", "--from", window[0], "--to", window[1], "-c", config)
    assert json.loads(report.stdout)["trail"]["ok"] is False
    assert "The audit trail does NOT verify" in json.loads(report.stdout)["trail"]["statement"]

    # a single forged, well-formed record appended, head left alone: never verified
    append("start", {"version": "0.1.0", "config": None, "node": "forged", "pid": 1})
    verify(3, "unverified: ", "nothing vouches for seq", "past the head")
    daemon.start()  # ... and a restart on it says so in the trail
    assert daemon.stop() == 0
    recover = next(
        decode_record(x) for x in trail.read_bytes().splitlines() if b'"event":"recover"' in x
    )
    assert recover["unvouched_seq"] == len(lines) + 1 and recover["unclean_stop"] is True
    verify(3, f"unverified: seq {len(lines) + 1}: past the head at start-up (recover record")

    # the head rewritten
    restore()
    head = json.loads((audit / "audit.head").read_text())
    (audit / "audit.head").write_text(json.dumps(dict(head, hash="0" * 64)))
    verify(1, f"last record seq {head['seq']} does not match the head (altered)")

    # truncation
    restore()
    trail.write_bytes(b"".join(lines[:-2]))
    verify(1, f"but the head names seq {len(lines)}", "removed (truncated)")

    # reorder
    restore()
    swapped = list(lines)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    trail.write_bytes(b"".join(swapped))
    verify(1, "seq 4 follows seq 2")

    # time going back, the chain and head redone to match
    restore()
    records = [decode_record(x[:-1]) for x in lines]
    earlier = audit_time(records[1]["time"]) - timedelta(hours=1)
    redone = [
        encode_record(1, audit_time(records[0]["time"]), records[0]["event"],
                      {k: v for k, v in records[0].items() if k not in CHAIN}, GENESIS)
    ]  # fmt: skip
    for record in records[1:]:
        moment = earlier if record["seq"] == 3 else audit_time(record["time"])
        fields = {k: v for k, v in record.items() if k not in CHAIN}
        redone.append(encode_record(record["seq"], moment, record["event"], fields,
                                    line_hash(redone[-1])))  # fmt: skip
    trail.write_bytes(b"".join(line + b"\n" for line in redone))
    last_head = {"seq": len(redone), "hash": line_hash(redone[-1]), "time": "x"}
    (audit / "audit.head").write_text(json.dumps(last_head))
    verify(1, ":3: time goes back", "with no clock_step record")

    # a forged report
    restore()
    assert filterd("node-key", "show", "-c", config).returncode == 0
    signed = tmp_path / "report.json"
    made = filterd("report", "--from", window[0], "--to", window[1], "-c", config, "-o", signed)
    assert made.returncode == 0 and made.stderr == "", made.stderr
    checked = filterd("report", "--verify", signed, "-c", config)
    assert checked.returncode == 0 and "signature ok" in checked.stdout, checked.stdout
    document = json.loads(signed.read_text())
    document["blocked"]["total"] += 500_000
    signed.write_text(json.dumps(document))
    checked = filterd("report", "--verify", signed, "-c", config)
    assert checked.returncode == 1
    assert "NOT verified: signature does not verify (altered after signing)" in checked.stdout
