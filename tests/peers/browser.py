"""A real browser for the web pages filterd produces: headless Chromium's ``--dump-dom``.

The DOM after the page's parsing (and any script) is what a person would
see, so tests assert on it rather than on the HTML text alone. Chromium runs
in its own session and is killed with all its helper processes, by process
group, if it overstays its bounded time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
RENDER_TIMEOUT = 90.0


def rendered_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` (http:// or file://) after Chromium loaded it; the
    test is skipped if Chromium is not installed (tests/run installs it)."""
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
        "--dump-dom",
        url,
    ]
    browser = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        dom, errors = browser.communicate(timeout=RENDER_TIMEOUT)
    finally:
        if browser.poll() is None:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait(10)
    text = dom.decode()
    assert "<html" in text, errors.decode(errors="replace")[-2000:]
    return text
