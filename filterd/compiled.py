"""Which modules an install compiles, and whether this install did.

The query path's modules are compiled with mypyc when filterd is installed
on a machine with a C compiler and the Python headers (``setup.py`` reads
``COMPILED`` from this file; ``FILTERD_COMPILE=0`` turns it off). mypyc
turns the same typed source into a C extension: no second implementation,
the same tests. Measured in ``bench/README.md`` ("The query path compiled"):
about half the CPU instructions per query and per cache miss, a quarter
less CPU per miss; a loaded worker gains less (8-38 % more queries per
second on one core in alternating runs), because the kernel's send path and
the interpreted read loop remain. Without a compiler the install is the
same code, interpreted.

Nothing here imports the modules it names, so the supervisor can report the
build (``filterd_build_info``'s ``compiled`` label) without loading the query
path, and ``setup.py`` can read the list without importing the package.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
from typing import Final

COMPILED: Final = (
    "filterd/histogram.py",
    "filterd/listeners/hotloop.py",
    "filterd/listeners/mmsg.py",
    "filterd/listeners/udp.py",
    "filterd/matching/index.py",
    "filterd/matching/matcher.py",
    "filterd/pipeline/cache.py",
    "filterd/pipeline/clients.py",
    "filterd/pipeline/forward.py",
    "filterd/pipeline/guard.py",
    "filterd/pipeline/memo.py",
    "filterd/pipeline/pipeline.py",
    "filterd/pipeline/policy.py",
    "filterd/pipeline/ratelimit.py",
    "filterd/pipeline/rewrite.py",
    "filterd/pipeline/tally.py",
    "filterd/upstream/exchange.py",
    "filterd/upstream/sockets.py",
    "filterd/wire/answer.py",
    "filterd/wire/names.py",
    "filterd/wire/query.py",
    "filterd/wire/synth.py",
)
"""Source files of the query path, relative to the project root. Not here:
``listeners/serving.py`` (asyncio's selector: it subclasses a standard-library
class, which a compiled class cannot) and ``listeners/mmsgcalls.py`` (ctypes
structures, which mypyc cannot compile)."""

EXTENSIONS: Final = {
    "filterd.listeners._mmsgcall": "filterd/listeners/_mmsgcall.c",
    "filterd.pipeline._untracked": "filterd/pipeline/_untracked.c",
    "filterd.pipeline._render": "filterd/pipeline/_render.c",
}
"""C extensions built with the compiled modules (module name: source), each
with a fallback in Python for an install without a compiler: ``_mmsgcall``
makes the two system calls of ``listeners/mmsgcalls.py`` without ctypes and
the UDP batch's per-datagram copies without memoryviews;
``_untracked`` takes the query path's table tuples out of the cyclic
collector's sight (``pipeline/untracked.py``); ``_render`` ages a cached
answer's TTLs in one copy (``pipeline/cache.py``)."""


def module_name(path: str) -> str:
    """``filterd/wire/query.py`` -> ``filterd.wire.query``."""
    return path.removesuffix(".py").replace("/", ".")


def compiled_modules() -> list[str]:
    """The modules of ``COMPILED`` and ``EXTENSIONS`` that this install loads
    from a C extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in [*map(module_name, COMPILED), *EXTENSIONS]:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(suffixes):
            found.append(name)
    return found


@functools.cache
def query_path_compiled() -> bool:
    """Every module of ``COMPILED`` and ``EXTENSIONS`` loads from its C
    extension (asked once: an install does not change under a running process)."""
    return len(compiled_modules()) == len(COMPILED) + len(EXTENSIONS)
