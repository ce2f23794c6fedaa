"""Every real third-party list under ``../shared/data`` parses as NOTES.md says.

For each blocklist file (``ranking/`` and UT1's ``global_usage.txt`` catalogue
are not blocklists and are skipped) this proves that:

- ``detect_format`` picks the format its folder (or file suffix) implies;
- the parser's ``entries`` equals an independent count of data lines made
  here with plain string operations, and that count equals the number
  NOTES.md publishes (hard-coded below, so a changed data file is noticed);
- ``accepted + invalid + ignored`` therefore partitions the real data lines,
  the reasons add up, and every reported problem points at the line it quotes;
- every name produced is canonical: lower-case ``[a-z0-9_.-]``, at most 253
  characters, labels of 1-63, at least two labels;

and then the facts NOTES.md catalogues: the urlhaus IP entries, the IDN twins
of hostsVN threat-VN, the StevenBlack preamble, the equivalence of one list
published in several formats, the hagezi RPZ ``x`` / ``*.x`` pairs, and the
1,173,665-line scale union. Tests skip, with the path they need, when the
shared data directory is absent (see ``tests/conftest.py``).
"""

from __future__ import annotations

import functools
import gzip
import io
import ipaddress
import re
from pathlib import Path
from typing import Final, NamedTuple

import pytest

from filterd.formats import (
    EntryKind,
    Format,
    ParsedList,
    ParseOptions,
    detect_format,
    parse,
)
from filterd.formats import common as parsers
from filterd.formats.common import MAX_REPORTED_PROBLEMS
from filterd.model.rules import Action, Scope

pytestmark = pytest.mark.slow

IP_NAME: Final = "IP address or numeric top-level label"
IP_RULE: Final = "IP address rule"
SINGLE_LABEL: Final = "single-label name would block a whole top-level domain (allow_tld: false)"
LONG_LABEL: Final = "label longer than 63 characters"
PREAMBLE: Final = "hosts-file preamble entry"

# Files in the data directory that are not blocklists.
NOT_LISTS: Final = frozenset(
    {
        "NOTES.md",
        "SOURCES.md",
        "categories/ut1/global_usage.txt",  # UT1's catalogue of its categories
        "ranking/cisco-umbrella-top-100k_2026-07-24.txt.gz",  # popularity ranking
    }
)

# Entries per file as published in ../shared/data/NOTES.md, table "Files (except UT1)",
# column "Entries". NOTES counts them with grep: hosts and domains
# `grep -vcE '^\s*(#|!|$)'`, adblock `grep -cE '^(@@)?\|\|'`, RPZ `grep -c CNAME`.
NOTES_ENTRIES: Final[dict[str, int]] = {
    "blocklists/adblock/adguard_dns_filter_urlfilter-testdata.txt": 27_451,
    "blocklists/adblock/blocklistproject_basic-ags.txt": 76_036,
    "blocklists/adblock/blocklistproject_tracking-ags.txt": 143_876,
    "blocklists/adblock/hostsVN_adservers-all.txt": 8_628,
    "blocklists/adblock/urlhaus-filter-agh.txt": 25_768,
    "blocklists/domains/blocklistproject_facebook-nl.txt": 22_362,
    "blocklists/domains/blocklistproject_phishing-nl.txt": 190_215,
    "blocklists/domains/blocklistproject_tracking-nl.txt": 143_876,
    "blocklists/domains/hagezi_doh-wildcard_2023-09-17.txt": 724,
    "blocklists/domains/shadowwhisperer_Malware.txt": 43_726,
    "blocklists/domains/shadowwhisperer_Risk.txt": 1_285,
    "blocklists/domains/shadowwhisperer_Top_Level.txt": 1_301,
    "blocklists/domains/shadowwhisperer_Tracking.txt": 116_348,
    "blocklists/domains/shadowwhisperer_Typo.txt": 73_796,
    "blocklists/domains/shadowwhisperer_Wild_Ads.txt": 19_039,
    "blocklists/domains/urlhaus-filter-domains.txt": 25_768,
    "blocklists/hosts/blocklistproject_basic.hosts": 76_036,
    "blocklists/hosts/blocklistproject_redirect.hosts": 108_685,
    "blocklists/hosts/hostsVN_ads.hosts": 18_298,
    "blocklists/hosts/sinfonietta_gambling.hosts": 2_642,
    "blocklists/hosts/sinfonietta_pornography.hosts": 61_186,
    "blocklists/hosts/sinfonietta_social.hosts": 3_245,
    "blocklists/hosts/stevenblack_fakenews-gambling-porn-social_2019-03-27.hosts": 55_997,
    "blocklists/hosts/urlhaus-filter.hosts": 2_689,
    "blocklists/rpz/hagezi_doh_2023-09-17.rpz": 1_448,
    "blocklists/rpz/hagezi_nosafesearch_2023-09.rpz": 518,
    "blocklists/rpz/urlhaus-filter.rpz": 2_689,
    "blocklists/rpz/vn-badsite-filter.rpz": 16_842,
    "categories/blocklistproject/crypto.hosts": 1_274,
    "categories/blocklistproject/drugs-ags.txt": 26_029,
    "categories/blocklistproject/drugs-nl.txt": 26_029,
    "categories/blocklistproject/drugs.hosts": 26_029,
    "categories/blocklistproject/gambling_2024-08-19.hosts": 2_500,
    "categories/blocklistproject/piracy.hosts": 2_154,
    "categories/blocklistproject/ransomware.hosts": 1_904,
    "categories/blocklistproject/scam.hosts": 8_527,
    "categories/blocklistproject/torrent.hosts": 2_620,
    "categories/blocklistproject/vaping.hosts": 108,
    "categories/hostsVN/adult-filter.txt": 22_495,
    "categories/hostsVN/adult.hosts": 22_622,
    "categories/hostsVN/gambling-domain.txt": 65_759,
    "categories/hostsVN/gambling-filter.txt": 64_692,
    "categories/shadowwhisperer/Adult.txt": 219_522,
    "categories/shadowwhisperer/Dating.txt": 1_355,
    "categories/shadowwhisperer/Gambling.txt": 9_604,
    "categories/shadowwhisperer/Scam.txt": 7_307,
    "scale/union-permissive.domains.gz": 1_173_665,
    "vn/hostsVN_ads-VN.hosts": 1_747,
    "vn/hostsVN_adult-VN-domain.txt": 1_895,
    "vn/hostsVN_adult-VN.hosts": 1_895,
    "vn/hostsVN_gambling-VN-domain.txt": 3_747,
    "vn/hostsVN_gambling-VN-filter.txt": 3_313,
    "vn/hostsVN_gambling-VN.hosts": 3_747,
    "vn/hostsVN_threat-VN.hosts": 4_447,
    "vn/vn-badsite-filter-agh.txt": 16_843,
    "vn/vn-badsite-filter-domains.txt": 16_843,
}

# NOTES.md, "UT1 categories": "Entries per category" (entries = `wc -l`, no comments).
UT1_ENTRIES: Final[dict[str, int]] = {
    "redirector": 132_323, "jobsearch": 60_740, "shopping": 36_968, "games": 33_741,
    "gambling": 32_247, "cryptojacking": 11_491, "bank": 6_646, "dating": 6_504,
    "vpn": 6_039, "press": 4_644, "shortener": 4_558, "publicite": 4_344, "download": 4_020,
    "audio-video": 3_710, "doh": 3_015, "liste_bu": 2_825, "sports": 2_362,
    "dynamic-dns": 2_077, "warez": 1_546, "blog": 1_497, "bitcoin": 1_419, "fakenews": 1_118,
    "filehosting": 941, "social_networks": 715, "manga": 652, "celebrity": 635, "drogue": 603,
    "radio": 567, "stalkerware": 525, "financial": 472, "ddos": 421, "webmail": 404,
    "agressif": 360, "examen_pix": 347, "hacking": 274, "chat": 268, "liste_blanche": 268,
    "forums": 205, "lingerie": 193, "translation": 175, "cleaning": 174, "remote-control": 170,
    "mixed_adult": 149, "sect": 144, "residential-proxies": 138, "ai": 77, "marketingware": 77,
    "child": 75, "arjel": 69, "tricheur_pix": 55, "tricheur": 53, "mobile-phone": 50,
    "webhosting": 38, "cooking": 37, "dangerous_material": 35, "update": 30, "astrology": 28,
    "sexual_education": 15, "educational_games": 8, "reaffected": 7, "dialer": 4,
    "associations_religieuses": 1, "exceptions_liste_bu": 1, "special": 1,
}  # fmt: skip

ALL_ENTRIES: Final[dict[str, int]] = NOTES_ENTRIES | {
    f"categories/ut1/{category}.domains": count for category, count in UT1_ENTRIES.items()
}

IPV4_LINE: Final = re.compile(rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


class Loaded(NamedTuple):
    data: bytes
    fmt: Format
    parsed: ParsedList


@functools.cache
def load(path: Path, allow_tld: bool = False) -> Loaded:
    """Read (gunzip) one list, detect its format and parse it; memoised per file."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    fmt = detect_format(data)
    return Loaded(data, fmt, parse(data, fmt, ParseOptions(str(path), allow_tld=allow_tld)))


def raw_lines(data: bytes) -> list[bytes]:
    """The file's lines as an editor shows them (CRLF or LF, no line terminator)."""
    return [line.removesuffix(b"\r") for line in data.split(b"\n")]


def all_names(parsed: ParsedList) -> list[bytes]:
    return [name for names in parsed.groups.values() for name in names]


def names_with(parsed: ParsedList, kind: EntryKind) -> set[bytes]:
    return set(parsed.groups.get(kind, []))


def folder_format(rel: str) -> Format:
    """The format a file's location promises: ``blocklists/<format>/``, else its suffix."""
    parts = rel.split("/")
    if parts[0] == "blocklists":
        return Format(parts[1])
    if rel.endswith(".hosts"):
        return Format.HOSTS
    if rel.endswith(".rpz"):
        return Format.RPZ
    if rel.endswith(("-ags.txt", "-agh.txt", "-filter.txt")):
        return Format.ADBLOCK
    return Format.DOMAINS


def notes_count(lines: list[bytes], fmt: Format) -> int:
    """NOTES.md's own measure of entries (its grep commands, in Python)."""
    if fmt is Format.ADBLOCK:
        return sum(line.startswith((b"||", b"@@||")) for line in lines)
    if fmt is Format.RPZ:
        return sum(b"CNAME" in line for line in lines)
    return sum(bool(line.strip()) and not line.lstrip().startswith((b"#", b"!")) for line in lines)


def data_lines(lines: list[bytes], fmt: Format) -> int:
    """Lines the parser must account for, counted without the parser's machinery:
    non-blank lines minus the format's comment and header lines. RPZ: the lines
    holding a CNAME record (NOTES.md), the only records after SOA/NS in these zones."""
    if fmt is Format.RPZ:
        return sum(b" CNAME " in line for line in lines)
    count = 0
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if fmt is Format.ADBLOCK:
            if text.startswith((b"!", b"[")):
                continue
            if text.startswith(b"#") and not text.startswith((b"##", b"#@#", b"#?#")):
                continue
        elif text.startswith(b"#"):
            continue
        count += 1
    return count


def assert_canonical(names: list[bytes]) -> None:
    """Lower-case [a-z0-9_.-], 2+ labels of 1-63, at most 253 characters, no numeric TLD."""
    if not names:
        return
    joined = b"\n".join(names)
    assert re.search(rb"[^a-z0-9_.\n-]", joined) is None
    assert re.search(rb"[^.\n]{64}", joined) is None
    assert re.search(rb"(?m)^\.|\.\.|\.$", joined) is None
    assert re.search(rb"(?m)^[^.\n]*$", joined) is None  # no single label (allow_tld off)
    assert re.search(rb"(?m)\.[0-9]+$", joined) is None
    assert max(map(len, names)) <= 253


# ------------------------------------------------------------------ every file


def test_every_list_file_is_covered(shared_data: Path) -> None:
    on_disk = {
        path.relative_to(shared_data).as_posix()
        for path in shared_data.rglob("*")
        if path.is_file()
    }
    assert on_disk - NOT_LISTS == set(ALL_ENTRIES)
    assert len(ALL_ENTRIES) == 56 + 64  # 56 files in the NOTES table + 64 UT1 categories


@pytest.mark.parametrize("rel", sorted(ALL_ENTRIES))
def test_real_list(shared_data: Path, rel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data, fmt, parsed = load(shared_data / rel)
    assert fmt is folder_format(rel)
    assert parsed.format is fmt

    # The compiler streams the file: in pieces of 64 KiB the result is the same.
    monkeypatch.setattr(parsers, "CHUNK_BYTES", 64 << 10)
    streamed = parse(io.BytesIO(data), fmt, ParseOptions(str(shared_data / rel)))
    assert (streamed.accepted, streamed.invalid, streamed.ignored, streamed.problems) == (
        parsed.accepted,
        parsed.invalid,
        parsed.ignored,
        parsed.problems,
    )
    assert {k: sorted(v) for k, v in streamed.groups.items()} == {
        k: sorted(v) for k, v in parsed.groups.items()
    }

    # NOTES.md's number, re-measured here, then the parser's data-line count.
    lines = raw_lines(data)
    assert notes_count(lines, fmt) == ALL_ENTRIES[rel]
    lines_to_account = data_lines(lines, fmt)
    assert parsed.accepted + parsed.invalid + parsed.ignored == lines_to_account
    if fmt is Format.ADBLOCK:
        # NOTES counts only '||' rules; the other rule lines must all be ignored.
        unanchored = lines_to_account - ALL_ENTRIES[rel]
        assert unanchored >= 0
        assert parsed.ignored >= unanchored
    else:
        assert lines_to_account == ALL_ENTRIES[rel]

    assert sum(parsed.reasons.values()) == parsed.invalid + parsed.ignored
    assert len(parsed.problems) == min(MAX_REPORTED_PROBLEMS, parsed.invalid + parsed.ignored)
    if fmt is Format.HOSTS:
        assert parsed.names >= parsed.accepted
    else:
        assert parsed.names == parsed.accepted
    assert_canonical(all_names(parsed))

    previous = 0
    for problem in parsed.problems:
        assert problem.line > previous
        previous = problem.line
        if fmt is not Format.RPZ:
            assert problem.text == lines[problem.line - 1].lower().decode("utf-8", "replace")


# ------------------------------------------------------------------ NOTES.md facts


def test_urlhaus_domains_rejects_exactly_its_ipv4_entries(shared_data: Path) -> None:
    data, _, parsed = load(shared_data / "blocklists/domains/urlhaus-filter-domains.txt")
    ipv4 = 0
    for line in raw_lines(data):
        try:
            ipaddress.IPv4Address(line.decode())
        except ValueError:
            continue
        ipv4 += 1
    assert ipv4 == 23_079  # NOTES.md
    assert parsed.invalid == ipv4
    assert parsed.reasons == {IP_NAME: ipv4}
    assert parsed.ignored == 0
    assert parsed.accepted == 25_768 - 23_079 == 2_689


def test_urlhaus_four_formats_same_names_apart_from_ips(shared_data: Path) -> None:
    base = shared_data / "blocklists"
    domains = set(all_names(load(base / "domains/urlhaus-filter-domains.txt").parsed))
    adblock = load(base / "adblock/urlhaus-filter-agh.txt").parsed
    hosts = set(all_names(load(base / "hosts/urlhaus-filter.hosts").parsed))
    rpz = set(all_names(load(base / "rpz/urlhaus-filter.rpz").parsed))
    assert len(domains) == 2_689
    assert set(all_names(adblock)) == hosts == rpz == domains
    # The AdGuard version keeps the IPs as '||1.0.209.238^': ignored, not invalid.
    assert adblock.reasons == {IP_RULE: 23_079}
    assert adblock.ignored == 23_079


def test_threat_vn_idn_twins_normalise_to_one_name(shared_data: Path) -> None:
    data, _, parsed = load(shared_data / "vn/hostsVN_threat-VN.hosts")
    lines = raw_lines(data)
    twin = b"xn--momovints1-o8a64b3904adea8q.weebly.com"
    assert lines[1605] == "0.0.0.0 momovíđiệntửsố1.weebly.com".encode()  # line 1606
    assert lines[4421] == b"0.0.0.0 " + twin  # line 4422
    names = all_names(parsed)
    assert names.count(twin) == 2
    assert all(name.isascii() for name in names)
    assert b"wvontgd.pqmg.bid" in names  # written "wvOntgd.pqmg.bid"
    assert parsed.accepted == 4_447


STEVENBLACK: Final = "blocklists/hosts/stevenblack_fakenews-gambling-porn-social_2019-03-27.hosts"
PREAMBLE_NAMES: Final = frozenset(
    {
        b"localhost",
        b"localhost.localdomain",
        b"local",
        b"broadcasthost",
        b"ip6-localhost",
        b"ip6-loopback",
        b"ip6-localnet",
        b"ip6-mcastprefix",
        b"ip6-allnodes",
        b"ip6-allrouters",
        b"ip6-allhosts",
        b"0.0.0.0",
    }
)


def test_stevenblack_single_label_preamble_is_ignored(shared_data: Path) -> None:
    data, _, parsed = load(shared_data / STEVENBLACK)
    lines = raw_lines(data)
    # Lines 14-27 are the /etc/hosts preamble (NOTES.md §12).
    preamble_lines = [n for n in range(14, 28) if lines[n - 1].split()[1] in PREAMBLE_NAMES]
    assert len(preamble_lines) == 14
    names = set(all_names(parsed))
    assert names.isdisjoint(PREAMBLE_NAMES - {b"localhost.localdomain"})
    reported = {p.line for p in parsed.problems if p.reason == PREAMBLE}
    assert reported <= set(preamble_lines)
    assert reported >= set(preamble_lines)
    assert b"fgoogle.com" in names  # "0.0.0.0 fgoogle.com  # misspelling"
    assert b"jackbootedroom.com" in names  # "... ## phishing"


def test_stevenblack_preamble_is_never_among_the_names(shared_data: Path) -> None:
    parsed = load(shared_data / STEVENBLACK).parsed
    assert set(all_names(parsed)).isdisjoint(PREAMBLE_NAMES)
    assert parsed.reasons[PREAMBLE] == 14


def test_blocklistproject_drugs_three_formats_same_names(shared_data: Path) -> None:
    base = shared_data / "categories/blocklistproject"
    results = [
        load(base / name).parsed for name in ("drugs.hosts", "drugs-nl.txt", "drugs-ags.txt")
    ]
    name_sets = [set(all_names(parsed)) for parsed in results]
    assert name_sets[0] == name_sets[1] == name_sets[2]
    assert len(name_sets[0]) == 26_029
    for parsed in results:
        assert parsed.accepted == 26_029
        assert list(parsed.groups) == [EntryKind(Scope.SUBTREE)]


def test_vn_badsite_three_formats_same_names_except_the_ip(shared_data: Path) -> None:
    domains = load(shared_data / "vn/vn-badsite-filter-domains.txt").parsed
    adblock = load(shared_data / "vn/vn-badsite-filter-agh.txt").parsed
    rpz = load(shared_data / "blocklists/rpz/vn-badsite-filter.rpz").parsed
    assert set(all_names(domains)) == set(all_names(adblock)) == set(all_names(rpz))
    assert len(set(all_names(rpz))) == 16_842
    # The single IP entry (NOTES.md §5): invalid as a name, ignored as an adblock rule.
    assert [(p.line, p.reason, p.text) for p in domains.problems] == [
        (230, IP_NAME, "207.148.115.161")
    ]
    assert [(p.line, p.reason, p.text) for p in adblock.problems] == [
        (230, IP_RULE, "||207.148.115.161^")
    ]
    assert rpz.problems == []
    assert list(rpz.groups) == [EntryKind(Scope.EXACT, action=Action.NXDOMAIN)]


def test_hagezi_doh_rpz_pairs_cover_the_wildcard_list(shared_data: Path) -> None:
    rpz = load(shared_data / "blocklists/rpz/hagezi_doh_2023-09-17.rpz").parsed
    wildcard = load(shared_data / "blocklists/domains/hagezi_doh-wildcard_2023-09-17.txt").parsed
    exact = names_with(rpz, EntryKind(Scope.EXACT, action=Action.NXDOMAIN))
    below = names_with(rpz, EntryKind(Scope.BELOW, action=Action.NXDOMAIN))
    assert len(rpz.groups) == 2
    assert exact == below  # every "x CNAME ." has its "*.x CNAME ."
    assert len(exact) == 724
    assert list(wildcard.groups) == [EntryKind(Scope.SUBTREE)]  # "*.x" means x and below
    assert set(all_names(wildcard)) == exact


def test_hagezi_doh_rpz_pairs_join_into_subtree_entries_for_the_compiler(
    shared_data: Path,
) -> None:
    path = shared_data / "blocklists/rpz/hagezi_doh_2023-09-17.rpz"
    options = ParseOptions(str(path), join_rpz_pairs=True)
    joined = parse(path.read_bytes(), Format.RPZ, options)
    wildcard = load(shared_data / "blocklists/domains/hagezi_doh-wildcard_2023-09-17.txt").parsed
    assert list(joined.groups) == [EntryKind(Scope.SUBTREE, action=Action.NXDOMAIN)]
    assert joined.accepted == 2 * joined.names == 2 * 724
    assert set(all_names(joined)) == set(all_names(wildcard))


def test_hagezi_nosafesearch_rpz_pairs(shared_data: Path) -> None:
    rpz = load(shared_data / "blocklists/rpz/hagezi_nosafesearch_2023-09.rpz").parsed
    exact = names_with(rpz, EntryKind(Scope.EXACT, action=Action.NXDOMAIN))
    below = names_with(rpz, EntryKind(Scope.BELOW, action=Action.NXDOMAIN))
    assert exact == below
    assert len(exact) * 2 == rpz.accepted == 518


def test_scale_union(shared_data: Path) -> None:
    data, fmt, parsed = load(shared_data / "scale/union-permissive.domains.gz")
    lines = data.split(b"\n")
    assert lines.pop() == b""  # the file ends with a newline
    assert fmt is Format.DOMAINS
    assert len(lines) == 1_173_665
    assert parsed.accepted + parsed.invalid == 1_173_665
    assert parsed.ignored == 0

    ips = sum(IPV4_LINE.fullmatch(line) is not None for line in lines)
    assert ips == 23_086  # NOTES.md: "Contains 23,086 IPs"
    assert parsed.reasons[IP_NAME] == ips
    assert parsed.reasons[LONG_LABEL] == 1  # the "====" junk line
    assert parsed.reasons[SINGLE_LABEL] == sum(
        b"." not in line and not line.startswith(b"=") for line in lines
    )
    assert parsed.invalid == sum(parsed.reasons.values())

    # Distinct names: fold case, the trailing dot and IDNA (Python's own codec)
    # independently; only the rejected lines are missing from the parser's set.
    folded = {
        (line if line.isascii() else line.decode().encode("idna")).lower().removesuffix(b".")
        for line in lines
    }
    assert len(lines) - len({line.lower() for line in lines}) == 4  # NOTES.md: 4 case twins
    assert len(set(all_names(parsed))) == len(folded) - parsed.invalid


def test_longest_real_name_is_the_facebook_one(shared_data: Path) -> None:
    # Canonical form is checked file by file in test_real_list; here the extremes.
    longest = b""
    for rel in ALL_ENTRIES:
        for names in load(shared_data / rel).parsed.groups.values():
            longest = max(longest, max(names, key=len), key=len)
    # NOTES.md §7: longest real name, 217 characters in 53 labels, "www.www.…lite.facebook.com".
    assert len(longest) == 217
    assert longest.count(b".") + 1 == 53
    assert longest.endswith(b".lite.facebook.com")


def test_adguard_filter_rich_syntax(shared_data: Path) -> None:
    data, _, parsed = load(
        shared_data / "blocklists/adblock/adguard_dns_filter_urlfilter-testdata.txt"
    )
    lines = raw_lines(data)
    assert data.count(b"\r\n") == data.count(b"\n") == 27_979  # CRLF throughout
    allow = names_with(parsed, EntryKind(Scope.SUBTREE, allow=True))
    assert b"blog.logrocket.com" in allow  # "@@||blog.logrocket.com^|"
    assert len(allow) == sum(line.startswith(b"@@||") for line in lines) - sum(
        line.startswith(b"@@||") and b"$" in line for line in lines
    )
    assert b"xn--80abnuns.xn--p1acf" in all_names(parsed)  # raw Cyrillic rule
    any_tld = re.compile(rb"\|\|[^*/:$^|]*\.(?:\^|\|)*")
    assert parsed.reasons["'||name.' (any top-level domain) rule"] == sum(
        any_tld.fullmatch(line) is not None for line in lines
    )
    ip_rule = re.compile(rb"(?:@@)?\|\|[0-9]{1,3}(?:\.[0-9]{1,3}){3}\^?\|?(?:\$.*)?")
    assert parsed.reasons[IP_RULE] == sum(ip_rule.fullmatch(line) is not None for line in lines)
    assert parsed.invalid == 0


def test_shadowwhisperer_quirks(shared_data: Path) -> None:
    data, _, risk = load(shared_data / "blocklists/domains/shadowwhisperer_Risk.txt")
    junk = [n for n, line in enumerate(raw_lines(data), 1) if line.startswith(b"====")]
    assert len(junk) == 2
    assert [(p.line, p.reason) for p in risk.problems if p.reason == LONG_LABEL] == [
        (n, LONG_LABEL) for n in junk
    ]
    names = set(all_names(risk))
    assert b"apkcafe.de" in names  # "apkcafe.de     #APK Hosting"
    assert risk.reasons[SINGLE_LABEL] == 2  # "apkcafe-vn", "apkgold-vn"

    top_path = shared_data / "blocklists/domains/shadowwhisperer_Top_Level.txt"
    strict = load(top_path).parsed
    permissive = load(top_path, allow_tld=True).parsed
    tokens = [
        line.split(b"#")[0].strip()
        for line in raw_lines(top_path.read_bytes())
        if line.strip() and not line.startswith(b"#")
    ]
    single = sum(b"." not in token.strip(b".") for token in tokens)
    assert strict.reasons == {SINGLE_LABEL: single}
    assert permissive.accepted == len(tokens) == 1_301
    tlds = set(all_names(permissive))
    assert {b"zip", b"mov", b"bin", b"xn--p1ai", b"xn--80ao21a"} <= tlds  # .рф, .қаз


def test_sinfonietta_quirks(shared_data: Path) -> None:
    data, _, porn = load(shared_data / "blocklists/hosts/sinfonietta_pornography.hosts")
    lines = raw_lines(data)
    names = set(all_names(porn))
    assert {b"ehentai.to", b"mysubs.cc"} <= names  # "Ehentai.to", "mySubs.cc"
    assert lines[60464] == b"0.0.0.0 www.guruofporn.com."
    assert b"www.guruofporn.com" in names
    ip_names = sum(IPV4_LINE.fullmatch(line.split()[1]) is not None for line in lines if line)
    assert porn.reasons[IP_NAME] == ip_names == 5
    assert (60925, SINGLE_LABEL) in [(p.line, p.reason) for p in porn.problems]
    assert max(map(len, names)) == 187

    social = load(shared_data / "blocklists/hosts/sinfonietta_social.hosts").parsed
    assert b"p19-sign.tiktokcdn-us.com" in all_names(social)  # sink 127.0.0.7
    assert [(p.reason, p.text) for p in social.problems] == [
        (SINGLE_LABEL, "127.0.0.1 snapchat-com")
    ]


def test_hostsvn_generator_bug_rules_are_invalid(shared_data: Path) -> None:
    adult = load(shared_data / "categories/hostsVN/adult-filter.txt").parsed
    assert (2228, SINGLE_LABEL) in [(p.line, p.reason) for p in adult.problems]  # "||60com^"
    gambling = load(shared_data / "categories/hostsVN/gambling-filter.txt").parsed
    texts = {p.text: p.reason for p in gambling.problems}
    assert texts["||012wcom^"] == SINGLE_LABEL
    assert texts["||180.215.200.9^"] == IP_RULE
    domain = load(shared_data / "categories/hostsVN/gambling-domain.txt").parsed
    assert [(p.reason, p.text) for p in domain.problems] == [(IP_NAME, "180.215.200.9")]
    assert b"www.188betcn2.com" in all_names(domain)  # "www.188Betcn2.com"


def test_ut1_quirks(shared_data: Path) -> None:
    ut1 = shared_data / "categories/ut1"
    # NOTES.md: IP addresses used as names.
    for category, ips in (("redirector", 22_530), ("drogue", 167), ("agressif", 93)):
        data, _, parsed = load(ut1 / f"{category}.domains")
        assert sum(IPV4_LINE.fullmatch(line) is not None for line in raw_lines(data)) == ips
        assert parsed.reasons == {IP_NAME: ips}
    assert b"afshin.ir" in all_names(load(ut1 / "dynamic-dns.domains").parsed)  # ".afshin.ir"
    assert b"_video-bagarre.com" in all_names(load(ut1 / "agressif.domains").parsed)
    assert b"_214214214.xyz" in all_names(load(ut1 / "doh.domains").parsed)
    sixty_three = b"rencontres-gratuites-seniors-femmes-hommes-amours-loisirs-sexes.com"
    assert len(sixty_three.split(b".")[0]) == 63
    assert sixty_three in all_names(load(ut1 / "dating.domains").parsed)


def test_phishing_punycode_tld_and_bogus_tld_are_names(shared_data: Path) -> None:
    path = shared_data / "blocklists/domains/blocklistproject_phishing-nl.txt"
    names = set(all_names(load(path).parsed))
    assert b"apple-source.xn--tckwe" in names
    # NOTES.md §11 "bogus TLD": two 128-character names, syntactically valid, so kept.
    bogus = [name for name in names if b".ss1scc1tmpldefaultltmplcache2" in name]
    assert sorted(map(len, bogus)) == [128, 128]
    assert all(name.startswith((b"accounts.google.com.", b"www.accounts.")) for name in bogus)
