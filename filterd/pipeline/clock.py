"""The wall clock that schedules read (docs/profiles.md, "Schedules").

Workers read the system clock: a schedule's window opens on the first query
after the minute it names. For end-to-end tests of schedules a running
daemon must see a chosen time, so ``FILTERD_CLOCK_FILE`` may name a file
holding a Unix time (or ISO 8601 date and time); the clock then reads that
file, re-reading it every ``TEST_POLL`` seconds instead of once a minute. It
is an environment variable, not a configuration key, because no
configuration should be able to move a production resolver's clock; only
whoever starts the process can, and a worker that uses it logs a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

CLOCK_FILE_VARIABLE: Final = "FILTERD_CLOCK_FILE"
TEST_POLL: Final = 0.2

log = logging.getLogger("filterd.clock")


@dataclass(frozen=True, slots=True)
class WallClock:
    """``read()`` gives Unix time; ``poll`` is how often schedules read it
    (``None``: at each minute boundary, when a schedule can change)."""

    read: Callable[[], float] = time.time
    poll: float | None = None


SYSTEM_CLOCK: Final = WallClock()


def clock_from_environment() -> WallClock:
    """The system clock, or the test clock ``FILTERD_CLOCK_FILE`` names."""
    path = os.environ.get(CLOCK_FILE_VARIABLE)
    if not path:
        return SYSTEM_CLOCK
    log.warning("%s=%s: schedules follow the time in that file, not the system clock",
                CLOCK_FILE_VARIABLE, path)  # fmt: skip
    return WallClock(_FileClock(Path(path)), TEST_POLL)


class _FileClock:
    """Reads a Unix time or an ISO 8601 time (with its offset, else UTC) from a file."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self) -> float:
        try:
            text = self._path.read_text().strip()
        except OSError:
            return time.time()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return time.time()
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC).timestamp()
        return moment.timestamp()
