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
  oversized; every refusal is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from filterd.config import Endpoint
from filterd.sync.model import SyncError

log = logging.getLogger("filterd.admin")

MAX_NOTIFY_BYTES: Final = 16 * 1024


class AdminServer:
    def __init__(
        self,
        endpoint: Endpoint,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
        readiness: Callable[[], tuple[bool, str]],
        refresh: Callable[[], Awaitable[None]],
        notify: Callable[[bytes], tuple[str, bool]],
        notify_refused: Callable[[], None],
        blocked: Callable[[], Awaitable[list[dict[str, Any]] | None]],
    ) -> None:
        self._endpoint = endpoint
        self._registry = registry
        self._health = health
        self._readiness = readiness
        self._refresh = refresh
        self._notify = notify
        self._notify_refused = notify_refused
        self._blocked = blocked
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_NOTIFY_BYTES)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/v1/notify", self._notify_handler)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/stats/blocked", self._blocked_handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._endpoint.host, self._endpoint.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, detail = self._health()
        if healthy:
            return web.Response(text=f"ok\n{detail}")
        return web.Response(status=503, text=f"unhealthy\n{detail}")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, detail = self._readiness()
        if ready:
            return web.Response(text=f"ready\n{detail}")
        return web.Response(status=503, text=f"not ready\n{detail}")

    async def _notify_handler(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._notify_refused()
            return web.Response(status=413, text="too large\n")
        try:
            list_id, pulling = self._notify(body)
        except SyncError as exc:
            log.warning("notify refused (%s): %s", exc.reason, exc)
            return web.Response(status=403, text=f"refused: {exc.reason}\n")
        if not pulling:
            return web.Response(status=200, text=f"{list_id}: serial already enforced\n")
        return web.Response(status=202, text=f"pulling {list_id}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._refresh()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _blocked_handler(self, request: web.Request) -> web.Response:
        rows = await self._blocked()
        if rows is None:
            return web.Response(status=404, text="not kept: statistics.blocked_names is 0\n")
        return web.json_response({"blocked": rows})
