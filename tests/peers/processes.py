"""Stopping the processes a test started: by their PID, never by name."""

from __future__ import annotations

import signal
import subprocess
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
