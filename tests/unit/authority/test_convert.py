"""Importing a list file of every supported format into canonical entries."""

from __future__ import annotations

import pytest

from filterd.authority.convert import import_list
from filterd.formats import Format
from filterd.sync.snapshot import Entry, check_snapshot, serialize_snapshot


def lines(entries: list[Entry]) -> list[str]:
    return [entry.line().decode() for entry in entries]


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        (
            Format.DOMAINS,
            "# comment\ncasino.example\n*.wild.example\nBÜCHER.example\nnot a name\n",
            [
                "casino.example block - -",
                "wild.example block - -",
                "xn--bcher-kva.example block - -",
            ],
        ),
        (
            Format.HOSTS,
            "127.0.0.1 localhost\n0.0.0.0 ads.example tracker.example\n0.0.0.0 casino.example\n",
            ["ads.example block - -", "casino.example block - -", "tracker.example block - -"],
        ),
        (
            Format.ADBLOCK,
            "! title\n||casino.example^\n@@||safe.casino.example^\n||x.example/path\n",
            ["casino.example block - -", "safe.casino.example allow - -"],
        ),
        (
            Format.RPZ,
            "$TTL 300\n$ORIGIN rpz.example.\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n"
            "casino.example CNAME .\n*.casino.example CNAME .\n"
            "exact.example CNAME *.\nbelow.example CNAME rpz-drop.\n*.below.example CNAME .\n"
            "ok.casino.example CNAME rpz-passthru.\n*.lan.example CNAME rpz-passthru.\n",
            [
                "below.example block - -",
                "casino.example block - -",
                "exact.example block-exact - -",
                "ok.casino.example allow-exact - -",
            ],
        ),
        (
            Format.NATIVE,
            "#filterd-list 1\n# NAME KIND CATEGORY REFERENCE\n"
            "casino.example.net   block   gambling  QĐ-123/2026   ngày 01/02/2026\n"
            "games.example block-exact games\nsafe.adult.example allow - QĐ-045/2026\n"
            "wild.example block-below fraud QĐ-077/2026\nx.example allow-exact - -\n",
            [
                "casino.example.net block gambling QĐ-123/2026 ngày 01/02/2026",
                "games.example block-exact games -",
                "safe.adult.example allow - QĐ-045/2026",
                "wild.example block-below fraud QĐ-077/2026",
                "x.example allow-exact - -",
            ],
        ),
    ],
)
def test_each_format(fmt: Format, text: str, expected: list[str]) -> None:
    data = text.encode()
    for given in (fmt, None):  # named, and detected
        result = import_list(data, given, "list.txt")
        assert result.format is fmt
        assert lines(result.entries) == expected
        check_snapshot(serialize_snapshot(result.entries), 100)


def test_rpz_merges_and_reports() -> None:
    text = (
        "$ORIGIN rpz.example.\n"
        "casino.example CNAME .\n*.casino.example CNAME .\n"  # one block
        "*.lan.example CNAME rpz-passthru.\n"  # allow below: no native kind
        "mixed.example CNAME .\n*.mixed.example CNAME rpz-passthru.\n"  # block + allow below
        "cut.example CNAME rpz-passthru.\n*.cut.example CNAME .\n"  # allow at name + block below
    )
    result = import_list(text.encode(), Format.RPZ, "policy.rpz")
    assert lines(result.entries) == [
        "casino.example block - -",
        "cut.example block-below - -",
        "mixed.example block-exact - -",
    ]
    assert result.merged == 3
    assert result.actions_dropped == 4  # each RPZ block rule carries its action (NXDOMAIN)
    assert result.skipped == {
        "allow of the names below a name has no native kind": 1,
        "allow rule dropped: no native kind alongside the block": 2,
    }
    assert (
        result.examples[0] == "cut.example: allow rule dropped: no native kind alongside the block"
    )


def test_allow_beats_block_on_the_name_itself() -> None:
    text = "||casino.example^\n@@||casino.example^\n"
    result = import_list(text.encode(), Format.ADBLOCK, "x.txt")
    assert lines(result.entries) == ["casino.example allow - -"]


def test_reference_canonical_and_an_oversized_one_reported() -> None:
    long = "Quyết định " * 20  # 180 characters, 320 bytes
    text = f"#filterd-list 1\na.example block gambling QĐ  12/2026\nb.example block - {long}\n"
    result = import_list(text.encode(), Format.NATIVE, "x.txt")
    assert lines(result.entries) == ["a.example block gambling QĐ 12/2026"]
    assert [p.line for p in result.parse_problems] == [3]


def test_one_label_per_name_whatever_the_line_order() -> None:
    rules = ["a.example block gambling QĐ-1", "a.example block-exact drugs QĐ-2"]
    kept = set()
    for order in (rules, rules[::-1]):
        text = "#filterd-list 1\n" + "\n".join(order) + "\n"
        result = import_list(text.encode(), Format.NATIVE, "x.txt")
        assert lines(result.entries)[0].startswith("a.example block ")
        assert result.skipped == {"another category or reference for the same name: one kept": 1}
        kept.add(result.entries[0])
    assert len(kept) == 1


def test_counts_of_invalid_lines() -> None:
    result = import_list(b"good.example\nbad..example\nlocalhost\n", Format.DOMAINS, "x")
    assert (result.lines_accepted, result.lines_invalid) == (1, 2)
    assert [p.line for p in result.parse_problems] == [2, 3]
