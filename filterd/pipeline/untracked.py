"""Table entries kept out of the cyclic garbage collector's sight.

The query path's tables (cached answers, a group's served repeats, verdict
memos, spliced rewrites) are dicts of tuples of bytes and numbers, filled
at up to tens of thousands of entries a second. CPython tracks every new
tuple, and a dict that holds a tracked value is tracked for good; each
collection of a generation then visits every new tuple and every entry of
every tracked dict in it. Measured in a worker under load (bench/README.md,
"Collector pauses"): 6-20 ms young collections every second while the
tables fill, 40-140 ms after a list swap, a full collection of half a
second, and the worker answers nothing meanwhile.

``store(table, key, value)`` is ``table[key] = value``, except that a tuple
``value`` none of whose items the collector tracks (bytes, numbers,
``None``, tuples of those) leaves its sight at once, which CPython itself
does only during a collection, after paying to visit it. Such a tuple
cannot be part of a reference cycle, so the collector has nothing to find
in it; reference counting still frees it. A dict whose keys and values are
all untracked stays untracked, and no collection ever visits it. The
tables above are written through ``store`` and nothing else.

The C extension ``filterd.pipeline._untracked`` does it (the store is
inside it because compiled callers box a new tuple wherever a fixed-length
tuple becomes an object). An install without a C compiler stores plainly:
the tables are then visited, correct and with the pauses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _store(table: dict[Any, Any], key: Any, value: Any) -> None:
    table[key] = value


def _store_call() -> tuple[Callable[[dict[Any, Any], Any, Any], None], bool]:
    try:
        from filterd.pipeline import _untracked  # noqa: PLC0415 - optional, built with a compiler
    except ImportError:
        return _store, False
    return _untracked.store, True


store, NATIVE_STORE = _store_call()
"""``NATIVE_STORE``: True when the C extension stores (a compiled install)."""
