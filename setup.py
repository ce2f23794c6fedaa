"""Build: the query path compiled with mypyc where a C compiler is present.

Everything else about the package is in ``pyproject.toml``. The modules to
compile, and the C extensions built with them, are listed in
``filterd/compiled.py`` (read here without importing the package). They are
compiled when a C compiler and the Python headers are found; otherwise, or
with ``FILTERD_COMPILE=0``, the same modules install as Python source (and
the C extensions' Python fallbacks serve) and a notice says so.
``FILTERD_COMPILE=1`` makes a missing compiler an error instead (CI uses it,
so that a silent fallback cannot pass for a build).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def build_lists() -> tuple[list[str], dict[str, str]]:
    """``COMPILED`` (for mypyc) and ``EXTENSIONS`` (C modules) of ``filterd/compiled.py``."""
    namespace: dict[str, Any] = {}
    exec((ROOT / "filterd" / "compiled.py").read_text(), namespace)
    return list(namespace["COMPILED"]), dict(namespace["EXTENSIONS"])


def missing_toolchain() -> str | None:
    """Why this machine cannot compile an extension, or None if it can."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}; on Debian: apt-get install gcc)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers in {include} (on Debian: apt-get install python3-dev)"
    return None


def ext_modules() -> list[Any]:
    choice = os.environ.get("FILTERD_COMPILE", "")
    if choice == "0":
        return []
    why = missing_toolchain()
    if why is not None:
        if choice == "1":
            raise SystemExit(f"FILTERD_COMPILE=1 but {why}")
        print(f"filterd: installing the query path uncompiled: {why}", file=sys.stderr)
        return []
    from mypyc.build import mypycify  # noqa: PLC0415  # only a build that compiles needs mypy
    from setuptools import Extension  # noqa: PLC0415

    sources, extensions = build_lists()
    compiled = mypycify(
        ["--ignore-missing-imports", "--follow-imports=silent", *sources], opt_level="3"
    )
    native = [Extension(name, [source]) for name, source in extensions.items()]
    return [*compiled, *native]


if __name__ == "__main__":  # as pip's build backend runs it; importing it builds nothing
    setup(ext_modules=ext_modules())
