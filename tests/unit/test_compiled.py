"""The build compiles the query path, and says whether it did.

``setup.py`` compiles the modules ``filterd/compiled.py`` lists (mypyc);
``tests/run`` installs with ``FILTERD_COMPILE=1``, so this suite runs what
ships on a machine with a compiler, and a list entry that stopped compiling
(or a build that fell back to source) fails here rather than going unseen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filterd.compiled import COMPILED, EXTENSIONS, compiled_modules, module_name

ROOT = Path(__file__).resolve().parents[2]


def test_every_listed_module_exists_once() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for source in [*COMPILED, *EXTENSIONS.values()]:
        assert (ROOT / source).is_file(), source
        assert source.startswith("filterd/")
    for name, source in EXTENSIONS.items():
        assert module_name(source.removesuffix(".c") + ".py") == name


@pytest.mark.skipif(
    os.environ.get("FILTERD_COMPILE") == "0", reason="installed with FILTERD_COMPILE=0"
)
def test_this_install_runs_every_listed_module_compiled() -> None:
    assert compiled_modules() == [module_name(source) for source in COMPILED] + list(EXTENSIONS)


def test_setup_reads_the_same_list_without_importing_the_package() -> None:
    """``setup.py`` runs before filterd's dependencies are installed."""
    script = (
        "import runpy; namespace = runpy.run_path('setup.py', run_name='probe');"
        "print(namespace['build_lists']())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == repr((list(COMPILED), dict(EXTENSIONS)))
