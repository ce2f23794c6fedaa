"""The supervisor's handle on the trail: ordered, off the event loop, never fatal.

``emit`` applies the privacy floor to ``stats`` records (events.py:
``blocked_top`` only in records covering an hour or more), takes the time
at once (the record says when the event happened, not when the disk got to
it) and queues the write on a thread of its own, one record after another,
so an fsync never stalls the supervisor's loop (admin HTTP, sync, worker
control). A record that cannot be written (disk full, permissions) is
logged and counted in ``write_failures``; the daemon keeps filtering, since
stopping child-protection filtering because its paperwork failed would be
the worse failure. The next record tries again (reopening the trail, which
repairs a half-written line).

Counters for the metrics (read from the loop, written by the one thread):
``records_written``, ``write_failures``, ``last_write`` (Unix time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filterd.audit.chain import Head
from filterd.audit.events import privacy_floor
from filterd.audit.trail import TrailWriter
from filterd.config import AuditConfig
from filterd.sync.model import AuditHead

log = logging.getLogger("filterd.audit")

LOGGED_HEAD_EVENTS = frozenset({"stats", "stop", "rotate", "recover", "clock_step"})
"""After these, the head goes to the log too: one more copy outside the trail."""


class AuditRecorder:
    def __init__(self, config: AuditConfig, state_dir: Path) -> None:
        self.enabled = config.enabled
        self.path = config.resolve(state_dir)
        self._writer = TrailWriter(self.path, config.max_bytes, config.keep)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._closed = False
        self.records_written = 0
        self.write_failures = 0
        self.last_write = 0.0
        self._run_started: float | None = None
        self._anchor: AuditHead | None = None

    def open(self) -> None:
        """Find the end of the trail and repair it, on the writer's thread."""
        if self.enabled:
            self._executor.submit(self._open, datetime.now(UTC))

    def emit(self, event: str, fields: Mapping[str, Any]) -> None:
        """Queue one record; returns at once."""
        if not self.enabled:
            return
        moment, monotonic = datetime.now(UTC), time.monotonic()
        if event == "start":
            self._run_started = moment.timestamp()
        elif event == "stats":
            fields = privacy_floor(fields, self._run_started)
        if self._closed:
            self.write_failures += 1
            log.error("audit record %s after the trail was closed: not written", event)
            return
        self._executor.submit(self._write, event, dict(fields), moment, monotonic)

    def anchor(self) -> AuditHead | None:
        """The last record written (seq, hash, time), for a receipt to carry
        (anchor.py); None before the first. Safe to call from the loop: the
        writer thread replaces the value in one assignment."""
        return self._anchor

    async def flush(self) -> None:
        """Wait until every record queued so far is written (or has failed)."""
        if not self._closed:
            await asyncio.wrap_future(self._executor.submit(lambda: None))

    async def close(self) -> None:
        if self._closed:
            return
        await asyncio.wrap_future(self._executor.submit(self._writer.close))
        self._closed = True
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------- writer thread

    def _open(self, moment: datetime) -> None:
        try:
            self._writer.open(moment)
            head, last = self._writer.head, self._writer.last_time
            if head.seq and last is not None:
                self._anchor = AuditHead(head.seq, head.hash, last)
        except OSError as exc:
            log.error("audit trail %s cannot be opened: %s", self.path, exc)

    def _write(
        self, event: str, fields: dict[str, Any], moment: datetime, monotonic: float
    ) -> None:
        try:
            head = self._writer.append(event, fields, moment, monotonic)
        except OSError as exc:
            self.write_failures += 1
            log.error("audit record %s not written to %s: %s", event, self.path, exc)
            return
        except Exception:  # a bug must not kill the writer thread silently
            self.write_failures += 1
            log.exception("audit record %s not written", event)
            return
        self.records_written += 1
        self.last_write = time.time()
        self._anchor = AuditHead(head.seq, head.hash, self._writer.last_time or moment)
        if event in LOGGED_HEAD_EVENTS:
            _log_head(head)


def _log_head(head: Head) -> None:
    log.info("audit head: seq %d %s", head.seq, head.hash)
