"""The list compiler takes only CPU time that the workers leave idle.

``run_idle`` is what the compiler process does first: in a session of its
own (as ``compile_in_child`` starts it), its scheduler autogroup goes to
nice 19 and its policy to SCHED_IDLE. Checked in a real child process,
since both settings are per process and irreversible for an unprivileged one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filterd.lists.compile_child import AUTOGROUP_NICENESS

PROBE = """
import os
from filterd.lists.compile_child import run_idle
run_idle()
print(os.sched_getscheduler(0))
try:
    print(open("/proc/self/autogroup").read().split()[-1])
except OSError:
    print("none")
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_a_compiler_in_its_own_session_lowers_its_group_and_runs_idle() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
        timeout=60,
    )
    policy, group_nice = done.stdout.split()
    assert int(policy) == os.SCHED_IDLE
    if Path("/proc/self/autogroup").exists():
        assert int(group_nice) == AUTOGROUP_NICENESS
