"""The supervisor's side of authority sync: one ``SyncClient`` per authority.

Which lists are synced from which authority is fixed at start-up (a reload
that changes it is refused, naming the keys); their settings (key, token,
certificates) may change on reload. The clients pull, verify and persist
on their own (filterd/sync/client.py); what they obtained reaches the
workers only through the change handler given to ``accept_changes``, which
the composition root passes once the start-up install is done (start-up
compiles every list first; a change before that waits). The supervisor
tells them what is enforced (``enforced``) only after an install committed
on every worker. Receipts are signed here with the node key and carry the
audit trail's head (filterd/audit/anchor.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from filterd.audit.anchor import load_node_key, signed_receipt
from filterd.audit.recorder import AuditRecorder
from filterd.config import Config
from filterd.errors import ConfigError, FilterdError, StartupError
from filterd.metrics import SupervisorState
from filterd.sync.client import Change, SyncClient
from filterd.sync.fetch import Settings
from filterd.sync.model import Receipt, SyncError
from filterd.sync.status import ListStatus
from filterd.sync.store import SyncedState

log = logging.getLogger("filterd")

ApplyChange = Callable[[Change], Awaitable[None]]
"""Installs an obtained list, or raises ``SyncError('apply')``."""


def synced_lists(config: Config) -> dict[str, list[str]]:
    """The synced list ids of each authority with a URL ("" is ``sync``); a
    list id belongs to exactly one (config validation)."""
    by_authority: dict[str, list[str]] = {}
    for lst in config.lists:
        if lst.sync and config.authority(lst.authority).url:
            by_authority.setdefault(lst.authority, []).append(lst.sync)
    return by_authority


class Syncing:
    """Every authority's client, and the questions the supervisor asks them."""

    def __init__(self, config: Config, state: SupervisorState, audit: AuditRecorder) -> None:
        self._state_dir = config.state_dir
        self._state = state
        self._audit = audit
        self._apply: ApplyChange | None = None
        self._accepting = asyncio.Event()
        self._clients = {
            name: SyncClient(
                config.authority(name),
                config.state_dir,
                list_ids,
                self._install,
                on_event=audit.emit,
                sign=self._sign_receipt,
            )
            for name, list_ids in synced_lists(config).items()
        }
        self._client_of = {
            list_id: client for client in self._clients.values() for list_id in client.status
        }

    @property
    def active(self) -> bool:
        """True if any list is synced from an authority."""
        return bool(self._clients)

    def check_node_key(self) -> None:
        """The node key signs receipts: made at the first start, so that
        `filterd node-key show` has it for the authority to register."""
        if not self._clients:
            return
        try:
            load_node_key(self._state_dir)
        except (FilterdError, OSError) as exc:
            raise StartupError(f"node key in {self._state_dir}: {exc}") from None

    def start(self) -> None:
        for client in self._clients.values():
            client.start()

    def accept_changes(self, apply: ApplyChange) -> None:
        """From now on, obtained lists are installed with ``apply``."""
        self._apply = apply
        self._accepting.set()

    async def _install(self, change: Change) -> None:
        await self._accepting.wait()  # start-up installs first, then this
        assert self._apply is not None
        await self._apply(change)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    # ------------------------------------------------------------ list state

    def obtained(self, list_id: str) -> SyncedState | None:
        """The newest verified snapshot of ``list_id`` on disk, if synced and obtained."""
        client = self._client_of.get(list_id)
        return client.obtained(list_id) if client is not None else None

    def not_obtained(self, list_id: str) -> bool:
        """A synced list whose authority is configured but that has no snapshot yet."""
        client = self._client_of.get(list_id)
        return client is not None and client.obtained(list_id) is None

    async def wait_first(self, list_id: str) -> None:
        await self._client_of[list_id].wait_first(list_id)

    def enforced(self, list_id: str, state: SyncedState, via: str) -> None:
        """``state`` of ``list_id`` now serves on every worker (``via``: snapshot or delta)."""
        self._client_of[list_id].enforced(list_id, state, via)

    def statuses(self) -> list[ListStatus]:
        return [status for client in self._clients.values() for status in client.status.values()]

    # --------------------------------------------------------------- reload

    def settings(self, config: Config) -> dict[str, Settings]:
        """Every authority's new sync settings, read and checked (key, token,
        certificates), applied only if the whole reload succeeds. Which lists
        are synced from which authority is fixed at start-up: a change is
        refused, naming the key."""
        new = synced_lists(config)
        old = {name: list(client.status) for name, client in self._clients.items()}
        if new != old:
            pairs_new = {f"{i} from {a or 'sync'}" for a, ids in new.items() for i in ids}
            pairs_old = {f"{i} from {a or 'sync'}" for a, ids in old.items() for i in ids}
            raise ConfigError(
                [
                    "lists[].sync, sync.url, authorities: the synced lists changed (added: "
                    f"{', '.join(sorted(pairs_new - pairs_old)) or 'none'}; removed: "
                    f"{', '.join(sorted(pairs_old - pairs_new)) or 'none'}); "
                    "restart filterd to apply that"
                ]
            )
        return {name: Settings.load(config.authority(name)) for name in new}

    def reconfigure(self, settings: dict[str, Settings]) -> None:
        for name, new in settings.items():
            self._clients[name].reconfigure(new)

    # ---------------------------------------------------------- admin HTTP

    def notify(self, raw: bytes) -> tuple[str, bool]:
        """A push notification from an authority (admin HTTP); see SyncClient.notify.

        Each authority's client tries it with that authority's key; a client
        whose key did not sign it passes (``key``) to the next."""
        try:
            refusal = SyncError("manifest", "no list is synced from an authority")
            for client in self._clients.values():
                try:
                    return client.notify(raw)
                except SyncError as exc:
                    if exc.reason != "key":
                        raise
                    refusal = exc
            raise refusal
        except SyncError:
            self.notify_refused()
            raise

    def notify_refused(self) -> None:
        """Count a notification refused before or after it was read."""
        self._state.notifies_refused += 1

    def _sign_receipt(self, receipt: Receipt) -> dict[str, Any]:
        """A receipt signed with the node key, carrying the audit head (the
        authority keeps the heads: anchors of the trail off this machine)."""
        return signed_receipt(self._state_dir, self._audit.anchor(), receipt)
