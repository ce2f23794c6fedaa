"""A list read from a file a piece at a time parses exactly like the same bytes whole.

The compiler streams list files (``parse`` on an open file) so that a large
list is never in memory whole. Pieces end at line ends, so no line may be
split, numbered twice or lost at a boundary, whatever the piece size: every
format is parsed here from a file with pieces of a few bytes (every line
crosses a boundary, some lines are longer than a piece) and compared, names,
kinds, counts, reasons and line numbers, with the parse of the whole bytes.
"""

from __future__ import annotations

import io

import pytest

from filterd.formats import Format, ParsedList, ParseOptions, parse
from filterd.formats import common as parsers

SAMPLES = {
    Format.DOMAINS: (
        b"# a comment\nexample.com\r\nWWW.Example.ORG\n*.wild.example\n\nbad_name!\n"
        b"single\n" + b"long-" * 40 + b"name.example\n.sub.example\nlast.example"
    ),
    Format.HOSTS: (
        b"127.0.0.1 localhost\n0.0.0.0 ads.example tracker.example\r\n0.0.0.0 x.example # c\n"
        b"not-an-ip y.example\n0.0.0.0\n::1 ip6.example\n"
    ),
    Format.ADBLOCK: (
        b"[Adblock Plus 2.0]\n! title\n||ads.example^\n@@||ok.example^\n"
        b"||cosmetic.example##.banner\n/regex/\n||Case.Example^$important\n"
    ),
    Format.RPZ: (
        b"$TTL 300\n@ SOA ns. admin. ( 1 2\n 3 4 5 )\n NS ns.\n"
        b"blocked.example CNAME .\n*.blocked.example CNAME .\nnodata.example CNAME *.\n"
        b"pass.example CNAME rpz-passthru.\nlocal.example A 192.0.2.1\n"
        b"32.1.2.0.192.rpz-ip CNAME .\n; comment\nLast.Example 60 IN CNAME .\n"
    ),
    Format.NATIVE: (
        b"#filterd-list 1\nblocked.example block gambling ref-1\n"
        b"exact.example block-exact - -\r\nUPPER.example block adult\n"
        b"bad.example block gambling \xff\xfe\nbelow.example block-below malware\n"
        b"nbsp.example block ads ref\xc2\xa0\n"  # a reference ending in U+00A0 keeps it
        b"# comment\nallowed.example allow -\nbroken line\nlast.example block -"
    ),
}


def summary(parsed: ParsedList) -> tuple[object, ...]:
    # Within a kind, names come in no promised order (the index sorts them).
    groups = sorted((repr(kind), sorted(names)) for kind, names in parsed.groups.items())
    return (
        parsed.format,
        groups,
        parsed.accepted,
        parsed.invalid,
        parsed.ignored,
        dict(parsed.reasons),
        parsed.problems,
    )


@pytest.mark.parametrize("piece", [1, 3, 7, 16, 64, 4096])
@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_streamed_file_parses_like_whole_bytes(
    monkeypatch: pytest.MonkeyPatch, fmt: Format, piece: int
) -> None:
    data = SAMPLES[fmt]
    options = ParseOptions("test.list")
    whole = parse(data, fmt, options)
    assert whole.accepted and (whole.invalid or whole.ignored), "the sample exercises both paths"
    monkeypatch.setattr(parsers, "CHUNK_BYTES", piece)
    assert summary(parse(io.BytesIO(data), fmt, options)) == summary(whole)
    assert summary(parse(data, fmt, options)) == summary(whole)


def test_the_per_line_path_trims_a_reference_as_the_bulk_path_does() -> None:
    # In one piece, the sample's chunk holds the undecodable line, so all its
    # lines take the per-line path; the bulk path (small pieces, compared in
    # the test above) keeps U+00A0, which is not ASCII white space.
    parsed = parse(SAMPLES[Format.NATIVE], Format.NATIVE, ParseOptions("t"))
    refs = {kind.ref for kind, names in parsed.groups.items() if b"nbsp.example" in names}
    assert refs == {"ref\u00a0"}


def test_an_undecodable_native_reference_is_rejected_with_its_line_number() -> None:
    parsed = parse(io.BytesIO(SAMPLES[Format.NATIVE]), Format.NATIVE, ParseOptions("t"))
    assert [(p.line, p.reason) for p in parsed.problems] == [
        (5, "reference is not valid UTF-8"),
        (10, "expected NAME KIND CATEGORY [REFERENCE]"),
    ]
    assert parsed.accepted == 7
