"""Protocol documents: envelopes, manifests, canonical snapshots and deltas."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.sync.model import (
    FileRef,
    Manifest,
    SyncError,
    load_public_key,
    open_envelope,
    parse_manifest,
    public_key_text,
    seal,
    sha256_hex,
)
from filterd.sync.snapshot import (
    Delta,
    Entry,
    apply_delta,
    check_snapshot,
    diff,
    make_entry,
    parse_delta,
    serialize_snapshot,
)

KEY = Ed25519PrivateKey.generate()
PUBLIC = load_public_key(public_key_text(KEY.public_key()))


def manifest(serial: int = 7) -> Manifest:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    return Manifest(
        "national",
        serial,
        now,
        now,
        2,
        FileRef("s/7.gz", "a" * 64, 10),
        (FileRef("d/6-7.gz", "b" * 64, 5, base=6),),
    )


def test_envelope_round_trip_and_tampering() -> None:
    sealed = seal(manifest().to_json(), KEY)
    assert parse_manifest(open_envelope(sealed, PUBLIC), "national") == manifest()
    envelope = json.loads(sealed)
    forged = dict(envelope, payload=envelope["payload"][:-4] + "AAA=")
    with pytest.raises(SyncError) as caught:
        open_envelope(json.dumps(forged).encode(), PUBLIC)
    assert caught.value.reason in ("signature", "json")
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SyncError) as caught:
        open_envelope(seal(manifest().to_json(), other), PUBLIC)
    assert caught.value.reason == "key"
    with pytest.raises(SyncError) as caught:
        open_envelope(b"{not json", PUBLIC)
    assert caught.value.reason == "json"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"list": "province-hn"}, "manifest"),
        ({"serial": 0}, "manifest"),
        ({"serial": "7"}, "manifest"),
        ({"version": 2}, "manifest"),
        ({"published_at": "yesterday"}, "manifest"),
        ({"snapshot": {"path": "../etc/passwd", "sha256": "a" * 64, "size": 1}}, "manifest"),
    ],
)
def test_manifest_validation(change: dict[str, object], reason: str) -> None:
    document = {**manifest().to_json(), **change}
    with pytest.raises(SyncError) as caught:
        parse_manifest(document, "national")
    assert caught.value.reason == reason


def test_entries_are_canonical() -> None:
    entry = make_entry("Casino.Example.NET.", "BLOCK", "Gambling", "QĐ-123/2026  ngày 01/02")
    assert entry.line() == "casino.example.net block gambling QĐ-123/2026 ngày 01/02".encode()
    with pytest.raises(ValueError, match="kind"):
        make_entry("x.example", "deny")
    snapshot = serialize_snapshot([entry, make_entry("a.example", "allow")])
    check_snapshot(snapshot, 10)
    assert snapshot.splitlines()[0] == b"#filterd-list 1"
    with pytest.raises(SyncError, match="order"):
        check_snapshot(b"#filterd-list 1\nb.example block - -\na.example block - -\n", 10)
    with pytest.raises(SyncError, match="canonical"):
        check_snapshot(b"#filterd-list 1\nB.example block - -\n", 10)
    with pytest.raises(SyncError) as caught:
        check_snapshot(snapshot, 1)
    assert caught.value.reason == "size"


names = st.sampled_from([f"n{i}.example" for i in range(40)])
kinds = st.sampled_from(["block", "block-exact", "allow"])
entry_sets = st.dictionaries(names, kinds, max_size=40)


@settings(max_examples=200, deadline=None)
@given(base=entry_sets, target=entry_sets)
def test_delta_applied_to_base_gives_target(base: dict[str, str], target: dict[str, str]) -> None:
    old = {e.name: e for e in (make_entry(n, k, "c") for n, k in base.items())}
    new = {e.name: e for e in (make_entry(n, k, "c") for n, k in target.items())}
    delta = diff(old, new, (1, 2))
    parsed = parse_delta(delta.serialize(), 1, 2)
    assert parsed == delta
    result = apply_delta(serialize_snapshot(old.values()), parsed)
    assert result == serialize_snapshot(new.values())
    assert sha256_hex(result) == sha256_hex(serialize_snapshot(new.values()))


def test_delta_against_the_wrong_base_is_refused() -> None:
    base = serialize_snapshot([make_entry("a.example", "block")])
    delta = Delta(1, 2, (b"zzz.example",), ())
    with pytest.raises(SyncError) as caught:
        apply_delta(base, delta)
    assert caught.value.reason == "delta"
    with pytest.raises(SyncError, match="header"):
        parse_delta(delta.serialize(), 5, 6)


def test_large_delta_touches_only_what_changes() -> None:
    entries = [Entry(f"name{i:07d}.example".encode()) for i in range(200_000)]
    base = serialize_snapshot(entries)
    delta = Delta(
        1,
        2,
        (entries[5].name, entries[150_000].name),
        (Entry(b"name0000100.example", b"allow"), Entry(b"zzz.example")),
    )
    result = apply_delta(base, delta)
    lines = result.split(b"\n")
    assert len(lines) == len(base.split(b"\n")) - 1  # two removed, one replaced, one added
    assert b"name0000100.example allow - -" in lines and lines[-2] == b"zzz.example block - -"
    assert b"name0000005.example block - -" not in lines
