"""Logging setup, done once by the process entry point (never at import time).

Lines go to stderr (journald captures them under systemd) as
``LEVEL component: message``; the process role (supervisor, worker N) is in
the logger name. No query is ever logged: per-query logging is both a
hot-path cost and a record of who asked for what.
"""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, role: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(levelname)s %(name)s[{role}]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
