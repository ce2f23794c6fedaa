"""An accessibility check in a real browser: axe-core run by headless Chromium.

Chromium is started with its DevTools protocol on a port of its own choosing
(``--remote-debugging-port=0``; it writes the port into the profile's
``DevToolsActivePort``), driven over the protocol's WebSocket (aiohttp):
load the page, inject axe-core (``axe.min.js``, shipped by the PyPI package
``axe-core-python``), run it for WCAG 2.1 A/AA and best practices, and
return the violations. The page's own Content-Security-Policy forbids
scripts, so the check asks Chromium to bypass it (``Page.setBypassCSP``): a
person's browser never runs a script there. Every wait is bounded, and
Chromium is killed with its helpers, by process group, whatever happens.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from tests.peers.browser import CHROMIUM

STEP_TIMEOUT: Final = 30.0
AXE_TAGS: Final = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice")
_RUN_AXE: Final = (
    "axe.run(document, {runOnly: {type: 'tag', values: %s}})"
    ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
    " nodes: v.nodes.map(n => n.target.join(' '))})))"
)


def axe_script() -> str:
    """axe-core's source; the test is skipped when the package is missing."""
    try:
        import axe_core_python  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        pytest.skip("axe-core-python is not installed (pip install -e '.[test]')")
    return (Path(axe_core_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


class _Session:
    """One page target's DevTools WebSocket: commands answered by id, events by name."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.events: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        await self._socket.send_json({"id": number, "method": method, "params": params})
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                message = json.loads(await self._socket.receive_str())
                if message.get("id") == number:
                    if "error" in message:
                        raise AssertionError(f"{method}: {message['error']}")
                    result: dict[str, Any] = message["result"]
                    return result
                self.events.append(message.get("method", ""))

    async def wait_for(self, event: str) -> None:
        async with asyncio.timeout(STEP_TIMEOUT):
            while event not in self.events:
                message = json.loads(await self._socket.receive_str())
                self.events.append(message.get("method", ""))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


def axe_violations(
    urls: Sequence[str], profile: Path, flags: Sequence[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """axe-core's violations on each of ``urls`` as Chromium renders it, by
    URL. Blocking (it runs its own event loop): call it from a thread when
    the page is served by the caller's loop."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed: {urls} not checked for accessibility")
    script = axe_script()
    profile.mkdir(parents=True, exist_ok=True)
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        *flags,
        "about:blank",
    ]
    browser = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        port = _devtools_port(profile / "DevToolsActivePort", browser)
        return asyncio.run(_check(port, urls, script))
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)


async def _check(port: int, urls: Sequence[str], script: str) -> dict[str, list[dict[str, Any]]]:
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(STEP_TIMEOUT):
            targets = await (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as socket:
            session = _Session(socket)
            await session.call("Page.enable")
            await session.call("Page.setBypassCSP", enabled=True)
            found = {}
            for url in urls:
                session.events.clear()
                await session.call("Page.navigate", url=url)
                await session.wait_for("Page.loadEventFired")
                await session.evaluate(script)
                found[url] = await session.evaluate(_RUN_AXE % json.dumps(list(AXE_TAGS)))
            return found


def _devtools_port(path: Path, browser: subprocess.Popen[bytes]) -> int:
    """The port Chromium chose, once it has written it (bounded wait)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise AssertionError(f"Chromium exited with status {browser.returncode}")
        lines = path.read_text().splitlines() if path.exists() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        time.sleep(0.1)
    raise AssertionError(f"Chromium wrote no {path} within {STEP_TIMEOUT:.0f} s")
