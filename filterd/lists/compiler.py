"""The compiler process: ``python -m filterd.lists.compiler``.

The supervisor starts it for every (re)load, writes the pickled ``Config``
to its stdin and reads one pickled result from its stdout: a
``CompileReport``, or a ``ListError`` message. Running the parse in its own
short-lived process keeps its CPU off the serving path (the GIL would stall
queries even in a thread) and returns its memory peak to the system when it
exits. It runs in its own session, so signals meant for the daemon (SIGHUP,
a terminal's SIGINT) do not reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
from typing import Final

from filterd.config import Config
from filterd.errors import ListError
from filterd.lists.compile import CompileReport, compile_lists

COMPILER_NICENESS: Final = 10


async def compile_in_child(config: Config) -> CompileReport:
    """Run ``compile_lists(config)`` in a fresh child process; raise ``ListError`` on failure."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "filterd.lists.compiler",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        output, _ = await process.communicate(pickle.dumps(config))
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0 or not output:
        raise ListError(f"list compiler exited with status {process.returncode}")
    result = pickle.loads(output)
    if isinstance(result, CompileReport):
        return result
    raise ListError(str(result))


def main() -> int:
    # Only idle CPU time: on a busy machine the compile takes longer, but it
    # never delays a query (SCHED_IDLE, Linux); a high nice value otherwise.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(COMPILER_NICENESS)
    config = pickle.loads(sys.stdin.buffer.read())
    assert isinstance(config, Config)
    try:
        result: CompileReport | str = compile_lists(config)
    except ListError as exc:
        result = str(exc)
    sys.stdout.buffer.write(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
