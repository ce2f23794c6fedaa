"""The authority's HTTP service (aiohttp): lists out, receipts in, compliance view.

Endpoints (docs/authority.md; the protocol is docs/sync-protocol.md):

- ``GET /v1/lists/{id}/manifest``: the sealed manifest exactly as published,
  with an ``ETag`` (a hash of those bytes) and ``304`` for ``If-None-Match``;
- ``GET /v1/lists/{id}/snapshots/{serial}.gz`` and
  ``GET /v1/lists/{id}/deltas/{from}-{to}.gz``: the gzip files, as
  ``application/gzip`` and *without* ``Content-Encoding`` (the operator checks
  the compressed bytes it reads against its limits and the manifest, so no
  HTTP layer may inflate them on the way);
- ``POST /v1/receipts``: a receipt from the operator the token belongs to
  (``403`` for another operator's, or not signed as receipts.py requires,
  ``409`` replayed or stale, ``413`` over 16 KiB, ``422`` malformed);
- ``GET /v1/compliance`` (JSON) and ``GET /compliance`` (HTML): the admin
  token is required, in the ``Authorization`` header only (a token in a URL
  ends up in logs and browser history);
- ``GET /metrics``: Prometheus metrics (metrics.py), admin token required;
- ``GET /healthz``: liveness, no token.

The list and receipt endpoints need an operator's bearer token (``401``
otherwise), checked before anything else, so a client without one cannot
even learn which lists exist. Path parameters are matched by strict patterns (a list id,
serials without leading zeros): a path that does not match is ``404`` before
any file name is built, so no request can reach outside ``DATA/lists``.

``--compliance-loopback-open`` serves the HTML page without a token to
clients on loopback (an SSH tunnel from the Department's workstation, a
browser on the server itself). A request that a proxy forwarded (it carries
``Forwarded``, ``X-Forwarded-For`` or ``X-Real-IP``) or whose ``Host`` is not
a loopback name is not treated as local: a reverse proxy on the same host
must not turn every visitor into a loopback client, and a DNS-rebinding page
in the workstation's browser must not read the page either.

The server only reads the data directory, except ``receipts.jsonl``, which
it alone appends to; it never needs the signing key.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from filterd.authority.compliance import Report, build_report, latest_receipts, render_html
from filterd.authority.metrics import build_registry
from filterd.authority.receipts import ReceiptCheck, ReceiptRefused
from filterd.authority.records import AuthorityError
from filterd.authority.store import ReceiptRecord, Store
from filterd.config import Endpoint
from filterd.errors import StartupError
from filterd.sync.model import SyncError, parse_receipt, sha256_hex, utc_now

log = logging.getLogger("filterd.authority")

MAX_RECEIPT_BYTES: Final = 16 * 1024
FILE_CHUNK: Final = 256 * 1024
_LIST: Final = r"{list_id:[a-z0-9][a-z0-9-]{0,62}}"
_SERIAL: Final = r"[1-9][0-9]{0,17}"
_PROXY_HEADERS: Final = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
ACCESS_LOG_FORMAT: Final = '%a "%r" %s %b %Tfs'


class AuthorityServer:
    """The request handlers over one ``Store``."""

    def __init__(
        self,
        store: Store,
        *,
        admin_token: str | None = None,
        loopback_open: bool = False,
        require_signed: bool = False,
    ) -> None:
        self._store = store
        self._admin_token = admin_token
        self._loopback_open = loopback_open
        self._latest = latest_receipts(store.receipts())
        self._receipt_lock = asyncio.Lock()
        self._receipts = ReceiptCheck(store, require_signed=require_signed)
        self._receipt_counts = {"accepted": 0, "refused": 0}
        self._registry = build_registry(self._report, self._receipt_counts)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_RECEIPT_BYTES)
        lists = f"/v1/lists/{_LIST}"
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get(f"{lists}/manifest", self._manifest)
        app.router.add_get(f"{lists}/snapshots/{{serial:{_SERIAL}}}.gz", self._snapshot)
        app.router.add_get(
            f"{lists}/deltas/{{base:{_SERIAL}}}-{{target:{_SERIAL}}}.gz", self._delta
        )
        app.router.add_post("/v1/receipts", self._receipt)
        app.router.add_get("/v1/compliance", self._compliance_json)
        app.router.add_get("/compliance", self._compliance_html)
        app.router.add_get("/metrics", self._metrics)
        app.middlewares.append(self._count_receipts)
        return app

    # ------------------------------------------------------------ lists

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _manifest(self, request: web.Request) -> web.Response:
        self._operator(request)
        list_id = self._known_list(request)
        try:
            body = self._store.manifest_path(list_id).read_bytes()
        except FileNotFoundError:
            raise web.HTTPNotFound(text=f"list {list_id} is not published yet\n") from None
        etag = f'"{sha256_hex(body)[:32]}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if _etag_matches(request.headers.get("If-None-Match", ""), etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        self._operator(request)
        list_id = self._known_list(request)
        serial = int(request.match_info["serial"])
        return await _send_gzip(request, self._store.snapshot_path(list_id, serial))

    async def _delta(self, request: web.Request) -> web.StreamResponse:
        self._operator(request)
        list_id = self._known_list(request)
        base, target = int(request.match_info["base"]), int(request.match_info["target"])
        return await _send_gzip(request, self._store.delta_path(list_id, base, target))

    # --------------------------------------------------------- receipts

    async def _receipt(self, request: web.Request) -> web.Response:
        operator = self._operator(request)
        if (request.content_length or 0) > MAX_RECEIPT_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_RECEIPT_BYTES, request.content_length or 0)
        body = await request.read()  # aiohttp answers 413 past client_max_size
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            receipt = parse_receipt(document)
        except (ValueError, SyncError) as exc:
            raise web.HTTPUnprocessableEntity(text=f"malformed receipt: {exc}\n") from None
        if receipt.operator != operator:
            raise web.HTTPForbidden(
                text=f"receipt for operator {receipt.operator!r} sent with {operator!r}'s token\n"
            )
        if receipt.list_id not in self._store.list_ids():
            raise web.HTTPNotFound(text=f"no list {receipt.list_id}\n")
        received_at = utc_now().replace(microsecond=0)
        async with self._receipt_lock:
            try:
                signature = self._receipts.check(document, receipt, operator, received_at)
            except ReceiptRefused as exc:
                log.warning("receipt from %s refused: %s", operator, exc)
                status = {403: web.HTTPForbidden, 409: web.HTTPConflict}.get(
                    exc.status, web.HTTPUnprocessableEntity
                )
                raise status(text=f"{exc}\n") from None
            await asyncio.to_thread(
                self._store.append_receipt, receipt, operator, received_at, signature
            )
            self._receipts.accepted(signature)
        self._latest[(operator, receipt.node, receipt.list_id)] = ReceiptRecord(
            receipt, received_at, operator, signature is not None
        )
        return web.Response(status=204)

    @web.middleware
    async def _count_receipts(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Count every receipt posted with a valid token, accepted or refused."""
        if request.path != "/v1/receipts" or request.method != "POST":
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status != 401:
                self._receipt_counts["refused"] += 1
            raise
        self._receipt_counts["accepted" if response.status < 300 else "refused"] += 1
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.Response(
            body=generate_latest(self._registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )

    # ------------------------------------------------------- compliance

    async def _compliance_json(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response(self._report().to_json(), headers={"Cache-Control": "no-store"})

    async def _compliance_html(self, request: web.Request) -> web.Response:
        if not (self._loopback_open and _is_local(request)):
            self._admin(request)
        return web.Response(
            text=render_html(self._report()),
            content_type="text/html",
            charset="utf-8",
            headers=_PAGE_HEADERS,
        )

    def _report(self) -> Report:
        return build_report(
            {list_id: self._store.history(list_id) for list_id in self._store.list_ids()},
            self._store.operators.all(),
            self._latest,
            utc_now(),
        )

    # ------------------------------------------------------------- auth

    def _operator(self, request: web.Request) -> str:
        """The operator whose token the request carries, or 401."""
        token = _bearer(request)
        operator = self._store.operators.authenticate(token) if token else None
        if operator is None:
            raise web.HTTPUnauthorized(
                text="an operator's bearer token is required\n",
                headers={"WWW-Authenticate": 'Bearer realm="filterd-authority"'},
            )
        return operator

    def _admin(self, request: web.Request) -> None:
        if self._admin_token is None:
            raise web.HTTPForbidden(text="compliance view disabled (serve --admin-token-file)\n")
        token = _bearer(request) or ""
        if not hmac.compare_digest(
            sha256_hex(token.encode()), sha256_hex(self._admin_token.encode())
        ):
            raise web.HTTPUnauthorized(
                text="the admin bearer token is required\n",
                headers={"WWW-Authenticate": 'Bearer realm="filterd-authority-admin"'},
            )

    def _known_list(self, request: web.Request) -> str:
        list_id = request.match_info["list_id"]
        if not self._store.list_dir(list_id).is_dir():
            raise web.HTTPNotFound(text=f"no list {list_id}\n")
        return list_id


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag, weak comparison."""
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


def _is_local(request: web.Request) -> bool:
    """A direct loopback client that names the server by a loopback host."""
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if host.lower() not in _LOOPBACK_HOSTS and not host.startswith("127."):
        return False
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    address = ipaddress.ip_address(peer[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def _send_gzip(request: web.Request, path: Path) -> web.StreamResponse:
    """Stream a gzip file as it is. The file is opened first: a publication
    that prunes it meanwhile cannot cut the answer short."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"no {path.parent.name[:-1]} {path.name}\n") from None
    with handle:
        response = web.StreamResponse(headers={"Content-Type": "application/gzip"})
        response.content_length = os.fstat(handle.fileno()).st_size
        await response.prepare(request)
        try:
            while request.method != "HEAD" and (
                chunk := await asyncio.to_thread(handle.read, FILE_CHUNK)
            ):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            log.info("%s: client went away during the download", request.path)
    return response


async def serve(
    server: AuthorityServer, endpoint: Endpoint, tls: ssl.SSLContext | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then close connections and return."""
    runner = web.AppRunner(
        server.application(),
        handle_signals=False,
        access_log=logging.getLogger("filterd.authority.access"),
        access_log_format=ACCESS_LOG_FORMAT,
    )
    await runner.setup()
    site = web.TCPSite(runner, endpoint.host, endpoint.port, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {endpoint}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    scheme = "https" if tls else "http"
    for address in runner.addresses:
        bound = Endpoint(str(address[0]), int(address[1]))
        log.info("serving %s://%s/v1/", scheme, bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def check_manifests(store: Store) -> None:
    """Warn about any served manifest that our public key does not verify
    (the key was replaced with ``keygen --force`` and the list not republished)."""
    for list_id in store.list_ids():
        try:
            store.manifest(list_id)
        except (SyncError, AuthorityError) as exc:
            log.warning("list %s: the served manifest does not verify: %s", list_id, exc)
