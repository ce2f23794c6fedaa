"""The packed name sequence reads back exactly what was put in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.formats.names import Names

name = st.binary(min_size=0, max_size=30)


@given(st.lists(st.lists(name, max_size=20), max_size=10), name)
def test_reads_back_what_was_appended_and_extended(batches: list[list[bytes]], one: bytes) -> None:
    names = Names()
    expected: list[bytes] = []
    for batch in batches:
        names.extend(batch)
        expected.extend(batch)
    names.append(one)
    expected.append(one)
    assert list(names) == expected and len(names) == len(expected)
    assert [names[i] for i in range(len(names))] == expected
    assert names[-1] == one and names[1:3] == expected[1:3]
    assert list(names.lengths()) == [len(n) for n in expected]
    assert bytes(names.blob) == b"".join(expected)


def test_out_of_range_is_an_index_error() -> None:
    names = Names([b"a.example"])
    with pytest.raises(IndexError):
        names[1]
    assert b"a.example" in names and not Names()  # membership; an empty one is falsy


def test_take_blob_hands_over_the_text_and_empties() -> None:
    names = Names([b"a.example", b"bc.example"])
    assert names.take_blob() == bytearray(b"a.examplebc.example")
    assert len(names) == 0 and list(names) == [] and names.blob == bytearray()
