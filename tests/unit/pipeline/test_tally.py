"""The optional blocked-entry statistics stay bounded and keep the top of the table."""

from __future__ import annotations

from filterd.pipeline.tally import BlockedNames, blocked_rows


def wire(name: str) -> bytes:
    return b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + b"\0"


def test_wire_and_cname_counts_of_one_entry_are_one_row() -> None:
    names = BlockedNames(top=2)
    for _ in range(3):
        names.count_wire(wire("casino.example"), "gambling")
    names.count_text(b"casino.example", "gambling")  # decided on a CNAME target
    names.count_wire(wire("adult.example"), "adult")
    names.count_wire(wire("ads.example"), "ads")
    names.count_wire(wire("ads.example"), "ads")
    assert blocked_rows(names.candidates()) == [
        {"name": "casino.example", "category": "gambling", "count": 4},
        {"name": "ads.example", "category": "ads", "count": 2},
    ]


def test_memory_is_bounded_and_the_most_blocked_survive() -> None:
    names = BlockedNames(top=5)  # at most 1,000 distinct names kept
    for rank in range(5):
        for _ in range(100 - rank):
            names.count_wire(wire(f"top{rank}.example"), "c")
    for i in range(5_000):  # a long tail of names blocked once
        names.count_wire(wire(f"tail{i}.example"), "c")
        assert len(names._wire) <= 1_000
    rows = blocked_rows(names.candidates())
    assert [row["name"] for row in rows] == [f"top{r}.example" for r in range(5)]
    assert [row["count"] for row in rows] == [100, 99, 98, 97, 96]


def test_a_worker_hands_over_its_top_names_undecoded_with_both_counts_of_a_name() -> None:
    names = BlockedNames(top=1)
    # "b" is blocked twice directly and twice as a CNAME target: 4 in all, the
    # most, although it leads neither form on its own.
    for name, count in (("a.example", 3), ("b.example", 2)):
        for _ in range(count):
            names.count_wire(wire(name), "c")
    for name, count in (("c.example", 3), ("b.example", 2)):
        for _ in range(count):
            names.count_text(name.encode(), "c")
    assert names.candidates() == [(wire("b.example"), "c", 4)]
    assert blocked_rows(names.candidates()) == [{"name": "b.example", "category": "c", "count": 4}]
