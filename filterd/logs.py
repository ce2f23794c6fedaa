"""Logging setup, done once by the process entry point (never at import time).

Lines go to stderr (journald captures them under systemd) as
``LEVEL component: message``; the process role (supervisor, worker N) is in
the logger name. No query is ever logged: per-query logging is both a
hot-path cost and a record of who asked for what.

Whoever can reach a port can make a line be logged (a refused notification,
a refused admin request, an accept that fails for want of descriptors), so
every warning and error is rate limited by its origin (logger and message
template): at most ``BURST`` in ``WINDOW`` seconds, then one line that says
how many were left out. Information lines (the daemon's own actions, the
audit head) are never left out. Counters, not logs, are the complete record (every refusal is in
a metric). Before, 2,000 refused notifications a second wrote 196 KB/s, and
descriptor exhaustion wrote 43 MB in 25 s.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Final

WINDOW: Final = 10.0
BURST: Final = 5
MAX_ORIGINS: Final = 1024


class RateLimit(logging.Filter):
    """At most ``BURST`` records per origin per ``WINDOW``; the first record
    of the next window reports how many were suppressed."""

    def __init__(
        self,
        window: float = WINDOW,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window = window
        self._burst = burst
        self._clock = clock
        self._origins: dict[tuple[str, str], list[float]] = {}
        """(logger, template) -> [window start, lines in it, lines suppressed]."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self._clock()
        origin = (record.name, str(record.msg))
        state = self._origins.get(origin)
        if state is None or now - state[0] >= self._window:
            suppressed = int(state[2]) if state is not None else 0
            if len(self._origins) >= MAX_ORIGINS:
                self._origins.clear()
            self._origins[origin] = [now, 1.0, 0.0]
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} more like this not logged]"
            return True
        if state[1] < self._burst:
            state[1] += 1
            return True
        state[2] += 1
        return False


def configure_logging(level: str, role: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(levelname)s %(name)s[{role}]: %(message)s"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
