"""Bounded memo tables of the query path: room made without a pause.

The query path memoises per question (verdicts, repeats served as they
were) in plain dicts, the fastest lookup Python has. They are bounded, and
what happens when one is full matters for latency: ``dict.clear()`` on half
a million entries frees them all at once, about 8 ms during which the
worker answers nothing. ``make_room`` drops the newest ``1/EVICT_SHARE``
of the entries instead: ``popitem`` takes the last inserted entry in O(1)
and leaves its slot to the next insertion, so nothing is rehashed, and a
full table costs a fraction of a millisecond once every few thousand
insertions. Dropping the newest keeps what a table has held longest, which
under a flood of unique names (a random-subdomain attack, the miss-heavy
benchmark) is the working set the flood would otherwise wash out.

``release`` frees a table that no longer serves (a retired snapshot's) a
slice at a time between passes of the event loop, for the same reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

EVICT_SHARE: Final = 64
RELEASE_SLICE: Final = 512
"""Entries freed per event-loop pass by ``release``: 0.1-0.4 ms (4,096 took
1-3.4 ms a pass in a worker at 60k queries a second, ``bench/swap``)."""


def make_room(table: dict[Any, Any]) -> None:
    """Drop the newest ``len(table) // EVICT_SHARE`` entries (at least one)."""
    pop = table.popitem
    for _ in range(max(1, len(table) // EVICT_SHARE)):
        pop()


async def release(tables: Iterable[dict[Any, Any]]) -> None:
    """Empty ``tables`` a slice at a time, yielding to the event loop between slices."""
    for table in tables:
        pop = table.popitem
        while table:
            for _ in range(min(RELEASE_SLICE, len(table))):
                pop()
            await asyncio.sleep(0)
