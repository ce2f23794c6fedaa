"""The block page's HTTP server (aiohttp), on listeners of its own.

Contract. Any path answers the page for the request's Host (``render``),
except ``/favicon.ico`` (404, uncounted: browsers ask for it beside every page):
GET and HEAD only (anything else: 405 with ``Allow: GET, HEAD``); 451 for a
block a state authority requires, with ``Link: <contact_link>;
rel="blocked-by"`` when that is a web page (RFC 7725 §3-4), 403 for any
other (docs/block-page.md says why not 200); ``Cache-Control: no-store`` so that
nothing keeps the page once the name is unblocked. A request body is never
read. Each listener is a ``CappedSite``: at most
``block_page.max_connections`` connections at once (one more is closed at
accept and counted), each living at most ``connection_lifetime`` seconds
and idling at most ``IDLE_TIMEOUT``; a request line or header field is at
most ``MAX_LINE`` bytes and a request has at most ``MAX_HEADERS`` header
fields (aiohttp answers 400 beyond).

Privacy. There is no access log, and nothing here logs the visitor's
address or the visited name: requests are counted by language and outcome
(``filterd_blockpage_requests_total``). The address is only compared with
``clients`` and handed to ``Explain`` (which may find the client's group).

What the page reveals (the oracle concern, GUIDE §4). For a name, it shows
the category and who decided, which the blocked DNS answer already gives
the same visitor (the sinkhole address, and the Extended DNS Error text
``list=... category=...``, RFC 8914): asking the page about a name tells
nothing that asking the resolver does not. It never shows the matched list
entry, another name or the list itself. A visitor outside ``clients`` (the
addresses allowed to query the resolver, ``access.allow``) cannot ask the
resolver, so it gets only the generic page for any Host, and ``Explain``
is not called: the page is no oracle for those outside the network even
when its listener is reachable from the Internet.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from filterd.admin.server import CappedSite
from filterd.blockpage.reason import BlockReason, Explain, IPAddress
from filterd.blockpage.render import choose_language, render, status_of, visited_host
from filterd.config import BLOCK_PAGE_LANGUAGES, BlockPageConfig

log = logging.getLogger("filterd.blockpage")

IDLE_TIMEOUT: Final = 5.0
MAX_LINE: Final = 4096
MAX_HEADERS: Final = 32
OUTCOMES: Final = (
    "explained", "generic", "invalid_host", "error", "method_not_allowed", "malformed"
)  # fmt: skip
"""``explained``: the page with a reason; ``generic``: no reason known (or a
visitor outside ``clients``); ``invalid_host``: no usable Host; ``error``:
``Explain`` raised (the generic page is shown); ``method_not_allowed``: 405;
``malformed``: a request aiohttp refused with 400 (not HTTP, over the bounds),
counted under the default language."""
HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Vary": "Accept-Language",
    "Server": "filterd",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockPageMetrics(Collector):
    """The page's counters, registered on the registry passed in; every
    label pair is exported from the start (so ``rate()`` sees the first
    request)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = dict.fromkeys(
            ((language, outcome) for language in BLOCK_PAGE_LANGUAGES for outcome in OUTCOMES), 0
        )
        self.refused = 0
        registry.register(self)

    def count(self, language: str, outcome: str) -> None:
        self.requests[language, outcome] += 1

    def refuse(self) -> None:
        self.refused += 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "filterd_blockpage_requests",
            "Block page requests by language served and outcome.",
            labels=("language", "outcome"),
        )
        for labels, count in self.requests.items():
            requests.add_metric(labels, count)
        yield requests
        yield CounterMetricFamily(
            "filterd_blockpage_connections_refused",
            "Block page connections closed at accept: block_page.max_connections were open.",
            value=self.refused,
        )


class BlockPage:
    """The block page for ``config``, explaining blocks with ``explain`` to
    visitors in ``clients``; ``start``/``stop`` (or ``async with``) on the
    running loop."""

    def __init__(
        self,
        config: BlockPageConfig,
        explain: Explain,
        registry: CollectorRegistry,
        clients: Sequence[Network],
    ) -> None:
        self._config = config
        self._explain = explain
        self._clients = tuple(clients)
        self.metrics = BlockPageMetrics(registry)
        self._request_log = _RequestLog(
            lambda: self.metrics.count(config.languages[0], "malformed")
        )
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=1024, handler_args=self._handler_args())
        app.router.add_route("*", "/{path:.*}", self._page)
        return app

    async def start(self) -> None:
        """Listen on every ``config.listen`` endpoint; OSError if one cannot be bound."""
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        try:
            for endpoint in self._config.listen:
                site = CappedSite(
                    runner,
                    endpoint,
                    self._config.max_connections,
                    self._config.connection_lifetime,
                    self.metrics.refuse,
                    limits=self._handler_args(),
                )
                await site.start()
        except BaseException:
            await self.stop()
            raise

    def _handler_args(self) -> dict[str, Any]:
        """Bounds and log of aiohttp's request handler."""
        return {
            "keepalive_timeout": IDLE_TIMEOUT,
            "max_line_size": MAX_LINE,
            "max_field_size": MAX_LINE,
            "max_headers": MAX_HEADERS,
            # After the answer, a body nobody reads is drained for at most 1 s.
            "lingering_time": 1.0,
            "logger": self._request_log,
        }

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where it listens (the ports bound for endpoints given port 0)."""
        if self._runner is None:
            return []
        return [(str(address[0]), int(address[1])) for address in self._runner.addresses]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> BlockPage:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _page(self, request: web.Request) -> web.Response:
        if request.path == "/favicon.ico":
            # A browser asks for it beside every page: not a visit, not counted.
            return web.Response(status=404, headers={"Cache-Control": "no-store"})
        offered = self._config.languages
        language = choose_language(
            request.query.get("lang"), request.headers.get(hdrs.ACCEPT_LANGUAGE), offered
        )
        if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
            self.metrics.count(language, "method_not_allowed")
            return web.Response(
                status=405, text="GET or HEAD only\n", headers={"Allow": "GET, HEAD"}
            )
        host = visited_host(request.headers.get(hdrs.HOST))
        reason: BlockReason | None = None
        if host is None:
            outcome = "invalid_host"
        else:
            reason, outcome = self._reason(host, request.remote)
        headers = {**HEADERS, "Content-Language": language}
        status = status_of(reason)
        link = self._config.contact_link
        if status == 451 and link.startswith(("https://", "http://")):
            # RFC 7725 §4: who implements the block (the operator, not the authority).
            headers["Link"] = f'<{link}>; rel="blocked-by"'
        self.metrics.count(language, outcome)
        return web.Response(
            status=status,
            text=render(self._config, language, host if reason else None, reason),
            content_type="text/html",
            charset="utf-8",
            headers=headers,
        )

    def _reason(self, host: str, remote: str | None) -> tuple[BlockReason | None, str]:
        client = _address(remote)
        if client is None or not any(client in network for network in self._clients):
            return None, "generic"
        try:
            reason = self._explain(host, client)
        except Exception as exc:
            # Neither the name nor the address: the log is no browsing record.
            log.error("block page: explaining a name failed: %s", type(exc).__name__)
            return None, "error"
        return reason, "generic" if reason is None else "explained"


class _RequestLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's request-handler log without the visitor, whose address
    aiohttp puts in every line: a malformed request (aiohttp answers it 400)
    is counted and not logged, for its text is the visitor's own; any other
    error is logged, with its traceback, under a message naming nobody."""

    def __init__(self, malformed: Callable[[], None]) -> None:
        super().__init__(log, {})
        self._malformed = malformed

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(error, tuple):
            error = error[1]
        if isinstance(error, HttpProcessingError):
            self._malformed()
        elif self.logger.isEnabledFor(level):
            self.logger.log(level, "block page: error handling a request", exc_info=exc_info)


def _address(remote: str | None) -> IPAddress | None:
    """The visitor's address; an IPv4-mapped IPv6 address (a dual-stack
    listener) as the IPv4 address it is."""
    try:
        address = ipaddress.ip_address((remote or "").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
