"""The operator side of authority sync: pull, verify, persist, apply, acknowledge.

One ``SyncClient`` per daemon, in the supervisor (never on the query path),
with one supervised task per synced list. Each task pulls on an interval
with jitter, or at once when a verified push notification arrives, and runs
the procedure of docs/sync-protocol.md: conditional GET of the manifest,
signature and field checks, serial monotonicity (a lower serial is a rollback
or a replay and is refused), delta or snapshot download with size limits
enforced while reading, hash and syntax checks, then persistence and
``apply`` (the supervisor's compile-and-swap). Only after all of it succeeds
is the receipt sent. Any failure leaves the enforced list as it was, is
counted under a bounded reason and logged in one line, and backs off.

Every applied serial and every refused update is also handed to
``on_event`` (the supervisor passes the audit trail's), as plain fields:
this room decides what happened, not where it is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from filterd import __version__
from filterd.config import SyncConfig
from filterd.errors import StartupError
from filterd.sync import store
from filterd.sync.model import (
    Delta,
    FileRef,
    Manifest,
    Receipt,
    SyncError,
    apply_delta,
    check_snapshot,
    format_time,
    load_public_key,
    open_envelope,
    parse_delta,
    parse_manifest,
    parse_notify,
    publication_window,
    sha256_hex,
    snapshot_entries,
    utc_now,
)

log = logging.getLogger("filterd.sync")

MAX_MANIFEST_BYTES: Final = 1 << 20
READ_CHUNK: Final = 64 * 1024

Apply = Callable[[str, Delta | None], Awaitable[bool]]
"""Swap in the persisted list ``ID``, which changed by the delta given (None:
a whole new snapshot); True on success. The supervisor's."""

EventSink = Callable[[str, dict[str, Any]], None]
"""Receives ``(event, fields)``: ``sync_applied`` and ``sync_rejected`` (docs/audit.md)."""


def _no_events(event: str, fields: dict[str, Any]) -> None:
    pass


@dataclass(slots=True)
class ListStatus:
    """What the metrics and the log say about one synced list."""

    list_id: str
    serial: int = 0
    authority_serial: int = 0
    entries: int = 0
    published_at: float = 0.0
    applied_at: float = 0.0
    expires_at: float = 0.0
    last_success: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0})
    notifies: int = 0

    @property
    def lag(self) -> float:
        """Seconds from publication to enforcement of the serial in force."""
        return self.applied_at - self.published_at if self.applied_at else 0.0


class SyncClient:
    def __init__(
        self,
        config: SyncConfig,
        state_dir: Path,
        list_ids: list[str],
        apply: Apply,
        on_event: EventSink = _no_events,
    ) -> None:
        self._config = config
        self._state_dir = state_dir
        self._apply = apply
        self._on_event = on_event
        self._public_key = load_public_key(config.public_key)
        self._lists = list_ids
        self.status = {list_id: ListStatus(list_id) for list_id in list_ids}
        self._wake = {list_id: asyncio.Event() for list_id in list_ids}
        self._etags: dict[str, str] = {}
        self._first_success = {list_id: asyncio.Event() for list_id in list_ids}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        for list_id in list_ids:
            persisted = store.load_state(state_dir, list_id)
            if persisted is not None:
                self._restore(list_id, persisted)

    # ------------------------------------------------------------- lifecycle

    def has_snapshot(self, list_id: str) -> bool:
        """Is a verified snapshot persisted (possibly just now, before it is applied)?"""
        return store.snapshot_path(self._state_dir, list_id).exists()

    async def wait_first(self, list_id: str) -> None:
        await self._first_success[list_id].wait()

    def start(self) -> None:
        token = self._config.token_file.read_text().strip() if self._config.token_file else ""
        context: ssl.SSLContext | bool = True
        config = self._config
        if config.ca_file is not None or config.client_cert is not None:
            context = ssl.create_default_context(
                cafile=str(config.ca_file) if config.ca_file else None
            )
            try:
                if config.client_cert is not None:  # mutual TLS
                    context.load_cert_chain(str(config.client_cert), str(config.client_key))
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(
                    f"sync: client certificate {config.client_cert} or key "
                    f"{config.client_key}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
        # Files are gzip by themselves (never Content-Encoding): ask proxies not
        # to add an encoding, and never inflate before the size limits are checked.
        self._session = aiohttp.ClientSession(
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"filterd/{__version__}",
                "Accept-Encoding": "identity",
            },
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            connector=aiohttp.TCPConnector(ssl=context, limit=4),
        )
        loop = asyncio.get_running_loop()
        for list_id in self._lists:
            task = loop.create_task(self._run(list_id), name=f"sync-{list_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def notify(self, raw: bytes) -> str:
        """A push notification (envelope); raises ``SyncError`` if it does not verify.

        Returns the list id; the pull happens in that list's task."""
        message = parse_notify(open_envelope(raw, self._public_key))
        if message.list_id not in self.status:
            raise SyncError("manifest", f"notification for unknown list {message.list_id!r}")
        status = self.status[message.list_id]
        status.notifies += 1
        if message.serial > status.serial:
            self._wake[message.list_id].set()
        return message.list_id

    # ------------------------------------------------------------------ loop

    async def _run(self, list_id: str) -> None:
        failures = 0
        while True:
            try:
                await self.pull(list_id)
                failures = 0
                self._send_receipt_later(list_id)
            except SyncError as exc:
                failures += 1
                status = self.status[list_id]
                status.failures[exc.reason] = status.failures.get(exc.reason, 0) + 1
                log.error(
                    "sync %s failed (%s): %s; still enforcing serial %d",
                    list_id,
                    exc.reason,
                    exc,
                    status.serial,
                )
                self._on_event(
                    "sync_rejected",
                    {
                        "list": list_id,
                        "reason": exc.reason,
                        "message": str(exc),
                        "enforced_serial": status.serial,
                        "authority_serial": status.authority_serial,
                    },
                )
            await self._sleep(list_id, failures)

    async def _sleep(self, list_id: str, failures: int) -> None:
        interval = self._config.interval
        if failures:
            interval = min(interval, interval / 10 * 2 ** (failures - 1))
        interval *= 1 + random.uniform(-self._config.jitter, self._config.jitter)
        wake = self._wake[list_id]
        try:
            async with asyncio.timeout(interval):
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()

    # ------------------------------------------------------------------ pull

    async def pull(self, list_id: str) -> bool:
        """One sync of ``list_id``; True if a new serial was applied."""
        async with self._lock:
            return await self._pull(list_id)

    async def _pull(self, list_id: str) -> bool:
        status = self.status[list_id]
        envelope = await self._fetch_manifest(list_id)
        if envelope is None:
            status.last_success = time.time()
            return False
        manifest = parse_manifest(open_envelope(envelope, self._public_key), list_id)
        publication_window(manifest.published_at, utc_now())
        if manifest.serial < status.serial:
            raise SyncError(
                "rollback",
                f"manifest serial {manifest.serial} is older than "
                f"the enforced {status.serial} (rollback or replay)",
            )
        status.authority_serial = max(status.authority_serial, manifest.serial)
        if manifest.serial == status.serial:
            status.last_success = time.time()
            return False
        if manifest.entries > self._config.max_entries:
            raise SyncError("size", f"{manifest.entries} entries, limit {self._config.max_entries}")
        snapshot, delta = await self._new_snapshot(list_id, manifest, status.serial)
        applied_at = utc_now()
        state = store.SyncedState(
            serial=manifest.serial,
            published_at=format_time(manifest.published_at),
            expires_at=format_time(manifest.expires_at),
            applied_at=format_time(applied_at),
            sha256=manifest.snapshot.sha256,
            entries=manifest.entries,
        )
        store.save(self._state_dir, list_id, snapshot, envelope, state)
        if not await self._apply(list_id, delta):
            raise SyncError(
                "apply", f"serial {manifest.serial} could not be compiled or swapped in"
            )
        self._restore(list_id, state)
        status.last_success = time.time()
        self._first_success[list_id].set()
        self._on_event(
            "sync_applied",
            {
                "list": list_id,
                "serial": manifest.serial,
                "sha256": manifest.snapshot.sha256,
                "entries": manifest.entries,
                "published_at": state.published_at,
                "applied_at": state.applied_at,
                "lag_seconds": status.lag,
                "lag_sla_seconds": self._config.lag_sla,
                "via": "delta" if delta is not None else "snapshot",
            },
        )
        log.info(
            "sync %s: serial %d enforced (%d entries), %.1f s after publication",
            list_id,
            manifest.serial,
            manifest.entries,
            status.lag,
        )
        return True

    async def _new_snapshot(
        self, list_id: str, manifest: Manifest, enforced: int
    ) -> tuple[bytes, Delta | None]:
        """The new canonical snapshot, from a delta when one starts at ``enforced``
        (returned too, so the change can be applied without a full compile)."""
        delta: Delta | None = None
        delta_ref = manifest.delta_from(enforced) if enforced else None
        if delta_ref is not None:
            raw = await self._fetch_file(delta_ref, self._config.max_delta_bytes)
            delta = parse_delta(raw, delta_ref.base, manifest.serial)
            snapshot = apply_delta(store.load_snapshot(self._state_dir, list_id), delta)
            if sha256_hex(snapshot) != manifest.snapshot.sha256:
                raise SyncError(
                    "delta",
                    f"delta from {enforced} does not give the published snapshot (wrong base)",
                )
        else:
            snapshot = await self._fetch_file(manifest.snapshot, self._config.max_snapshot_bytes)
            check_snapshot(snapshot, self._config.max_entries)
        if snapshot_entries(snapshot) != manifest.entries:
            raise SyncError(
                "manifest",
                f"{snapshot_entries(snapshot)} entries, manifest says {manifest.entries}",
            )
        return snapshot, delta

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str) -> str:
        assert self._config.url is not None
        return self._config.url + path

    async def _fetch_manifest(self, list_id: str) -> bytes | None:
        headers = {}
        if list_id in self._etags:
            headers["If-None-Match"] = self._etags[list_id]
        status, body, etag = await self._get(
            f"lists/{list_id}/manifest", MAX_MANIFEST_BYTES, headers
        )
        if status == 304:
            return None
        if etag:
            self._etags[list_id] = etag
        return body

    async def _fetch_file(self, ref: FileRef, limit: int) -> bytes:
        """Download ``ref`` (gzip), check its uncompressed size and SHA-256."""
        if ref.size > limit:
            raise SyncError("size", f"{ref.path}: {ref.size} bytes announced, limit {limit}")
        _, compressed, _ = await self._get(ref.path, limit, {})
        inflater = zlib.decompressobj(wbits=31)
        try:
            data = inflater.decompress(compressed, ref.size + 1)
        except zlib.error:
            raise SyncError("truncated", f"{ref.path}: not a gzip stream") from None
        if len(data) > ref.size or inflater.unconsumed_tail:
            raise SyncError("size", f"{ref.path}: more than the {ref.size} bytes announced")
        if not inflater.eof:
            raise SyncError("truncated", f"{ref.path}: gzip stream cut short")
        if len(data) != ref.size or sha256_hex(data) != ref.sha256:
            raise SyncError("hash", f"{ref.path}: SHA-256 or size differs from the manifest")
        return data

    async def _get(self, path: str, limit: int, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """GET with the whole exchange bounded by ``sync.timeout`` and the body
        by ``limit`` bytes (counted while reading: an endless or slow body is
        cut, never buffered)."""
        assert self._session is not None
        try:
            async with self._session.get(self._url(path), headers=headers) as response:
                if response.status == 304:
                    return 304, b"", ""
                if response.status != 200:
                    raise SyncError("http", f"GET {path}: HTTP {response.status}")
                if (response.content_length or 0) > limit:
                    raise SyncError(
                        "size", f"GET {path}: {response.content_length} bytes, limit {limit}"
                    )
                chunks = []
                size = 0
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise SyncError("size", f"GET {path}: body over {limit} bytes")
                    chunks.append(chunk)
                return 200, b"".join(chunks), response.headers.get("ETag", "")
        except TimeoutError:
            raise SyncError(
                "timeout", f"GET {path}: no complete answer in {self._config.timeout:g} s"
            ) from None
        except aiohttp.ClientPayloadError:
            raise SyncError("truncated", f"GET {path}: body cut short") from None
        except aiohttp.ClientError as exc:
            raise SyncError("network", f"GET {path}: {exc}") from None

    # --------------------------------------------------------------- receipts

    def _send_receipt_later(self, list_id: str) -> None:
        persisted = store.load_state(self._state_dir, list_id)
        if persisted is None or persisted.receipt_sent:
            return
        task = asyncio.get_running_loop().create_task(self._send_receipt(list_id, persisted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_receipt(self, list_id: str, persisted: store.SyncedState) -> None:
        """POST the receipt; a failure is retried after the next pull."""
        assert self._session is not None
        receipt = Receipt(
            operator=self._config.operator,
            node=self._config.node,
            list_id=list_id,
            serial=persisted.serial,
            applied_at=datetime.fromisoformat(persisted.applied_at.replace("Z", "+00:00")),
            sha256=persisted.sha256,
            entries=persisted.entries,
            software=f"filterd {__version__}",
        )
        counts = self.status[list_id].receipts
        try:
            async with self._session.post(self._url("receipts"), json=receipt.to_json()) as answer:
                if answer.status not in (200, 201, 202, 204):
                    raise SyncError("http", f"receipt: HTTP {answer.status}")
        except (SyncError, aiohttp.ClientError, TimeoutError) as exc:
            counts["failed"] += 1
            log.warning(
                "sync %s: receipt for serial %d not delivered: %s", list_id, persisted.serial, exc
            )
            return
        counts["sent"] += 1
        store.save(self._state_dir, list_id, None, None, replace(persisted, receipt_sent=True))

    # ----------------------------------------------------------------- state

    def _restore(self, list_id: str, persisted: store.SyncedState) -> None:
        status = self.status[list_id]
        status.serial = persisted.serial
        status.authority_serial = max(status.authority_serial, persisted.serial)
        status.entries = persisted.entries
        status.published_at = _epoch(persisted.published_at)
        status.applied_at = _epoch(persisted.applied_at)
        status.expires_at = _epoch(persisted.expires_at)
        self._first_success[list_id].set()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
