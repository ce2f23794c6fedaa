"""The block page over HTTP: the real listener (``BlockPage.start``, a capped
site on 127.0.0.1, port 0) asked by aiohttp's client and by raw sockets.

Content and status by language and reason, HEAD, 405, the visitors who get
only the generic page (invalid Host, outside ``clients``, ``Explain``
failing), the request bounds, the connection cap, the counters, and a log
that never holds the visitor's address or the visited name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from filterd.blockpage.reason import BlockedBy, BlockReason, IPAddress
from filterd.blockpage.server import BlockPage, Network
from filterd.config import BlockPageConfig, Endpoint

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
CONFIG = BlockPageConfig(
    enabled=True, listen=(Endpoint("127.0.0.1", 0),), operator="Nhà mạng Ví Dụ"
)
REASONS = {
    "casino.example": BlockReason("gambling", BlockedBy.STATE, "Danh sách quốc gia"),
    "game.example": BlockReason("games", BlockedBy.PROFILE, "school-primary"),
    "ads.example": BlockReason("ads", BlockedBy.OPERATOR),
}
TIMEOUT = 10.0


class Recorder:
    """An ``Explain`` that answers from ``REASONS`` and remembers who asked."""

    def __init__(self, fail: bool = False) -> None:
        self.asked: list[tuple[str, IPAddress]] = []
        self._fail = fail

    def __call__(self, name: str, client: IPAddress) -> BlockReason | None:
        self.asked.append((name, client))
        if self._fail:
            raise KeyError(name)
        return REASONS.get(name)


@asynccontextmanager
async def serving(
    explain: Recorder,
    config: BlockPageConfig = CONFIG,
    clients: Sequence[Network] = LOOPBACK,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[str]:
    """The page's base URL while it serves."""
    page = BlockPage(config, explain, registry or CollectorRegistry(), clients)
    async with page:
        host, port = page.addresses[0]
        yield f"http://{host}:{port}"


async def fetch(
    url: str, host: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], str]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, headers={"Host": host, **headers}) as response,
    ):
        return response.status, dict(response.headers), await response.text()


async def raw(url: str, request: bytes) -> bytes:
    """What the page answers to ``request`` sent as it is, until it closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(TIMEOUT):
            return await reader.read()
    finally:
        writer.close()


def counts(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.labels["language"], s.labels["outcome"]): s.value
        for family in registry.collect()
        if family.name == "filterd_blockpage_requests"
        for s in family.samples
        if s.value
    }


def test_explained_page_in_each_language() -> None:
    explain = Recorder()

    async def scenario() -> None:
        async with serving(explain) as url:
            status, headers, body = await fetch(url + "/any/path?x=1", "Casino.Example:80")
            assert status == 451
            assert headers["Content-Type"] == "text/html; charset=utf-8"
            assert headers["Content-Language"] == "vi" and headers["Vary"] == "Accept-Language"
            assert headers["Cache-Control"] == "no-store"
            assert headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert headers["Server"] == "filterd"
            assert "<dd>Cờ bạc</dd>" in body and '<a href="tel:111">Gọi 111</a>' in body
            status, headers, body = await fetch(url, "casino.example", **{"Accept-Language": "en"})
            assert (status, headers["Content-Language"]) == (451, "en")
            assert "<dd>Gambling</dd>" in body and '<a href="tel:111">Call 111</a>' in body
            _, headers, _ = await fetch(url + "/?lang=en", "casino.example")
            assert headers["Content-Language"] == "en"
            status, _, body = await fetch(url, "www.game.example")
            assert status == 403 and "<strong>" not in body  # no reason for that name
            status, _, body = await fetch(url, "game.example")
            assert status == 403 and "Chế độ lọc mà mạng của bạn đã chọn — school-primary" in body
            status, headers, body = await fetch(url, "ads.example")
            assert status == 403 and "Chính sách của Nhà mạng Ví Dụ" in body
            assert "Link" not in headers
        web_contact = dataclasses.replace(CONFIG, contact_link="https://isp.example/review")
        async with serving(explain, config=web_contact) as url:
            status, headers, _ = await fetch(url, "casino.example")
            assert (status, headers["Link"]) == (
                451,
                '<https://isp.example/review>; rel="blocked-by"',
            )
            status, headers, _ = await fetch(url, "game.example")
            assert status == 403 and "Link" not in headers

    asyncio.run(scenario())
    assert [name for name, _ in explain.asked] == [
        "casino.example", "casino.example", "casino.example",
        "www.game.example", "game.example", "ads.example", "casino.example", "game.example",
    ]  # fmt: skip
    assert {client for _, client in explain.asked} == {ipaddress.ip_address("127.0.0.1")}


def test_head_get_only_and_favicon() -> None:
    registry = CollectorRegistry()

    async def scenario() -> None:
        async with serving(Recorder(), registry=registry) as url:
            got = await fetch(url, "casino.example")
            head = await fetch(url, "casino.example", "HEAD")
            assert head[0] == 451 and head[2] == ""
            assert head[1]["Content-Length"] == got[1]["Content-Length"] != "0"
            for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
                status, headers, _ = await fetch(url, "casino.example", method)
                assert (status, headers["Allow"]) == (405, "GET, HEAD"), method
            status, _, body = await fetch(url + "/favicon.ico", "casino.example")
            assert (status, body) == (404, "")

    asyncio.run(scenario())
    assert counts(registry) == {("vi", "explained"): 2, ("vi", "method_not_allowed"): 5}


def test_who_gets_only_the_generic_page() -> None:
    """No usable Host, a visitor outside ``clients`` (Explain is not even
    asked) and an Explain that fails all get the generic page, without the name."""
    registry = CollectorRegistry()
    explain, outside, failing = Recorder(), Recorder(), Recorder(fail=True)

    async def scenario() -> None:
        async with serving(explain, registry=registry) as url:
            for host in ("127.0.0.1", "[::1]:80", "bad host", "casino.example:x"):
                status, _, body = await fetch(url, host)
                assert status == 403 and "đã bị chặn theo chính sách" in body, host
            answer = await raw(url, b"GET / HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.0 403 ") or answer.startswith(b"HTTP/1.1 403 ")
        assert explain.asked == []
        only_ten = [ipaddress.ip_network("10.0.0.0/8")]
        async with serving(outside, clients=only_ten, registry=CollectorRegistry()) as url:
            status, _, body = await fetch(url, "casino.example")
            assert status == 403 and "casino" not in body
        assert outside.asked == []
        async with serving(failing, registry=registry) as url:
            status, _, body = await fetch(url, "casino.example", **{"Accept-Language": "en"})
            assert status == 403 and "casino" not in body
        assert len(failing.asked) == 1

    asyncio.run(scenario())
    assert counts(registry) == {("vi", "invalid_host"): 5, ("en", "error"): 1}


def test_requests_are_bounded() -> None:
    """aiohttp refuses what is over the bounds with 400 (counted as malformed)."""
    registry = CollectorRegistry()

    async def scenario() -> None:
        async with serving(Recorder(), registry=registry) as url:
            long_line = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: casino.example\r\n\r\n"
            assert (await raw(url, long_line)).split(b" ", 2)[1] in (b"400", b"414")
            big = b"GET / HTTP/1.1\r\nHost: casino.example\r\nX-A: " + b"a" * 5000 + b"\r\n\r\n"
            assert (await raw(url, big)).split(b" ", 2)[1] in (b"400", b"431")
            many = b"".join(b"X-%d: 1\r\n" % i for i in range(40))
            request = b"GET / HTTP/1.1\r\nHost: casino.example\r\n" + many + b"\r\n"
            assert (await raw(url, request)).split(b" ", 2)[1] in (b"400", b"431")
            # A body announced with GET is never waited for: the page answers at once.
            host, port = url.removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            announced = b"Host: casino.example\r\nContent-Length: 99999\r\n\r\nx"
            writer.write(b"GET / HTTP/1.1\r\n" + announced)
            async with asyncio.timeout(TIMEOUT):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 451 ")
                writer.close()
                await writer.wait_closed()

    asyncio.run(scenario())
    assert counts(registry) == {("vi", "malformed"): 3, ("vi", "explained"): 1}


def test_connections_over_the_cap_are_closed_and_counted() -> None:
    registry = CollectorRegistry()
    config = BlockPageConfig(enabled=True, listen=CONFIG.listen, max_connections=2)

    async def scenario() -> None:
        async with serving(Recorder(), config=config, registry=registry) as url:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            held = []
            request = b"GET / HTTP/1.1\r\nHost: casino.example\r\n\r\n"
            for _ in range(2):  # two kept-alive connections, each answered once
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(request)
                async with asyncio.timeout(TIMEOUT):
                    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 451")
                held.append(writer)
            assert await raw(url, request) == b""  # the third is closed at accept
            for writer in held:
                writer.close()

    asyncio.run(scenario())
    refused = next(f for f in registry.collect() if f.name.endswith("connections_refused"))
    assert [s.value for s in refused.samples] == [1]


def test_nothing_logged_holds_the_visitor_or_the_name(caplog: pytest.LogCaptureFixture) -> None:
    """Every log record made while serving good, bad and failing requests,
    at DEBUG and from every logger (aiohttp's included), is free of the
    visitor's address and of the visited name."""
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with serving(Recorder(fail=True), clients=LOOPBACK) as url:
            await fetch(url, "casino.example")
            await fetch(url, "casino.example", "POST")
            await raw(url, b"BAD REQUEST LINE\r\n\r\n")
            await raw(
                url, b"GET / HTTP/1.1\r\nHost: casino.example\r\nX: " + b"a" * 9000 + b"\r\n\r\n"
            )
        async with serving(Recorder()) as url:
            await fetch(url, "casino.example")

    asyncio.run(scenario())
    assert any(r.name == "filterd.blockpage" for r in caplog.records)  # Explain failed
    for record in caplog.records:
        logged = record.getMessage() + (caplog.text if record.exc_info else "")
        assert "127.0.0.1" not in logged and "casino" not in logged, record.getMessage()
