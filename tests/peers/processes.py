"""Waiting for and stopping the processes a test started: bounded, by PID, never by name."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any


def terminate(process: subprocess.Popen[Any], grace: float) -> bool:
    """SIGTERM ``process``, SIGKILL it if it has not exited after ``grace``
    seconds, and reap it. True if it exited by itself (or already had)."""
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)
        return False


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout}s")
