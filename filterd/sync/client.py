"""The operator side of authority sync: pull, verify, persist, install, acknowledge.

One ``SyncClient`` per authority, in the supervisor (never on the query
path), with one supervised task per synced list. Each task pulls on an
interval with jitter, or at once when a verified push notification arrives,
and runs the procedure of docs/sync-protocol.md: manifest, signature and
field checks, serial monotonicity (a lower serial is a rollback or a replay
and is refused), expiry, delta or snapshot download with size limits
enforced while reading, hash and syntax checks, persistence, then
``install`` (the supervisor's compile-and-swap or overlay).

What this room reports is what the workers serve, never what was merely
downloaded. Three states are kept apart per list:

- *obtained*: the newest verified snapshot on disk (``store.load_state``);
- *enforced*: what every worker serves, set only by the supervisor through
  ``enforced()`` after an install committed everywhere; metrics, receipts
  and the ``sync_applied`` audit record are made from it alone;
- *checked*: when the authority's current manifest was last verified to be
  the enforced one (``last_success``, persisted across restarts).

So a pull is a success only when the enforced serial and hash equal the
manifest's. Anything short of that (a failed download, a failed install, a
fork) is a counted failure that is retried with backoff until it is
reached; a conditional GET is sent only for a manifest already enforced, so
a 304 can never hide an update that has not been installed.

Every applied serial and every refused update is also handed to
``on_event`` (the supervisor passes the audit trail's), as plain fields:
this room decides what happened, not where it is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from filterd import __version__
from filterd.config import SyncConfig
from filterd.errors import FilterdError
from filterd.sync import store
from filterd.sync.download import download, fetch_manifest
from filterd.sync.fetch import Settings
from filterd.sync.model import (
    Manifest,
    Receipt,
    SyncError,
    format_time,
    open_envelope,
    parse_notify,
    utc_now,
)
from filterd.sync.snapshot import Delta
from filterd.sync.status import ListStatus
from filterd.sync.store import SyncedState

log = logging.getLogger("filterd.sync")

FIRST_RETRY: Final = 5.0
"""Seconds before the first retry after a failed pull (at most interval/10)."""
SESSION_GRACE: Final = 1.0
"""Seconds past ``sync.timeout`` before a replaced session is closed."""


@dataclass(frozen=True, slots=True)
class Change:
    """A newly obtained serial, handed to the supervisor to install: the
    delta that made it from ``base`` (None: a whole snapshot), so that the
    supervisor can apply it as an overlay when ``base`` is what it serves."""

    list_id: str
    state: SyncedState
    delta: Delta | None = None
    base: SyncedState | None = None


Install = Callable[[Change], Awaitable[None]]
"""Install the obtained list on every worker; raises ``SyncError('apply')``.
The supervisor calls ``SyncClient.enforced`` once it is installed."""

EventSink = Callable[[str, dict[str, Any]], None]
"""Receives ``(event, fields)``: ``sync_applied`` and ``sync_rejected`` (docs/audit.md)."""

Sign = Callable[[Receipt], dict[str, Any]]
"""Turns a receipt into the document to POST: the supervisor's signs it with
the node key and adds the audit head (filterd/audit/anchor.py)."""


def _no_events(event: str, fields: dict[str, Any]) -> None:
    pass


def _unsigned(receipt: Receipt) -> dict[str, Any]:
    return receipt.to_json()


class SyncClient:
    def __init__(
        self,
        config: SyncConfig,
        state_dir: Path,
        list_ids: list[str],
        install: Install,
        on_event: EventSink = _no_events,
        sign: Sign = _unsigned,
    ) -> None:
        self._settings = Settings.load(config)
        self._state_dir = state_dir
        self._install = install
        self._on_event = on_event
        self._sign = sign
        self._lists = list_ids
        self.status = {
            list_id: ListStatus(list_id, last_success=store.load_last_success(state_dir, list_id))
            for list_id in list_ids
        }
        self._obtained = {list_id: store.load_state(state_dir, list_id) for list_id in list_ids}
        self._enforced: dict[str, SyncedState | None] = dict.fromkeys(list_ids)
        self._record = {list_id: store.load_enforced(state_dir, list_id) for list_id in list_ids}
        """The last enforced record on disk: ``applied_at`` and the receipt
        carry over when the same serial is enforced again after a restart."""
        self._wake = {list_id: asyncio.Event() for list_id in list_ids}
        self._etags: dict[str, tuple[str, int, str]] = {}
        """ETag of a manifest, with the serial and hash it validated."""
        self._first = {list_id: asyncio.Event() for list_id in list_ids}
        for list_id, obtained in self._obtained.items():
            if obtained is not None:
                self._first[list_id].set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._sending: set[str] = set()
        self._retired: set[aiohttp.ClientSession] = set()

    # ------------------------------------------------------------- lifecycle

    @property
    def config(self) -> SyncConfig:
        return self._settings.config

    def obtained(self, list_id: str) -> SyncedState | None:
        """The newest verified snapshot on disk (possibly not yet installed)."""
        return self._obtained[list_id]

    async def wait_first(self, list_id: str) -> None:
        await self._first[list_id].wait()

    def start(self) -> None:
        self._session = self._settings.session()
        loop = asyncio.get_running_loop()
        for list_id in self._lists:
            self._keep(loop.create_task(self._run(list_id), name=f"sync-{list_id}"))

    def reconfigure(self, settings: Settings) -> None:
        """Use new settings (a reload) from the next request on; a pull in
        progress finishes on the old session, which is closed afterwards."""
        old_url = self._settings.config.url
        self._settings = settings
        if settings.config.url != old_url:
            self._etags.clear()
        if self._session is not None:
            retired = self._session
            self._retired.add(retired)
            self._session = settings.session()
            self._keep(asyncio.get_running_loop().create_task(self._retire(retired)))
        for wake in self._wake.values():
            wake.set()

    async def _retire(self, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(self._settings.config.timeout + SESSION_GRACE)
        self._retired.discard(session)
        await session.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in [*self._retired, self._session]:
            if session is not None:
                await session.close()

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify(self, raw: bytes) -> tuple[str, bool]:
        """A push notification (envelope); raises ``SyncError`` if it does not verify.

        Returns the list id and whether a pull was started (a notification of
        a serial already enforced, a replay, starts none)."""
        message = parse_notify(open_envelope(raw, self._settings.public_key))
        if message.list_id not in self.status:
            raise SyncError("manifest", f"notification for unknown list {message.list_id!r}")
        status = self.status[message.list_id]
        status.notifies += 1
        if message.serial > status.serial:
            self._wake[message.list_id].set()
            return message.list_id, True
        return message.list_id, False

    # ------------------------------------------------------------ enforced

    def enforced(self, list_id: str, state: SyncedState, via: str) -> None:
        """The supervisor's word that ``state`` now serves on every worker."""
        record = self._record[list_id]
        fresh = not state.same_content(record)
        if fresh:
            state = replace(state, applied_at=format_time(utc_now()), receipt_sent=False)
            store.save_enforced(self._state_dir, list_id, state)
            self._record[list_id] = state
        else:
            assert record is not None
            state = record
        self._enforced[list_id] = state
        status = self.status[list_id]
        status.serial = state.serial
        status.sha256 = state.sha256
        status.authority_serial = max(status.authority_serial, state.serial)
        status.entries = state.entries
        status.published_at = _epoch(state.published_at)
        status.applied_at = _epoch(state.applied_at)
        status.expires_at = _epoch(state.expires_at)
        if fresh:
            self._on_event("sync_applied", self._applied_fields(list_id, state, status, via))
            log.info(
                "sync %s: serial %d enforced (%d entries), %.1f s after publication",
                list_id,
                state.serial,
                state.entries,
                status.lag,
            )
        if self._session is not None:
            self._send_receipt_later(list_id)

    def _applied_fields(
        self, list_id: str, state: SyncedState, status: ListStatus, via: str
    ) -> dict[str, Any]:
        return {
            "list": list_id,
            "serial": state.serial,
            "sha256": state.sha256,
            "entries": state.entries,
            "published_at": state.published_at,
            "applied_at": state.applied_at,
            "lag_seconds": status.lag,
            "lag_sla_seconds": self.config.lag_sla,
            "via": via,
        }

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
                self._failed(list_id, exc)
            await self._sleep(list_id, failures)

    def _failed(self, list_id: str, exc: SyncError) -> None:
        """Count, log and record one failed try (every try, every time)."""
        status = self.status[list_id]
        status.failures[exc.reason] = status.failures.get(exc.reason, 0) + 1
        log.error(
            "sync %s failed (%s): %s; %s",
            list_id,
            exc.reason,
            exc,
            f"still enforcing serial {status.serial}" if status.serial else "nothing enforced yet",
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

    async def _sleep(self, list_id: str, failures: int) -> None:
        config = self.config
        interval = config.interval
        if failures:
            # A short outage is over soon: the first retry comes after 5 s (or
            # interval/10, if shorter), then the wait doubles up to interval.
            first = min(FIRST_RETRY, interval / 10)
            interval = min(interval, first * 2 ** (failures - 1))
        interval *= 1 + random.uniform(-config.jitter, config.jitter)
        wake = self._wake[list_id]
        try:
            async with asyncio.timeout(interval):
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()

    def _checked(self, list_id: str) -> None:
        """The authority's current manifest is the one enforced: a success."""
        moment = time.time()
        self.status[list_id].last_success = moment
        store.save_last_success(self._state_dir, list_id, moment)

    # ------------------------------------------------------------------ pull

    async def pull(self, list_id: str) -> bool:
        """One sync of ``list_id``; True if a new serial was installed.

        Only the list's own task calls it, so pulls of one list never overlap;
        lists of one authority pull independently (one may wait for start-up
        to install while another is still being obtained for it)."""
        status = self.status[list_id]
        enforced = self._enforced[list_id]
        obtained = self._obtained[list_id]
        manifest, envelope, etag = await self._manifest(list_id, enforced)
        if manifest is None:  # 304 for the manifest already enforced
            self._checked(list_id)
            return False
        known = obtained.serial if obtained else 0
        if manifest.serial < max(known, status.serial):
            raise SyncError(
                "rollback",
                f"manifest serial {manifest.serial} is older than "
                f"{max(known, status.serial)} (rollback or replay)",
            )
        status.authority_serial = max(status.authority_serial, manifest.serial)
        if manifest.expires_at <= utc_now():
            raise SyncError(
                "expired",
                f"manifest of serial {manifest.serial} expired at "
                f"{format_time(manifest.expires_at)}; not applied as current",
            )
        if _describes(manifest, enforced):
            self._remember(list_id, etag, manifest)
            self._checked(list_id)
            return False
        if obtained is not None and _describes(manifest, obtained):
            change = Change(list_id, obtained)  # obtained before, never installed: install it
        else:
            if obtained is not None and obtained.serial == manifest.serial:
                self._failed(
                    list_id,
                    SyncError(
                        "fork",
                        f"serial {manifest.serial} of the authority has SHA-256 "
                        f"{manifest.snapshot.sha256[:16]}…, not {obtained.sha256[:16]}… as "
                        "obtained here (a fork); fetching the authority's snapshot",
                    ),
                )
                obtained = None  # no delta can start from a forked base
            change = await self._obtain(list_id, manifest, envelope, obtained)
        await self._install(change)
        if not _describes(manifest, self._enforced[list_id]):
            raise SyncError("apply", f"serial {manifest.serial} is obtained but not installed")
        self._remember(list_id, etag, manifest)
        self._checked(list_id)
        return True

    async def _manifest(
        self, list_id: str, enforced: SyncedState | None
    ) -> tuple[Manifest | None, bytes, str]:
        """The verified manifest, its envelope and ETag; None on a 304, which
        is asked for only when the ETag validated the manifest enforced now."""
        headers = {}
        remembered = self._etags.get(list_id)
        if remembered is not None and enforced is not None:
            tag, serial, sha = remembered
            if (serial, sha) == (enforced.serial, enforced.sha256):
                headers["If-None-Match"] = tag
        assert self._session is not None
        return await fetch_manifest(self._session, self._settings, list_id, headers)

    def _delta_failed(self, list_id: str, exc: SyncError) -> None:
        self._failed(list_id, exc)
        log.warning("sync %s: falling back to the full snapshot", list_id)

    def _remember(self, list_id: str, etag: str, manifest: Manifest) -> None:
        if etag:
            self._etags[list_id] = (etag, manifest.serial, manifest.snapshot.sha256)

    async def _obtain(
        self, list_id: str, manifest: Manifest, envelope: bytes, base: SyncedState | None
    ) -> Change:
        """Download, verify and persist the manifest's snapshot: from a delta
        when one starts at ``base``, else (or if the delta fails) whole."""
        assert self._session is not None
        snapshot, delta = await download(
            self._session,
            self._settings,
            manifest,
            lambda: store.load_snapshot(self._state_dir, list_id),
            base.serial if base is not None else None,
            lambda exc: self._delta_failed(list_id, exc),
        )
        state = SyncedState(
            serial=manifest.serial,
            published_at=format_time(manifest.published_at),
            expires_at=format_time(manifest.expires_at),
            applied_at="",
            sha256=manifest.snapshot.sha256,
            entries=manifest.entries,
        )
        store.save(self._state_dir, list_id, snapshot, envelope, state)
        self._obtained[list_id] = state
        self._first[list_id].set()
        return Change(list_id, state, delta, base if delta is not None else None)

    # --------------------------------------------------------------- receipts

    def _send_receipt_later(self, list_id: str) -> None:
        enforced = self._enforced[list_id]
        if enforced is None or enforced.receipt_sent or list_id in self._sending:
            return
        self._sending.add(list_id)
        task = asyncio.get_running_loop().create_task(self._send_receipt(list_id, enforced))
        task.add_done_callback(lambda _: self._sending.discard(list_id))
        self._keep(task)

    async def _send_receipt(self, list_id: str, enforced: SyncedState) -> None:
        """POST the receipt of what is enforced; a failure is retried after the next pull."""
        assert self._session is not None
        receipt = Receipt(
            operator=self.config.operator,
            node=self.config.node,
            list_id=list_id,
            serial=enforced.serial,
            applied_at=datetime.fromisoformat(enforced.applied_at.replace("Z", "+00:00")),
            sha256=enforced.sha256,
            entries=enforced.entries,
            software=f"filterd {__version__}",
        )
        counts = self.status[list_id].receipts
        try:
            async with self._session.post(
                self._settings.url("receipts"), json=self._sign(receipt)
            ) as answer:
                if answer.status not in (200, 201, 202, 204):
                    raise SyncError("http", f"receipt: HTTP {answer.status}")
        except (FilterdError, OSError, aiohttp.ClientError, TimeoutError) as exc:
            # SyncError is a FilterdError, as is a node key that cannot be read.
            counts["failed"] += 1
            log.warning(
                "sync %s: receipt for serial %d not delivered: %s", list_id, enforced.serial, exc
            )
            return
        counts["sent"] += 1
        if self._enforced[list_id] is not enforced:
            return  # another serial was enforced meanwhile; its receipt is owed
        sent = replace(enforced, receipt_sent=True)
        store.save_enforced(self._state_dir, list_id, sent)
        self._enforced[list_id] = self._record[list_id] = sent


def _describes(manifest: Manifest, state: SyncedState | None) -> bool:
    """Is ``state`` the snapshot ``manifest`` publishes (serial and hash)?"""
    return state is not None and (state.serial, state.sha256) == (
        manifest.serial,
        manifest.snapshot.sha256,
    )


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
