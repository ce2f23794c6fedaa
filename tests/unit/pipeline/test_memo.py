"""Bounded memo tables: room made without emptying, retired tables freed in slices."""

from __future__ import annotations

import asyncio

from filterd.pipeline.memo import EVICT_SHARE, RELEASE_SLICE, make_room, release


def test_making_room_drops_the_newest_share_and_keeps_the_oldest() -> None:
    table = {f"name{i}": i for i in range(EVICT_SHARE * 100)}
    make_room(table)
    assert len(table) == EVICT_SHARE * 100 - 100
    assert "name0" in table and f"name{EVICT_SHARE * 100 - 101}" in table
    assert f"name{EVICT_SHARE * 100 - 100}" not in table  # the newest went first


def test_making_room_in_a_small_table_drops_at_least_one_entry() -> None:
    table = {"a": 1, "b": 2}
    make_room(table)
    assert table == {"a": 1}


def test_release_empties_every_table_and_lets_the_loop_run_between_slices() -> None:
    tables = [{i: i for i in range(RELEASE_SLICE * 3)}, {}, {i: i for i in range(10)}]
    passes = 0

    async def other_work() -> None:
        nonlocal passes
        while tables[0] or tables[2]:
            passes += 1
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(release(tables), other_work())

    asyncio.run(main())
    assert tables == [{}, {}, {}]
    assert passes >= 3  # the other task ran between the slices of the first table
