"""A real browser for the web pages filterd produces: headless Chromium's
``--dump-dom`` and ``--screenshot``.

The DOM after the page's parsing (and any script) is what a person would
see, so tests assert on it rather than on the HTML text alone; a screenshot
is what a person would look at. ``flags`` are further Chromium switches
(``--host-resolver-rules`` sends a name to a loopback port, so the page
gets the Host header a visitor's browser sends). Chromium runs in its own
session and is killed with all its helper processes, by process group, if
it overstays its bounded time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
RENDER_TIMEOUT = 90.0


def rendered_dom(url: str, profile: Path, flags: Sequence[str] = ()) -> str:
    """The DOM of ``url`` (http:// or file://) after Chromium loaded it; the
    test is skipped if Chromium is not installed (tests/run installs it)."""
    dom, errors = _chromium(url, profile, [*flags, "--dump-dom"])
    text = dom.decode()
    assert "<html" in text, errors.decode(errors="replace")[-2000:]
    return text


def screenshot(
    url: str, profile: Path, path: Path, size: tuple[int, int], flags: Sequence[str] = ()
) -> Path:
    """A PNG of ``url`` in a window of ``size`` (width, height) CSS pixels, at ``path``."""
    switches = [*flags, f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"]
    _, errors = _chromium(url, profile, [*switches, f"--screenshot={path}"])
    assert path.is_file() and path.stat().st_size, errors.decode(errors="replace")[-2000:]
    return path


def _chromium(url: str, profile: Path, switches: Sequence[str]) -> tuple[bytes, bytes]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed: {url} was not rendered in a browser")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *switches,
        url,
    ]
    browser = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        return browser.communicate(timeout=RENDER_TIMEOUT)
    finally:
        if browser.poll() is None:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(10)
