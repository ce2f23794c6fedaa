"""Shared test fixtures: where the real third-party data lives, and the state dir.

Also a guard for editable installs: ``pip install -e .`` compiles the query
path's modules in place (``filterd/compiled.py``), and Python loads a
module's C extension before its source, so a source edited after the build
would not be what the tests run. The session stops with the fix instead.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import pytest

from filterd.compiled import COMPILED, EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real blocklists beside the checkout (../shared/data); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data tests need {SHARED_DATA} (shared test data beside the checkout)")
    return SHARED_DATA


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = []
    for source in [*COMPILED, *EXTENSIONS.values()]:
        path = ROOT / source
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            built = path.with_suffix(suffix)
            if built.exists() and built.stat().st_mtime < path.stat().st_mtime:
                stale.append(source)
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}; rebuild with "
            "`.venv/bin/pip install -e .` (tests/run does) or remove the .so files",
            returncode=2,
        )
