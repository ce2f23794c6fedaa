"""List compilation for the supervisor: which lists, from which snapshots, logged.

The compile itself runs in a child process (filterd/lists/compile.py: the
parse's CPU and memory peak never land on a serving process; the result is
a memory-mapped index file). This part decides what it compiles: the
configured lists, less any synced list never obtained (``sync.on_missing``:
``local-only`` leaves it out, ``not-ready`` waits for its first snapshot
at start-up), with each obtained synced snapshot pinned so that a sync
landing meanwhile cannot change the bytes under the compiler. It logs
every list's counts and problem lines, and counts the files a guard
refused (filterd/lists/guard.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from filterd.config import Config
from filterd.lists import guard
from filterd.lists.compile import CompileReport, compile_in_child
from filterd.metrics import SupervisorState
from filterd.supervisor.syncing import Syncing
from filterd.sync import store

log = logging.getLogger("filterd")

Compiled = tuple[CompileReport, dict[str, store.Pin]]
"""A compiled index and the pinned synced snapshots it was compiled from."""
PROBLEM_LINES = 10
"""Problem lines logged per list; the rest are counted."""


class ListCompiler:
    def __init__(self, syncing: Syncing, state: SupervisorState) -> None:
        self._syncing = syncing
        self._state = state

    async def when_lists_ready(self, config: Config) -> Compiled:
        """Compile once every synced list is available, or per ``sync.on_missing``."""
        if config.sync.on_missing == "not-ready":
            for lst in config.lists:
                if lst.sync and self._syncing.not_obtained(lst.sync):
                    log.warning(
                        "list %s: no snapshot of authority list %r yet; not ready "
                        "until the first sync succeeds",
                        lst.name,
                        lst.sync,
                    )
                    await self._syncing.wait_first(lst.sync)
        return await self.compile(config)

    async def compile(self, config: Config) -> Compiled:
        """Compile ``config``'s lists as obtained now: the report, and the
        synced snapshots it holds (to be reported once installed)."""
        effective = self._effective(config)
        pins = self._pins(effective)
        try:
            report = await compile_in_child(effective, pins, guard.load_baseline(config.state_dir))
        except guard.ListRefused as exc:
            key = (exc.list_name, exc.reason)
            self._state.list_refusals[key] = self._state.list_refusals.get(key, 0) + 1
            raise
        finally:
            for list_id in pins:
                store.unpin(config.state_dir, list_id)
        _log_report(report)
        return report, pins

    def _effective(self, config: Config) -> Config:
        """``config`` without the synced lists never obtained (``on_missing: local-only``)."""
        lists = tuple(
            lst for lst in config.lists if not lst.sync or not self._syncing.not_obtained(lst.sync)
        )
        return replace(config, lists=lists)

    def _pins(self, config: Config) -> dict[str, store.Pin]:
        """The obtained snapshot of every synced list in ``config``, pinned for
        a compile. No await in here: the sync clients, on this event loop, are
        the only writers of what is pinned."""
        pins = {}
        for lst in config.lists:
            obtained = self._syncing.obtained(lst.sync) if lst.sync else None
            if lst.sync and obtained is not None:
                pins[lst.sync] = store.pin(config.state_dir, lst.sync, obtained)
        return pins


def _log_report(report: CompileReport) -> None:
    for source in report.sources:
        level = logging.WARNING if source.invalid else logging.INFO
        log.log(
            level,
            "list %s (%s, %s): %d entries: %d accepted, %d invalid, %d ignored",
            source.name,
            source.format,
            source.version,
            source.entries,
            source.accepted,
            source.invalid,
            source.ignored,
        )
        for problem in source.problems[:PROBLEM_LINES]:
            log.log(level, "  %s", problem)
        if len(source.problems) > PROBLEM_LINES:
            more = source.invalid + source.ignored - PROBLEM_LINES
            log.log(level, "  ... %d more problem lines", more)
    log.info(
        "index: %d distinct names, %s in %.2fs",
        report.distinct_names,
        "reused" if report.reused else "compiled",
        report.seconds,
    )
