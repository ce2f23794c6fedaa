"""Admin HTTP (aiohttp): health, readiness and metrics, on loopback by default.

- ``/healthz``: 200 while every configured worker runs and serves, 503
  otherwise (a worker that died and could not be restarted yet), with the
  count in the body;
- ``/readyz``: 200 only when every worker serves the current configuration
  and lists, 503 otherwise (so a load balancer never sends traffic to an
  instance that would answer without its blocklist); the body's further
  lines name the generation and each list version served;
- ``/metrics``: Prometheus text exposition (see docs/metrics.md);
- ``/stats/blocked``: the most blocked list entries with category and
  count (JSON), when ``statistics.blocked_names`` is set; 404 otherwise;
- ``POST /v1/notify``: the authority's signed push notification
  (docs/sync-protocol.md): 202 once verified and newer than the serial
  enforced (the pull runs in the background), 200 if that serial is already
  enforced (a replay: nothing is pulled), 403 if it does not verify, 413 if
  oversized; every refusal is counted. With ``admin.notify_listen`` it is
  served there, on a listener of its own, and not on ``admin.listen``.

Whoever reaches a listener is bounded: at most ``admin.max_connections``
connections at once (a new one beyond is closed at accept and counted), a
connection lives at most ``admin.connection_lifetime`` seconds and idles at
most ``IDLE_TIMEOUT`` (so 1,500 idle connections can no longer take every
descriptor of the supervisor), and a request body must arrive within
``BODY_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from filterd.config import AdminConfig, Endpoint
from filterd.sync.model import SyncError

log = logging.getLogger("filterd.admin")

MAX_NOTIFY_BYTES: Final = 16 * 1024
IDLE_TIMEOUT: Final = 15.0
BODY_TIMEOUT: Final = 5.0


class Daemon(Protocol):
    """What the admin server asks of the supervisor."""

    def health(self) -> tuple[bool, str]: ...
    def readiness(self) -> tuple[bool, str]: ...
    async def refresh_stats(self) -> None: ...
    def notify(self, raw: bytes) -> tuple[str, bool]: ...
    def notify_refused(self) -> None: ...
    def admin_refused(self) -> None: ...
    async def blocked_names(self) -> list[dict[str, Any]] | None: ...


class _Closed(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class _Counted(web.RequestHandler):
    """aiohttp's handler, counted from the moment it is made (a burst of
    accepts makes many before any is registered with the server) until its
    connection is lost."""

    __slots__ = ("_site",)

    def __init__(self, server: web.Server, site: CappedSite) -> None:
        super().__init__(
            server,
            loop=asyncio.get_running_loop(),
            access_log=None,  # type: ignore[arg-type]  # None: no access log (as AppRunner)
            **{"keepalive_timeout": IDLE_TIMEOUT, **site.limits},
        )
        self._site = site
        site.open += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self._site.open -= 1
        super().connection_lost(exc)


class CappedSite(web.BaseSite):
    """A TCP site that accepts at most ``cap`` connections at once and gives
    each at most ``lifetime`` seconds; ``limits`` are further arguments of
    aiohttp's request handler (``max_line_size``, ``keepalive_timeout``...)."""

    __slots__ = ("_cap", "_endpoint", "_lifetime", "_refused", "limits", "open")

    def __init__(
        self,
        runner: web.BaseRunner,
        endpoint: Endpoint,
        cap: int,
        lifetime: float,
        refused: Callable[[], None],
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(runner, backlog=128)
        self.limits = dict(limits or {})
        self._endpoint = endpoint
        self._cap = cap
        self._lifetime = lifetime
        self._refused = refused
        self.open = 0

    @property
    def name(self) -> str:
        return f"http://{self._endpoint}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert isinstance(server, web.Server)

        def connection() -> asyncio.BaseProtocol:
            if self.open >= self._cap:
                self._refused()
                return _Closed()
            handler = _Counted(server, self)
            loop.call_later(self._lifetime, handler.force_close)
            return handler

        self._server = await loop.create_server(
            connection,
            self._endpoint.host,
            self._endpoint.port,
            backlog=self._backlog,
            reuse_address=True,
        )


class AdminServer:
    def __init__(self, config: AdminConfig, registry: CollectorRegistry, daemon: Daemon) -> None:
        self._config = config
        self._registry = registry
        self._daemon = daemon
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        config = self._config
        assert config.listen is not None
        app = web.Application(client_max_size=MAX_NOTIFY_BYTES)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/stats/blocked", self._blocked_handler)
        if config.notify_listen is None:
            app.router.add_post("/v1/notify", self._notify_handler)
        await self._serve(app, config.listen)
        if config.notify_listen is not None:
            notify = web.Application(client_max_size=MAX_NOTIFY_BYTES)
            notify.router.add_post("/v1/notify", self._notify_handler)
            await self._serve(notify, config.notify_listen)

    async def _serve(self, app: web.Application, endpoint: Endpoint) -> None:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_TIMEOUT
        )
        await runner.setup()
        self._runners.append(runner)
        config = self._config
        site = CappedSite(
            runner,
            endpoint,
            config.max_connections,
            config.connection_lifetime,
            self._daemon.admin_refused,
        )
        await site.start()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, detail = self._daemon.health()
        if healthy:
            return web.Response(text=f"ok\n{detail}")
        return web.Response(status=503, text=f"unhealthy\n{detail}")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, detail = self._daemon.readiness()
        if ready:
            return web.Response(text=f"ready\n{detail}")
        return web.Response(status=503, text=f"not ready\n{detail}")

    async def _notify_handler(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._daemon.notify_refused()
            return web.Response(status=413, text="too large\n")
        except TimeoutError:
            self._daemon.notify_refused()
            return web.Response(status=408, text="body too slow\n")
        try:
            list_id, pulling = self._daemon.notify(body)
        except SyncError as exc:
            log.warning("notify refused (%s): %s", exc.reason, exc)
            return web.Response(status=403, text=f"refused: {exc.reason}\n")
        if not pulling:
            return web.Response(status=200, text=f"{list_id}: serial already enforced\n")
        return web.Response(status=202, text=f"pulling {list_id}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._daemon.refresh_stats()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _blocked_handler(self, request: web.Request) -> web.Response:
        rows = await self._daemon.blocked_names()
        if rows is None:
            return web.Response(status=404, text="not kept: statistics.blocked_names is 0\n")
        return web.json_response({"blocked": rows})
