"""Audit heads anchored at the authority, end to end, with real processes.

A real node (``filterd run``) syncs from a real ``filterd authority serve``
and writes its audit trail; its key (``filterd node-key show``) is
registered at the authority (``filterd authority node add``); receipts
signed with it carry the node's audit head. Then every tampering case the
authority and the anchors must catch, each with its message: an unsigned
receipt, one signed by another node, an altered one, a replayed one, a stale
one; and a trail rewritten together with its head, which the files alone
cannot reveal but the heads exported by the authority do.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from filterd.audit.anchor import signed_receipt
from filterd.audit.chain import GENESIS, decode_record, encode_record, head_path, line_hash
from filterd.audit.chain import parse_time as audit_time
from filterd.sync.model import AuditHead, Receipt, parse_time, utc_now
from tests.integration.conftest import DaemonFactory, synced_node
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
