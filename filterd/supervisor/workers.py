"""Worker processes as the supervisor sees them: start, talk to, drain.

A ``WorkerHandle`` is one worker process (``python -m filterd.worker``)
with its listening sockets (inherited file descriptors) and its end of the
control channel (filterd/control.py): one request at a time, each with a
time limit. Workers run in their own session, so only the supervisor
receives the daemon's signals and decides what workers do. A worker that
keeps dying is restarted after growing delays (``RestartBackoff``), which
start over once it has served for ``STABLE_AFTER`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from typing import Final

from filterd import control
from filterd.stats import WorkerStats
from filterd.supervisor.sockets import WorkerSockets

log = logging.getLogger("filterd")

RESTART_BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER: Final = 60.0
"""Seconds a worker must serve before its restart backoff starts over."""
EXIT_WAIT: Final = 2.0
"""Seconds a drained worker has to exit before it is killed."""


class RestartBackoff:
    """Delays between restarts of one worker: growing while it keeps dying
    (``RESTART_BACKOFF``), from the first step again once it has run for
    ``STABLE_AFTER`` seconds (a crash after hours of service is not a loop)."""

    def __init__(self) -> None:
        self._step = 0
        self._started = 0.0

    def started(self, now: float) -> None:
        self._started = now

    def next_delay(self, now: float) -> float:
        if self._started and now - self._started >= STABLE_AFTER:
            self._step = 0
        delay = RESTART_BACKOFF[min(self._step, len(RESTART_BACKOFF) - 1)]
        self._step += 1
        self._started = 0.0
        return delay


class WorkerHandle:
    """One worker process and its end of the control channel."""

    def __init__(self, index: int, sockets: WorkerSockets) -> None:
        self.index = index
        self.sockets = sockets
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.generation = 0
        """The generation this process committed (0: none yet)."""
        self.last_stats = WorkerStats()
        self.lock = asyncio.Lock()
        self.backoff = RestartBackoff()

    async def start(self, log_level: str) -> None:
        parent, child = socket.socketpair()
        fds = self.sockets
        args = [
            # -P: the installed filterd, never a filterd/ in the current directory.
            sys.executable, "-P", "-m", "filterd.worker",
            "--control", str(child.fileno()),
            "--udp", ",".join(str(s.fileno()) for s in fds.udp),
            "--udp-send", ",".join("-" if s is None else str(s.fileno()) for s in fds.udp_send),
            "--tcp", ",".join(str(s.fileno()) for s in fds.tcp),
            "--index", str(self.index),
            "--log-level", log_level,
        ]  # fmt: skip
        try:
            # Own session: only the supervisor receives the daemon's signals and
            # decides what workers do (drain on stop, nothing on reload).
            self.process = await asyncio.create_subprocess_exec(
                *args,
                pass_fds=[child.fileno(), *fds.fds()],
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.backoff.started(time.monotonic())
        self.reader, self.writer = await asyncio.open_unix_connection(sock=parent)
        self.generation = 0

    async def request(self, message: control.Message, timeout: float) -> control.Message:
        """Send ``message`` and wait for the worker's reply (one at a time)."""
        async with self.lock:
            if self.writer is None or self.reader is None:
                raise control.ChannelClosed("worker not running")
            await control.send(self.writer, message)
            async with asyncio.timeout(timeout):
                return await control.receive(self.reader)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def close_channel(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def drain(self, timeout: float) -> None:
        """Let the worker answer what is in flight (up to ``timeout``) and exit;
        killed if it has not exited ``EXIT_WAIT`` seconds after that."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(control.ChannelClosed, TimeoutError, OSError):
            await self.request(control.Drain(timeout), timeout + EXIT_WAIT)
        try:
            async with asyncio.timeout(EXIT_WAIT):
                await process.wait()
        except TimeoutError:
            log.warning("worker %d did not exit; killing it", self.index)
            process.kill()
            await process.wait()
        self.close_channel()
