"""Push: tell every registered operator node that a list has a new serial.

A notification is a hint (docs/sync-protocol.md, "Notification"): a node
that misses one still pulls at its next interval. So pushing is bounded
everywhere, and a slow or dead node never holds up a publication:

- each attempt has a short total timeout;
- a failed attempt (network error, timeout, HTTP 5xx or 429) is retried a
  few times with exponential backoff; any other answer is final (a 403
  means the node refused the signature, and asking again will not change
  that);
- at most ``concurrency`` nodes are contacted at once.

The same signed envelope goes to every node: it carries no secret, only the
list and serial, and each node verifies it against the key it pinned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from filterd.sync.model import Notify, seal, utc_now

NOTIFY_PATH: Final = "v1/notify"
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Target:
    operator: str
    url: str
    """The node's base URL as registered; ``notify_url`` gives where to POST."""


@dataclass(frozen=True, slots=True)
class Outcome:
    target: Target
    status: int | None
    """The last HTTP status, None if no answer was ever received."""
    error: str
    attempts: int

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        where = f"{self.target.operator} {notify_url(self.target.url)}"
        if self.accepted:
            return f"accepted: {where} (HTTP {self.status})"
        reason = f"HTTP {self.status}" if self.status is not None else self.error
        return f"FAILED: {where}: {reason} after {self.attempts} attempt(s)"


def notify_url(base: str) -> str:
    """Where a node takes notifications: ``{node}/v1/notify`` (docs/sync-protocol.md).
    A registered URL that already ends in ``/v1/notify`` is used as it is."""
    if base.rstrip("/").endswith("/" + NOTIFY_PATH):
        return base.rstrip("/")
    return base.rstrip("/") + "/" + NOTIFY_PATH


def notification(list_id: str, serial: int, private: Ed25519PrivateKey) -> bytes:
    """The sealed notify envelope for ``serial`` of ``list_id``, sent now."""
    return seal(Notify(list_id, serial).to_json(utc_now()), private)


async def push(
    envelope: bytes,
    targets: Iterable[Target],
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    backoff: float = 0.5,
    concurrency: int = 16,
) -> list[Outcome]:
    """POST ``envelope`` to every target; one outcome per target, in order."""
    gate = asyncio.Semaphore(concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:

        async def one(target: Target) -> Outcome:
            async with gate:
                return await _deliver(session, envelope, target, attempts, backoff)

        return list(await asyncio.gather(*(one(target) for target in targets)))


async def _deliver(
    session: aiohttp.ClientSession,
    envelope: bytes,
    target: Target,
    attempts: int,
    backoff: float,
) -> Outcome:
    status: int | None = None
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            async with session.post(
                notify_url(target.url),
                data=envelope,
                headers={"Content-Type": "application/json"},
            ) as answer:
                status, error = answer.status, ""
                if status not in RETRY_STATUSES:
                    return Outcome(target, status, error, attempt)
        except TimeoutError:
            status, error = None, "timed out"
        except aiohttp.ClientError as exc:
            status, error = None, str(exc) or type(exc).__name__
        if attempt < attempts:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
    return Outcome(target, status, error, attempts)
