"""Downloading one publication: the signed manifest, then the snapshot it names.

A snapshot is made from a delta when the manifest offers one from the serial
obtained here, and downloaded whole otherwise, or when the delta fails (a
missing, corrupt or wrong-base delta is a counted failure, then the full
snapshot is fetched in the same try). Either way the result is checked
against the manifest: its SHA-256 (``get_file`` for a whole snapshot, here
for one made from a delta) and its entry count. Nothing is persisted here;
``SyncClient`` stores what this returns.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from filterd.sync.fetch import Settings, get, get_file
from filterd.sync.model import (
    Manifest,
    SyncError,
    open_envelope,
    parse_manifest,
    publication_window,
    sha256_hex,
    utc_now,
)
from filterd.sync.snapshot import Delta, apply_delta, check_snapshot, parse_delta, snapshot_entries

MAX_MANIFEST_BYTES = 1 << 20


async def fetch_manifest(
    session: aiohttp.ClientSession, settings: Settings, list_id: str, headers: dict[str, str]
) -> tuple[Manifest | None, bytes, str]:
    """The verified manifest, its envelope and ETag; None on a 304."""
    code, envelope, etag = await get(
        session, settings, f"lists/{list_id}/manifest", MAX_MANIFEST_BYTES, headers
    )
    if code == 304:
        return None, b"", ""
    document = open_envelope(envelope, settings.public_key)
    manifest = parse_manifest(document, list_id)
    publication_window(manifest.published_at, utc_now())
    return manifest, envelope, etag


async def download(
    session: aiohttp.ClientSession,
    settings: Settings,
    manifest: Manifest,
    base_snapshot: Callable[[], bytes],
    base_serial: int | None,
    delta_failed: Callable[[SyncError], None],
) -> tuple[bytes, Delta | None]:
    """The manifest's snapshot, and the delta it was made from (None: whole).

    ``base_snapshot`` reads the snapshot of ``base_serial`` kept here;
    ``delta_failed`` hears of a delta that could not be used, before the
    whole snapshot is fetched instead."""
    config = settings.config
    if manifest.entries > config.max_entries:
        raise SyncError("size", f"{manifest.entries} entries, limit {config.max_entries}")
    ref = manifest.delta_from(base_serial) if base_serial is not None else None
    if ref is not None:
        try:
            raw = await get_file(session, settings, ref, config.max_delta_bytes)
            delta = parse_delta(raw, ref.base, manifest.serial)
            snapshot = apply_delta(base_snapshot(), delta)
            if sha256_hex(snapshot) != manifest.snapshot.sha256:
                raise SyncError(
                    "delta",
                    f"delta from {ref.base} does not give the published snapshot (wrong base)",
                )
        except SyncError as exc:
            delta_failed(exc)
        else:
            _check_entries(snapshot, manifest)
            return snapshot, delta
    snapshot = await get_file(session, settings, manifest.snapshot, config.max_snapshot_bytes)
    check_snapshot(snapshot, config.max_entries)
    _check_entries(snapshot, manifest)
    return snapshot, None


def _check_entries(snapshot: bytes, manifest: Manifest) -> None:
    if snapshot_entries(snapshot) != manifest.entries:
        raise SyncError(
            "manifest", f"{snapshot_entries(snapshot)} entries, manifest says {manifest.entries}"
        )
