"""The compiler process: ``python -m filterd.lists.compile_child``.

The supervisor starts it (``compile_in_child``) for every (re)load, writes
the pickled ``CompileRequest`` to its stdin and reads one pickled result from its
stdout: a ``CompileReport``, or the ``ListError`` that stopped it (an
``OSError``, such as a full or read-only state directory, becomes one that
names the file). Running the parse
in its own short-lived process keeps its CPU off the serving path (the GIL
would stall queries even in a thread) and returns its memory peak to the
system when it exits.

The process lowers its CPU priority before anything else: importing the
compiler (NumPy, the config schema) costs about 0.3 s of CPU, and at normal
priority on a worker's core that alone held queries for milliseconds during
a live swap (``bench/swap``). So this module imports only the standard
library at the top and the compiler after the priority is set.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from pathlib import Path
from typing import Final

COMPILER_NICENESS: Final = 10
AUTOGROUP_NICENESS: Final = 19


def run_idle() -> None:
    """Take only idle CPU time from now on: on a busy machine the compile
    takes longer, but it never delays a query.

    Two levels, because a policy only ranks a process inside its scheduler
    group. With autogroups (``kernel.sched_autogroup_enabled``, on in most
    distributions' kernels, and in effect when the cgroup has no CPU
    controller) every session is a group with an equal share of a CPU: this
    process is a session of its own (``compile_in_child``), so its group is
    set to nice 19 (weight 15 against a worker's 1024). Inside the group it
    runs SCHED_IDLE; where that policy does not exist, at a high nice value.
    Measured under 60k qps on a worker's core: the compiler took half the
    core before, the CPU the worker left idle after."""
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(f"{AUTOGROUP_NICENESS}\n")
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(COMPILER_NICENESS)


def main() -> int:
    run_idle()
    from filterd.errors import ListError  # noqa: PLC0415 - only once idle (module docstring)
    from filterd.lists.compile import CompileReport, CompileRequest, compile_lists  # noqa: PLC0415

    request = pickle.loads(sys.stdin.buffer.read())
    assert isinstance(request, CompileRequest)
    try:
        result: CompileReport | ListError = compile_lists(
            request.config, request.pins, request.baseline
        )
    except ListError as exc:
        result = exc
    except OSError as exc:  # e.g. a read-only or full state directory
        where = f"{exc.filename}: " if exc.filename else ""
        result = ListError(f"list compiler: {where}{exc.strerror or exc}")
    sys.stdout.buffer.write(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
