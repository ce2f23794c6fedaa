"""An aiohttp application served on 127.0.0.1 (port 0) from a thread of its own.

HTTP test peers (the fake authority, a node's notification receiver) must
keep answering while the test itself blocks: on a daemon being started, on
a CLI process that pushes to them, on a socket. Each one runs its own event
loop in a daemon thread; ``stop`` ends the loop, cleans up the runner and
joins the thread, all bounded in time.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web


class ThreadedApp:
    def __init__(self, app: web.Application, name: str) -> None:
        self._app = app
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, timeout: float = 10.0) -> int:
        """Serve the application; return its port once it accepts connections."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self._app, access_log=None)
            loop.run_until_complete(runner.setup())
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{self._name} did not start")
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
