"""The block page in a real browser: headless Chromium visits blocked names.

The page is served on loopback by ``BlockPage`` itself (its capped
listener, port 0); Chromium's ``--host-resolver-rules`` sends the blocked
names to that port, so the request carries the Host header a subscriber's
browser sends after the resolver answered with the sinkhole address. The
test reads the rendered DOM (Vietnamese by the browser's Accept-Language,
English by ``?lang=en``), saves a phone-sized screenshot into the test's
temporary directory (its path is printed), runs axe-core (WCAG 2.1 A/AA and
best practices) on the explained, the profile and the generic page, and
checks the request counters. Every Chromium run is bounded in time
(tests/peers/browser.py, tests/peers/devtools.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry

from filterd.blockpage.reason import BlockedBy, BlockReason, IPAddress
from filterd.blockpage.server import BlockPage
from filterd.config import BlockPageConfig, Endpoint
from tests.integration.conftest import DaemonFactory, standard_config
from tests.peers.authoritative import FakeUpstream
from tests.peers.browser import rendered_dom, screenshot
from tests.peers.devtools import axe_violations
from tests.peers.ports import free_port

REASONS = {
    "casino.example": BlockReason("gambling", BlockedBy.STATE, "Danh sách quốc gia"),
    "game.example": BlockReason("games", BlockedBy.PROFILE, "school-primary"),
}
CONFIG = BlockPageConfig(
    enabled=True,
    listen=(Endpoint("127.0.0.1", 0),),
    operator="Nhà mạng Ví Dụ",
    contact_text="Tổng đài chăm sóc khách hàng 1800 0000, hoặc thư điện tử:",
    contact_link="mailto:hotro@example.vn",
)

FLAWED = 'data:text/html,<title>x</title><img src="x"><p style="color:%23ccc">faint</p>'
"""A page axe must fault: no lang, an image without text, faint text."""


def explain(name: str, client: IPAddress) -> BlockReason | None:
    return REASONS.get(name)


def test_block_page_in_chromium(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    loopback = [ipaddress.ip_network("127.0.0.0/8")]

    async def scenario() -> None:
        async with BlockPage(CONFIG, explain, registry, loopback) as page:
            port = page.addresses[0][1]
            flags = [
                f"--host-resolver-rules=MAP *.example 127.0.0.1:{port}",
                # No HTTPS upgrade attempt first: the sinkhole serves HTTP only.
                "--disable-features=HttpsUpgrades",
            ]
            vi_flags = [*flags, "--accept-lang=vi-VN,vi"]
            profile = tmp_path / "chromium"
            url = "http://casino.example/khuyen-mai?ref=1"

            dom = await asyncio.to_thread(rendered_dom, url, profile, vi_flags)
            assert '<html lang="vi">' in dom
            assert "<h1>Trang web này đã bị chặn</h1>" in dom
            assert "<strong>casino.example</strong>" in dom
            assert "<dd>Cờ bạc</dd>" in dom
            assert "Yêu cầu của cơ quan nhà nước có thẩm quyền — Danh sách quốc gia" in dom
            assert "Tổng đài quốc gia bảo vệ trẻ em" in dom
            assert '<a href="tel:111">Gọi 111</a>' in dom
            assert '<a href="mailto:hotro@example.vn">hotro@example.vn</a>' in dom

            english = await asyncio.to_thread(rendered_dom, url + "&lang=en", profile, vi_flags)
            assert '<html lang="en">' in english and "<dd>Gambling</dd>" in english
            assert '<a href="tel:111">Call 111</a>' in english

            shot = await asyncio.to_thread(
                screenshot, url, profile, tmp_path / "block-page-vi-phone.png", (390, 844), vi_flags
            )
            print(f"block page screenshot: {shot}")

            urls = [url, url + "&lang=en", "http://game.example/", "http://unlisted.example/"]
            found = await asyncio.to_thread(
                axe_violations, [*urls, FLAWED], tmp_path / "axe", vi_flags
            )
            # The check can fail: a flawed page has the violations it should.
            flaws = {violation["id"] for violation in found.pop(FLAWED)}
            assert {"html-has-lang", "image-alt", "color-contrast"} <= flaws, flaws
            assert found == {u: [] for u in urls}, found

    asyncio.run(scenario())
    counts = {
        (s.labels["language"], s.labels["outcome"]): s.value
        for family in registry.collect()
        if family.name == "filterd_blockpage_requests"
        for s in family.samples
        if s.value
    }
    # vi: the DOM, the screenshot, axe on casino and game; en: the DOM and
    # axe; the unlisted name: the generic page. Favicon requests are not counted.
    assert counts == {("vi", "explained"): 4, ("en", "explained"): 2, ("vi", "generic"): 1}


def test_the_daemon_serves_the_page_for_what_it_sinkholes(
    make_daemon: DaemonFactory, upstream: FakeUpstream
) -> None:
    """``filterd run`` with ``block_page.enabled``: a name answered with the
    sinkhole gets the page that names its category and authority (451 for the
    national list), from the generation the workers serve; a name the
    resolver does not block gets the generic page."""
    port = free_port()
    extra = f'block_page: {{enabled: true, listen: ["127.0.0.1:{port}"], operator: "Ví Dụ"}}\n'
    config = standard_config(upstream.endpoint, extra=extra).replace(
        "{adult: sinkhole}", "{adult: sinkhole, gambling: sinkhole}"
    )
    daemon = make_daemon(config).start()
    answer = daemon.query("www.gambling.example")
    assert [rr.to_text() for rr in answer.answer[0]] == ["192.0.2.80"]

    def fetch(host: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    status, page = fetch("www.gambling.example")
    assert status == 451
    assert "gambling" in page or "cờ bạc" in page.lower()
    assert 'href="tel:111"' in page
    status, page = fetch("www.example.com")  # resolves normally: nothing to explain
    assert status == 403
    assert "cờ bạc" not in page.lower()
    counts = daemon.metrics()
    assert counts['filterd_blockpage_requests_total{language="vi",outcome="explained"}'] == 1
    assert counts['filterd_blockpage_requests_total{language="vi",outcome="generic"}'] == 1
    assert "www.gambling.example" not in daemon.log  # no visited name in the log
