"""The data directory: keys, operators and tokens, staging edits, publication.

The publication tests replay a random edit history and check, after every
publish, what an operator relies on: the manifest verifies with the public
key, every file it names exists with the announced SHA-256 and size of the
uncompressed content, every delta applied to its base snapshot gives the
new snapshot exactly, and nothing outside ``keep`` is left behind.
"""

from __future__ import annotations

import gzip
import json
import random
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from filterd.authority.operators import hash_token
from filterd.authority.records import AuthorityError
from filterd.authority.store import Store
from filterd.sync.model import Receipt, open_envelope, parse_manifest, sha256_hex
from filterd.sync.snapshot import (
    Entry,
    apply_delta,
    check_snapshot,
    diff,
    make_entry,
    parse_delta,
    parse_entry,
    serialize_snapshot,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data")
    store.generate_key()
    store.init_list("national")
    return store


def read_file(store: Store, path: str) -> bytes:
    """A file named by a manifest path (relative to the /v1/ base), uncompressed."""
    return gzip.decompress((store.root / path).read_bytes())


def check_published(store: Store, list_id: str, snapshots: dict[int, bytes]) -> None:
    served = store.manifest(list_id)
    assert served is not None
    envelope, manifest = served
    assert parse_manifest(open_envelope(envelope, store.public_key()), list_id) == manifest
    snapshot = read_file(store, manifest.snapshot.path)
    assert snapshot == snapshots[manifest.serial]
    assert (sha256_hex(snapshot), len(snapshot)) == (
        manifest.snapshot.sha256,
        manifest.snapshot.size,
    )
    check_snapshot(snapshot, 10**6)
    assert manifest.entries == snapshot.count(b"\n") - 1
    for ref in manifest.deltas:
        text = read_file(store, ref.path)
        assert (sha256_hex(text), len(text)) == (ref.sha256, ref.size)
        delta = parse_delta(text, ref.base, manifest.serial)
        assert apply_delta(snapshots[ref.base], delta) == snapshot
        # Minimal, whether computed line by line or rebased on the newest delta.
        serials = (ref.base, manifest.serial)
        assert delta == diff(entries(snapshots[ref.base]), entries(snapshot), serials)


def entries(snapshot: bytes) -> dict[bytes, Entry]:
    return {e.name: e for e in map(parse_entry, snapshot.split(b"\n")[1:-1])}


def test_key_files_and_refusal_to_overwrite(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    public = store.generate_key()
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600
    assert store.public_key().public_bytes_raw() == public.public_bytes_raw()
    assert store.private_key().public_key().public_bytes_raw() == public.public_bytes_raw()
    with pytest.raises(AuthorityError, match="pin"):
        store.generate_key()
    replaced = store.generate_key(force=True)
    assert replaced.public_bytes_raw() != public.public_bytes_raw()


def test_publish_history_deltas_and_pruning(store: Store) -> None:
    rng = random.Random(20261123)
    names = [f"site{i}.example" for i in range(60)]
    kinds = ["block", "block-exact", "block-below", "allow", "allow-exact"]
    snapshots: dict[int, bytes] = {}
    keep = 3
    for serial in range(1, 9):
        for _ in range(rng.randint(0, 12)):
            name = rng.choice(names)
            if rng.random() < 0.3 and f"\n{name} ".encode() in store.staging("national"):
                store.remove_entry("national", name)
            else:
                ref = rng.choice(["-", "QĐ-123/2026 ngày 01/02/2026", f"decision {serial}"])
                entry = make_entry(name, rng.choice(kinds), rng.choice(["-", "gambling"]), ref)
                store.add_entry("national", entry)
        published = store.publish("national", keep=keep, now=NOW + timedelta(hours=serial))
        manifest = published.manifest
        assert manifest.serial == serial
        assert manifest.published_at == NOW + timedelta(hours=serial)
        assert manifest.expires_at == manifest.published_at + timedelta(days=7)
        snapshots[serial] = store.staging("national")
        assert [d.base for d in manifest.deltas] == list(
            range(serial - 1, max(0, serial - 1 - keep), -1)
        )
        check_published(store, "national", snapshots)
        kept = set(range(max(1, serial - keep), serial + 1))
        on_disk = {int(p.name[:-3]) for p in (store.list_dir("national") / "snapshots").iterdir()}
        assert on_disk == kept
        for path in (store.list_dir("national") / "deltas").iterdir():
            base, target = map(int, path.name[:-3].split("-"))
            assert {base, target} <= kept
    history = store.history("national")
    assert [p.serial for p in history] == list(range(1, 9))
    assert [p.sha256 for p in history] == [sha256_hex(snapshots[s]) for s in range(1, 9)]


def test_unchanged_publication_gets_a_new_serial(store: Store) -> None:
    store.add_entry("national", make_entry("casino.example", "block", "gambling"))
    first = store.publish("national", now=NOW)
    second = store.publish("national", now=NOW + timedelta(minutes=1))
    assert not first.unchanged and second.unchanged
    assert second.manifest.serial == 2
    delta = read_file(store, second.manifest.deltas[0].path)
    assert delta == b"#filterd-delta 1 from=1 to=2\n"


def test_keep_zero_publishes_snapshot_only(store: Store) -> None:
    store.publish("national", now=NOW)
    manifest = store.publish("national", keep=0, now=NOW).manifest
    assert manifest.deltas == ()
    assert [p.name for p in (store.list_dir("national") / "snapshots").iterdir()] == ["2.gz"]


def test_serial_never_goes_back_when_history_is_torn(store: Store) -> None:
    store.publish("national", now=NOW)
    store.publish("national", now=NOW)
    history = store.history_path("national")
    history.write_bytes(history.read_bytes()[:-20])  # a crash cut the last line short
    assert [p.serial for p in store.history("national")] == [1]
    assert store.publish("national", now=NOW).manifest.serial == 3
    assert [p.serial for p in store.history("national")] == [1, 3]


def test_staging_edits(store: Store) -> None:
    assert not store.add_entry("national", make_entry("Casino.Example.", "block", "gambling"))
    assert store.add_entry("national", make_entry("casino.example", "block-exact", "-", "QĐ 1"))
    store.add_entry("national", make_entry("bücher.example", "allow"))
    assert store.staging("national") == serialize_snapshot(
        [
            make_entry("casino.example", "block-exact", "-", "QĐ 1"),
            make_entry("bücher.example", "allow"),
        ]
    )
    assert store.remove_entry("national", "CASINO.example") == b"casino.example"
    with pytest.raises(AuthorityError, match="not in list"):
        store.remove_entry("national", "casino.example")
    with pytest.raises(AuthorityError, match="no list"):
        store.staging("province-hn")
    with pytest.raises(AuthorityError, match="list id"):
        store.init_list("../escape")
    with pytest.raises(AuthorityError, match="exists"):
        store.init_list("national")


def test_invalid_staging_is_not_published(store: Store) -> None:
    store.staging_path("national").write_bytes(
        b"#filterd-list 1\nb.example block - -\na.example block - -\n"
    )
    with pytest.raises(AuthorityError, match="not canonical"):
        store.publish("national")
    assert store.manifest("national") is None


def test_publish_needs_the_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.init_list("national")
    with pytest.raises(AuthorityError, match="keygen"):
        store.publish("national")


def test_tokens_are_stored_hashed_and_compared_in_full(store: Store) -> None:
    token = store.operators.add("vnpt-hanoi", ["http://192.0.2.10:9553"])
    other = store.operators.add("viettel", [])
    text = store.operators.path.read_text()
    assert token not in text and other not in text
    assert json.loads(text)["vnpt-hanoi"] == {
        "token_sha256": hash_token(token),
        "notify": ["http://192.0.2.10:9553"],
    }
    assert store.operators.authenticate(token) == "vnpt-hanoi"
    assert store.operators.authenticate(other) == "viettel"
    assert store.operators.authenticate(token[:-1]) is None
    assert store.operators.authenticate(hash_token(token)) is None  # the stored hash is not a token
    assert store.operators.authenticate("") is None
    renewed = store.operators.new_token("vnpt-hanoi")
    assert (
        store.operators.authenticate(token) is None
        and store.operators.authenticate(renewed) == "vnpt-hanoi"
    )
    store.operators.remove("viettel")
    assert store.operators.authenticate(other) is None
    with pytest.raises(AuthorityError, match="exists"):
        store.operators.add("vnpt-hanoi", [])
    with pytest.raises(AuthorityError, match="operator id"):
        store.operators.add("Bad Id", [])
    with pytest.raises(AuthorityError, match="notify URL"):
        store.operators.add("fpt", ["ftp://x"])


def test_receipts_round_trip_and_survive_a_torn_line(store: Store) -> None:
    receipt = Receipt("viettel", "r1", "national", 3, NOW, "a" * 64, 10, "filterd 0.1.0")
    store.append_receipt(receipt, "viettel", NOW)
    with store.receipts_path.open("ab") as out:
        out.write(b'{"type": "filterd-rec')  # a crash in the middle of a line
    store.append_receipt(receipt, "viettel", NOW + timedelta(seconds=5))
    records = list(store.receipts())
    assert [r.received_at for r in records] == [NOW, NOW + timedelta(seconds=5)]
    assert all(r.receipt == receipt and r.authenticated_operator == "viettel" for r in records)


def test_what_serve_reads_is_group_readable_and_the_key_is_not(store: Store) -> None:
    """``serve`` may run as another account than the publisher (docs/authority.md)."""
    store.operators.add("vnpt-hanoi", [])
    store.add_entry("national", make_entry("casino.example", "block", "gambling", "QD-1"))
    store.publish("national")
    store.add_entry("national", make_entry("games.example", "block", "games", "QD-2"))
    store.publish("national")
    served = [store.operators.path, store.manifest_path("national")]
    served += list((store.list_dir("national") / "snapshots").iterdir())
    served += list((store.list_dir("national") / "deltas").iterdir())
    for path in served:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    for sub in ("snapshots", "deltas"):
        directory = store.list_dir("national") / sub
        assert stat.S_IMODE(directory.stat().st_mode) & 0o050 == 0o050, directory
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.staging_path("national").stat().st_mode) == 0o600
