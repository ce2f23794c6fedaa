"""Admin HTTP (aiohttp): health, readiness and metrics, on loopback by default.

- ``/healthz``: 200 while the supervisor's event loop runs (liveness);
- ``/readyz``: 200 only when every worker serves the current configuration
  and lists, 503 otherwise (so a load balancer never sends traffic to an
  instance that would answer without its blocklist);
- ``/metrics``: Prometheus text exposition (see docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from filterd.config import Endpoint


class AdminServer:
    def __init__(
        self,
        endpoint: Endpoint,
        registry: CollectorRegistry,
        is_ready: Callable[[], bool],
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self._endpoint = endpoint
        self._registry = registry
        self._is_ready = is_ready
        self._refresh = refresh
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._endpoint.host, self._endpoint.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._refresh()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
