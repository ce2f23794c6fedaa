"""FakeAuthority: a scriptable authority sync endpoint on loopback, for tests.

A real aiohttp server (``tests.peers.web_thread``: its own event loop in a
thread, a real socket on 127.0.0.1 port 0) that serves whatever the test publishes: correct
publications built with the shared protocol model (``publish``), or
deliberately broken answers (``serve_raw`` for any path: bad signatures,
wrong hashes, truncated bodies, slow bodies, garbage). Like the reference
authority it answers a conditional GET of an unchanged manifest with 304.
It records every request (with its status) and every receipt, and can run a
check of the test's at the moment a receipt arrives (``on_receipt``). The
production reference authority is ``filterd authority``; this one exists to
misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Self

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from filterd.sync.model import FileRef, Manifest, Notify, public_key_text, seal, sha256_hex, utc_now
from filterd.sync.snapshot import Entry, diff, serialize_snapshot
from tests.peers.web_thread import ThreadedApp

TOKEN = "test-operator-token"


@dataclass
class Canned:
    """A raw answer for one path."""

    body: bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    delay: float = 0.0
    """Seconds to wait before the body; with ``trickle``, between each byte."""
    trickle: bool = False


@dataclass
class Publication:
    serial: int
    entries: dict[bytes, Entry]
    snapshot: bytes
    envelope: bytes


@dataclass
class Seen:
    requests: list[str] = field(default_factory=list)
    receipts: list[dict[str, object]] = field(default_factory=list)
    answers: list[tuple[str, int]] = field(default_factory=list)
    """(path, HTTP status) of every answer, in order."""


class FakeAuthority:
    def __init__(self, list_id: str = "national", key: Ed25519PrivateKey | None = None) -> None:
        self.list_id = list_id
        self.key = key or Ed25519PrivateKey.generate()
        self.public_key = public_key_text(self.key.public_key())
        self.publications: list[Publication] = []
        self.canned: dict[str, Canned] = {}
        self.seen = Seen()
        self.token = TOKEN
        self.on_receipt: Callable[[dict[str, object]], None] | None = None
        """Called in the server's thread with each receipt, before it is answered."""
        self._lock = threading.Lock()
        self._server: ThreadedApp | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/"

    # ------------------------------------------------------------ publishing

    def publish(
        self,
        entries: list[Entry],
        *,
        serial: int | None = None,
        key: Ed25519PrivateKey | None = None,
        deltas: bool = True,
        expires_in: timedelta = timedelta(days=7),
    ) -> Publication:
        """Publish ``entries`` as the next serial (snapshot, deltas from every
        earlier serial unless ``deltas`` is False, signed manifest); the
        manifest is served from now on. A ``serial`` given again publishes
        other content under a serial already out (a fork)."""
        with self._lock:
            serial = serial or (self.publications[-1].serial + 1 if self.publications else 1)
            table = {entry.name: entry for entry in entries}
            snapshot = serialize_snapshot(table.values())
            base = f"lists/{self.list_id}"
            self.canned[f"{base}/snapshots/{serial}.gz"] = Canned(gzip.compress(snapshot))
            refs = []
            for earlier in self.publications if deltas else []:
                if earlier.serial >= serial:
                    continue
                delta = diff(earlier.entries, table, (earlier.serial, serial)).serialize()
                path = f"{base}/deltas/{earlier.serial}-{serial}.gz"
                self.canned[path] = Canned(gzip.compress(delta))
                refs.append(FileRef(path, sha256_hex(delta), len(delta), earlier.serial))
            now = utc_now()
            manifest = Manifest(
                self.list_id,
                serial,
                now,
                now + expires_in,
                len(table),
                FileRef(f"{base}/snapshots/{serial}.gz", sha256_hex(snapshot), len(snapshot)),
                tuple(refs),
            )
            envelope = seal(manifest.to_json(), key or self.key)
            self.canned[f"{base}/manifest"] = Canned(envelope, content_type="application/json")
            publication = Publication(serial, table, snapshot, envelope)
            self.publications = [p for p in self.publications if p.serial != serial]
            self.publications.append(publication)
            return publication

    def serve_raw(self, path: str, canned: Canned) -> None:
        with self._lock:
            self.canned[path] = canned

    def notify(self, serial: int, key: Ed25519PrivateKey | None = None) -> bytes:
        """A sealed push notification for ``serial`` (to POST to filterd)."""
        return seal(Notify(self.list_id, serial).to_json(utc_now()), key or self.key)

    # ---------------------------------------------------------------- server

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/v1/")
        with self._lock:
            self.seen.requests.append(path)
        response = await self._answer(request, path)
        with self._lock:
            self.seen.answers.append((path, response.status))
        return response

    async def _answer(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401)
        if request.method == "POST" and path == "receipts":
            document = await request.json()
            if self.on_receipt is not None:
                self.on_receipt(document)
            with self._lock:
                self.seen.receipts.append(document)
            return web.Response(status=204)
        with self._lock:
            canned = self.canned.get(path)
        if canned is None:
            return web.Response(status=404)
        if not canned.trickle:
            await asyncio.sleep(canned.delay)
            headers = {}
            if path.endswith("/manifest") and canned.status == 200:
                etag = '"' + hashlib.sha256(canned.body).hexdigest()[:16] + '"'
                if request.headers.get("If-None-Match") == etag:
                    return web.Response(status=304, headers={"ETag": etag})
                headers["ETag"] = etag
            return web.Response(
                body=canned.body,
                status=canned.status,
                content_type=canned.content_type,
                headers=headers,
            )
        response = web.StreamResponse(status=canned.status)
        response.content_length = len(canned.body)
        await response.prepare(request)
        for byte in canned.body:
            await asyncio.sleep(canned.delay)
            await response.write(bytes((byte,)))
        return response

    def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = ThreadedApp(app, "fake-authority")
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
