"""Table entries out of the cyclic collector's sight (``filterd.pipeline.untracked``).

Both ways of storing keep one contract, ``table[key] = value`` with the
very object given; the C extension (a compiled install) also untracks a
tuple none of whose items the collector tracks, nested tuples included,
and nothing else. The source-build pass of ``tests/run`` runs this file
without the extension.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from filterd.pipeline import untracked

Store = Callable[[dict[Any, Any], Any, Any], None]

IMPLEMENTATIONS: dict[str, Store] = {"python": untracked._store}
if untracked.NATIVE_STORE:
    from filterd.pipeline import _untracked

    IMPLEMENTATIONS["extension"] = _untracked.store

needs_extension = pytest.mark.skipif(
    not untracked.NATIVE_STORE, reason="the C extension is not built here"
)


def fresh(*items: object) -> tuple[object, ...]:
    """A new tuple (a literal of constants would be shared and already untracked)."""
    return tuple(list(items))


@pytest.mark.parametrize("store", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_store_puts_the_very_value_under_its_key(store: Store) -> None:
    table: dict[Any, Any] = {b"old": 1}
    value = fresh(b"wire", 1.5, 7, None)
    store(table, b"key", value)
    store(table, b"old", [1, 2])
    assert table[b"key"] is value
    assert table[b"old"] == [1, 2]
    assert list(table) == [b"old", b"key"]


@needs_extension
def test_a_tuple_of_plain_values_leaves_the_collectors_sight_and_so_does_its_table() -> None:
    table: dict[bytes, object] = {}
    answer = fresh(b"wire", 1.0, fresh(b"cname.example."), b"meta")
    assert gc.is_tracked(answer)
    untracked.store(table, b"cached", answer)
    untracked.store(table, b"served", fresh(answer, 3, b"key"))  # an answer inside an entry
    assert not gc.is_tracked(answer)
    assert not gc.is_tracked(answer[2])
    assert not gc.is_tracked(table[b"served"])
    assert not gc.is_tracked(table)


@needs_extension
def test_a_tuple_holding_a_tracked_object_stays_tracked_and_so_does_its_table() -> None:
    table: dict[bytes, object] = {}
    entry = fresh(b"wire", fresh(b"inner", []))
    untracked.store(table, b"key", entry)
    assert gc.is_tracked(entry)
    assert gc.is_tracked(entry[1])  # the nested tuple holds a list
    assert gc.is_tracked(table)


@needs_extension
def test_only_exact_tuples_are_untracked() -> None:
    class Pair(NamedTuple):
        wire: bytes
        due: float

    table: dict[bytes, object] = {}
    pair = Pair(b"wire", 1.0)
    listed = [b"wire", 1.0]
    untracked.store(table, b"pair", pair)
    untracked.store(table, b"list", listed)
    assert gc.is_tracked(pair)
    assert gc.is_tracked(listed)


@needs_extension
def test_a_cycle_through_a_stored_tuple_is_still_collected() -> None:
    """The rule never hides a reference the collector needs: a tuple that
    can be part of a cycle (it holds a tracked object) stays tracked."""

    class Node:
        entry: tuple[object, ...]

    table: dict[bytes, object] = {}
    node = Node()
    node.entry = fresh(b"wire", node)
    untracked.store(table, b"key", node.entry)
    alive = weakref.ref(node)
    del node, table
    gc.collect()
    assert alive() is None


@needs_extension
def test_the_extension_refuses_what_is_not_a_dict_and_a_wrong_argument_count() -> None:
    with pytest.raises(TypeError, match="must be a dict"):
        untracked.store([], 0, fresh(b"x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="3 arguments"):
        _untracked.store({}, b"key")  # type: ignore[call-arg]
