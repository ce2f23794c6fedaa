"""The five list formats, proved line by line on small inline examples.

Each test feeds a few lines (most copied from the real lists described in
``../shared/data/NOTES.md``) to ``filterd.formats.parse`` and checks
the documented meaning (docs/list-formats.md): which canonical names come
out, with which ``EntryKind`` (scope, allow/block, category, action,
reference); which lines are *invalid* or *ignored*, with the exact reason
string and line number the operator will see; and that
``accepted + invalid + ignored`` equals the number of data lines (comments
and blank lines excluded). ``detect_format`` is checked on a sample of each
format.
"""

from __future__ import annotations

import pytest

from filterd.formats import (
    EntryKind,
    Format,
    ParsedList,
    ParseOptions,
    detect_format,
    parse,
)
from filterd.formats.common import MAX_REPORTED_PROBLEMS
from filterd.model.rules import Action, Scope

SUBTREE = EntryKind(Scope.SUBTREE)
EXACT = EntryKind(Scope.EXACT)
ALLOW = EntryKind(Scope.SUBTREE, allow=True)

# Reason strings, exactly as the parser reports them (and docs/list-formats.md lists them).
SINGLE_LABEL = "single-label name would block a whole top-level domain (allow_tld: false)"
IP_NAME = "IP address or numeric top-level label"
LONG_LABEL = "label longer than 63 characters"
LONG_NAME = "name longer than 253 characters"
BAD_CHAR = "character not allowed in a domain name"
PREAMBLE = "hosts-file preamble entry"

# Synthetic limit names (NOTES.md: no real entry reaches these limits).
NAME_253 = b".".join([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61])
NAME_254 = b".".join([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 62])
LABEL_63 = b"9bf4bada216daa8d5564b3c3c93f894-pos-foo-autenticazione-postepay"
LABEL_64 = LABEL_63 + b"x"

# hostsVN_threat-VN.hosts lines 1606 and 4422: one name, raw Unicode and IDNA A-label.
IDN_RAW = "momovíđiệntửsố1.weebly.com".encode()
IDN_ACE = b"xn--momovints1-o8a64b3904adea8q.weebly.com"
# Written with escapes because they look like ASCII: the AdGuard DNS filter's raw
# Cyrillic rule target (banrek.rus) and "EXAMPLE" in full-width letters.
CYRILLIC = "\u0431\u0430\u043d\u0440\u0435\u043a.\u0440\u0443\u0441"
FULLWIDTH_EXAMPLE = "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25"


def run(
    data: bytes,
    fmt: Format,
    *,
    plain_scope: Scope = Scope.SUBTREE,
    allow_tld: bool = False,
    join_rpz_pairs: bool = False,
) -> ParsedList:
    """Parse ``data`` as ``fmt`` and check the accounting invariants every result keeps."""
    parsed = parse(data, fmt, ParseOptions("test.list", plain_scope, allow_tld, join_rpz_pairs))
    assert parsed.format is fmt
    assert sum(parsed.reasons.values()) == parsed.invalid + parsed.ignored
    assert len(parsed.problems) == min(MAX_REPORTED_PROBLEMS, parsed.invalid + parsed.ignored)
    return parsed


Pair = tuple[bytes, EntryKind]


def _key(pair: Pair) -> tuple[bytes, int, bool, str, str, str]:
    name, kind = pair
    return name, kind.scope, kind.allow, kind.category or "", kind.action or "", kind.ref


def expect(items: list[Pair]) -> list[Pair]:
    """``items`` in the order ``pairs`` returns (order of lines is not part of the contract)."""
    return sorted(items, key=_key)


def pairs(parsed: ParsedList) -> list[Pair]:
    """Every (name, kind) produced, sorted: duplicates kept, order not significant."""
    return expect([(name, kind) for kind, names in parsed.groups.items() for name in names])


def names(parsed: ParsedList) -> list[bytes]:
    """Every name produced, sorted, duplicates kept."""
    return sorted(name for name, _ in pairs(parsed))


def problems(parsed: ParsedList) -> list[tuple[int, str]]:
    return [(problem.line, problem.reason) for problem in parsed.problems]


def counts(parsed: ParsedList) -> tuple[int, int, int]:
    return parsed.accepted, parsed.invalid, parsed.ignored


# ====================================================================== domains


def test_domains_bare_name_takes_plain_scope() -> None:
    data = b"example.com\nWWW.Example.Org  # per-line path\n"
    assert pairs(run(data, Format.DOMAINS)) == expect(
        [
            (b"example.com", SUBTREE),
            (b"www.example.org", SUBTREE),
        ]
    )
    exact = run(data, Format.DOMAINS, plain_scope=Scope.EXACT)
    assert pairs(exact) == expect([(b"example.com", EXACT), (b"www.example.org", EXACT)])


@pytest.mark.parametrize("plain_scope", [Scope.SUBTREE, Scope.EXACT])
def test_domains_wildcard_and_leading_dot_always_mean_subtree(plain_scope: Scope) -> None:
    # hagezi_doh-wildcard writes "*.name"; UT1 dynamic-dns writes ".name".
    data = b"*.ns.00dani.me\n.afshin.ir\n"
    parsed = run(data, Format.DOMAINS, plain_scope=plain_scope)
    assert pairs(parsed) == expect([(b"ns.00dani.me", SUBTREE), (b"afshin.ir", SUBTREE)])
    assert counts(parsed) == (2, 0, 0)


def test_domains_trailing_dot_and_uppercase_are_canonicalised() -> None:
    data = b"www.guruofporn.com.\nwww.188Betcn2.com\nEXAMPLE.NET.\n"
    parsed = run(data, Format.DOMAINS)
    assert names(parsed) == sorted([b"www.guruofporn.com", b"www.188betcn2.com", b"example.net"])


def test_domains_idn_raw_unicode_and_punycode_twin_are_one_name() -> None:
    parsed = run(IDN_RAW + b"\n" + IDN_ACE + b"\n", Format.DOMAINS)
    assert names(parsed) == sorted([IDN_ACE, IDN_ACE])
    assert counts(parsed) == (2, 0, 0)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Bücher.DE", b"xn--bcher-kva.de"),  # non-ASCII upper case is folded by UTS 46
        ("faß.de", b"xn--fa-hia.de"),  # IDNA 2008 non-transitional: ß is kept, not "ss"
        (FULLWIDTH_EXAMPLE + ".com", b"example.com"),  # full-width letters map to ASCII
        ("例え。jp", b"xn--r8jz45g.jp"),  # ideographic full stop is a label separator
        (CYRILLIC, CYRILLIC.encode("idna")),  # AdGuard filter's raw Unicode rule
    ],
)
def test_domains_unicode_names_map_with_uts46(raw: str, canonical: bytes) -> None:
    assert names(run(raw.encode() + b"\n", Format.DOMAINS)) == sorted([canonical])


def test_domains_trailing_ideographic_full_stop_is_a_trailing_dot() -> None:
    parsed = run("bücher.de\u3002\n".encode(), Format.DOMAINS)
    assert names(parsed) == [b"xn--bcher-kva.de"]


def test_domains_underscores_are_kept() -> None:
    data = b"_analytics.synonym.to\nemail_tracking.actforsport.eu\n_video-bagarre.com\n"
    assert names(run(data, Format.DOMAINS)) == sorted(data.split())


def test_domains_label_length_limit_is_63() -> None:
    data = LABEL_63 + b".dns04.com\n" + LABEL_64 + b".dns04.com\n"
    parsed = run(data, Format.DOMAINS)
    assert names(parsed) == sorted([LABEL_63 + b".dns04.com"])
    assert problems(parsed) == [(2, LONG_LABEL)]


def test_domains_name_length_limit_is_253() -> None:
    # Each limit through both paths: a clean line (bulk) and one with a trailing dot.
    data = b"\n".join([NAME_253, NAME_253 + b".", NAME_254, NAME_254 + b"."]) + b"\n"
    parsed = run(data, Format.DOMAINS)
    assert names(parsed) == sorted([NAME_253, NAME_253])
    assert problems(parsed) == [(3, LONG_NAME), (4, LONG_NAME)]
    assert counts(parsed) == (2, 2, 0)


def test_domains_ip_addresses_and_numeric_tlds_are_invalid() -> None:
    data = b"1.0.209.238\n207.148.115.161\nexample.123\n1and1.com\n"
    parsed = run(data, Format.DOMAINS)
    assert names(parsed) == sorted([b"1and1.com"])
    assert problems(parsed) == [(1, IP_NAME), (2, IP_NAME), (3, IP_NAME)]


def test_domains_single_label_needs_allow_tld() -> None:
    # ShadowWhisperer Risk "apkcafe-vn" (a typo) and Top_Level ".zip", ".рф".
    data = "apkcafe-vn\n.zip\n.рф\n".encode()
    strict = run(data, Format.DOMAINS)
    assert names(strict) == []
    assert problems(strict) == [(1, SINGLE_LABEL), (2, SINGLE_LABEL), (3, SINGLE_LABEL)]
    permissive = run(data, Format.DOMAINS, allow_tld=True)
    assert pairs(permissive) == expect(
        [
            (b"apkcafe-vn", SUBTREE),
            (b"zip", SUBTREE),
            (b"xn--p1ai", SUBTREE),
        ]
    )
    assert counts(permissive) == (3, 0, 0)


def test_domains_crlf_lines_parse_like_lf_lines() -> None:
    lf = b"# header\nads.example.com\n\nbad..example\nTRACK.example.net.\n"
    crlf = lf.replace(b"\n", b"\r\n")
    for parsed in (run(lf, Format.DOMAINS), run(crlf, Format.DOMAINS)):
        assert names(parsed) == sorted([b"ads.example.com", b"track.example.net"])
        assert problems(parsed) == [(4, "empty label")]
        assert parsed.problems[0].text == "bad..example"  # no stray carriage return


def test_domains_inline_comments_and_padding() -> None:
    # ShadowWhisperer Risk and Top_Level, copied with their padding.
    data = (
        b"apkcafe.de                                       #APK Hosting\n"
        b".bin         #Invalid\n"
        b".ru.com      #Asia / Europe - Russia\n"
        b"   # indented comment\n"
        b"\t\n"
    )
    parsed = run(data, Format.DOMAINS)
    assert pairs(parsed) == expect([(b"apkcafe.de", SUBTREE), (b"ru.com", SUBTREE)])
    assert problems(parsed) == [(2, SINGLE_LABEL)]
    assert counts(parsed) == (2, 1, 0)  # three data lines; comment and blank lines not counted


def test_domains_junk_separator_lines_are_invalid() -> None:
    # shadowwhisperer_Risk.txt has two ~100-character "====" lines.
    data = b"good.example\n" + b"=" * 100 + b"\n===.com\n"
    parsed = run(data, Format.DOMAINS)
    assert names(parsed) == sorted([b"good.example"])
    assert problems(parsed) == [(2, LONG_LABEL), (3, BAD_CHAR)]


def test_domains_other_malformed_lines() -> None:
    data = b"two tokens.example\n*.\n*.*.example.com\n..example.com\n*\n"
    parsed = run(data, Format.DOMAINS)
    assert names(parsed) == []
    assert problems(parsed) == [
        (1, "more than one token on the line"),
        (2, "empty name"),
        (3, BAD_CHAR),
        (4, "empty label"),
        (5, BAD_CHAR),
    ]
    assert counts(parsed) == (0, 5, 0)


def test_domains_accounting_covers_every_data_line() -> None:
    data = b"# comment\n\na.example\nb.example # note\n1.2.3.4\nsingle\n  \n"
    parsed = run(data, Format.DOMAINS)
    assert parsed.entries == 4
    assert counts(parsed) == (2, 2, 0)
    assert parsed.names == 2
    assert problems(parsed) == [(5, IP_NAME), (6, SINGLE_LABEL)]


def test_problem_reports_stop_at_the_limit_but_counts_do_not() -> None:
    data = b"ok.example\n" + b"".join(b"10.0.0.%d\n" % i for i in range(60))
    parsed = run(data, Format.DOMAINS)
    assert counts(parsed) == (1, 60, 0)
    assert len(parsed.problems) == MAX_REPORTED_PROBLEMS
    assert [p.line for p in parsed.problems] == list(range(2, 2 + MAX_REPORTED_PROBLEMS))
    assert parsed.problems[0].describe("x.txt") == "x.txt:2: " + IP_NAME + ": '10.0.0.0'"


# ======================================================================== hosts


def test_hosts_any_sink_address_blocks_the_name() -> None:
    data = (
        b"0.0.0.0 zero.example\n"
        b"127.0.0.1 loop.example\n"
        b"::1 v6.example\n"
        b"127.0.0.7 p19-sign.tiktokcdn-us.com\n"  # Sinfonietta social
        b"192.0.2.1\tother.example\n"
    )
    parsed = run(data, Format.HOSTS)
    assert pairs(parsed) == expect(
        [
            (b"zero.example", SUBTREE),
            (b"loop.example", SUBTREE),
            (b"v6.example", SUBTREE),
            (b"p19-sign.tiktokcdn-us.com", SUBTREE),
            (b"other.example", SUBTREE),
        ]
    )
    assert counts(parsed) == (5, 0, 0)


def test_hosts_mode_exact() -> None:
    data = b"0.0.0.0 fast.example\n0.0.0.0 Slow.Example  # comment\n"
    parsed = run(data, Format.HOSTS, plain_scope=Scope.EXACT)
    assert pairs(parsed) == expect([(b"fast.example", EXACT), (b"slow.example", EXACT)])


def test_hosts_several_names_on_a_line_count_as_one_accepted_line() -> None:
    parsed = run(b"0.0.0.0 a.example b.example\tc.example\n", Format.HOSTS)
    assert names(parsed) == sorted([b"a.example", b"b.example", b"c.example"])
    assert parsed.accepted == 1
    assert parsed.names == 3
    assert parsed.entries == 1


def test_hosts_stevenblack_preamble_is_ignored_not_blocked() -> None:
    # StevenBlack lines 14-27, without "localhost.localdomain" (tested on its own below).
    preamble = (
        b"127.0.0.1 localhost\n"
        b"127.0.0.1 local\n"
        b"255.255.255.255 broadcasthost\n"
        b"::1 localhost\n"
        b"::1 ip6-localhost\n"
        b"::1 ip6-loopback\n"
        b"fe80::1%lo0 localhost\n"
        b"ff00::0 ip6-localnet\n"
        b"ff00::0 ip6-mcastprefix\n"
        b"ff02::1 ip6-allnodes\n"
        b"ff02::2 ip6-allrouters\n"
        b"ff02::3 ip6-allhosts\n"
        b"0.0.0.0 0.0.0.0\n"
    )
    parsed = run(preamble + b"0.0.0.0 1493361689.rsc.cdn77.org\n", Format.HOSTS)
    assert names(parsed) == sorted([b"1493361689.rsc.cdn77.org"])
    assert counts(parsed) == (1, 0, 13)
    assert parsed.reasons == {PREAMBLE: 13}
    assert [line for line, _ in problems(parsed)] == list(range(1, 14))


def test_hosts_preamble_is_ignored_even_with_allow_tld() -> None:
    parsed = run(
        b"127.0.0.1 localhost\n255.255.255.255 broadcasthost\n", Format.HOSTS, allow_tld=True
    )
    assert names(parsed) == []
    assert counts(parsed) == (0, 0, 2)


def test_hosts_preamble_localhost_localdomain_is_not_blocked() -> None:
    parsed = run(b"127.0.0.1 localhost.localdomain\n", Format.HOSTS)
    assert names(parsed) == []
    assert problems(parsed) == [(1, PREAMBLE)]


def test_hosts_zone_index_address_is_an_address() -> None:
    data = b"fe80::1%lo0 localhost\nfe80::1%lo0 zoned.example\n"
    parsed = run(data, Format.HOSTS)
    assert names(parsed) == sorted([b"zoned.example"])
    assert counts(parsed) == (1, 0, 1)


def test_hosts_a_bad_name_rejects_its_whole_line() -> None:
    # Sinfonietta pornography line 60925 has a stray extra token: the line is
    # accounted as one unit, so the good name on it is not blocked either.
    parsed = run(b"0.0.0.0 xxxhindi.to en\n0.0.0.0 85.17.187.83\n", Format.HOSTS)
    assert names(parsed) == []
    assert problems(parsed) == [(1, SINGLE_LABEL), (2, IP_NAME)]
    assert parsed.problems[0].text == "0.0.0.0 xxxhindi.to en"


def test_hosts_quirks_from_real_lists() -> None:
    data = (
        b"# Title: example\n"
        b"0.0.0.0 fgoogle.com  # misspelling\n"  # StevenBlack inline comments
        b"0.0.0.0 jackbootedroom.com  ## phishing\n"
        b"0.0.0.0 pblcpush.com \n"  # hostsVN_ads trailing space
        b"0.0.0.0 Ehentai.to\n"  # Sinfonietta upper case
        b"0.0.0.0 www.guruofporn.com.\n"  # Sinfonietta trailing dot
        b"0.0.0.0 xn--yotu-1ra.be\n"
        b'#\t\t\tor "%systemroot%\\system32\\drivers\\etc\\hosts"\n'
        b"127.0.0.1 snapchat-com\n"  # Sinfonietta social: dotless
    )
    parsed = run(data, Format.HOSTS)
    assert names(parsed) == sorted(
        [
            b"fgoogle.com",
            b"jackbootedroom.com",
            b"pblcpush.com",
            b"ehentai.to",
            b"www.guruofporn.com",
            b"xn--yotu-1ra.be",
        ]
    )
    assert problems(parsed) == [(9, SINGLE_LABEL)]
    assert counts(parsed) == (6, 1, 0)


def test_hosts_malformed_lines() -> None:
    data = b"example.com\n0.0.0.0\n0.0.0.0 # only a comment\n300.1.1.1 x.example\n"
    parsed = run(data, Format.HOSTS)
    assert names(parsed) == []
    assert problems(parsed) == [
        (1, "first field is not an IP address"),
        (2, "address without a name"),
        (3, "address without a name"),
        (4, "first field is not an IP address"),
    ]


def test_hosts_idn_twins_normalise_to_the_same_name() -> None:
    parsed = run(b"0.0.0.0 " + IDN_RAW + b"\n0.0.0.0 " + IDN_ACE + b"\n", Format.HOSTS)
    assert names(parsed) == sorted([IDN_ACE, IDN_ACE])


# ====================================================================== adblock

IGNORED_ADBLOCK = [
    # (line, expected reason), every one copied from the AdGuard DNS filter.
    (b"||click.aliexpress.com^$image,script", "rule modifiers other than $important"),
    (b"|http://a.pr-cy.ru^", "URL rule with a scheme"),
    (b"http://7ads.ru^", "URL rule with a scheme"),
    (b"://gj7.ru^", "URL rule with a scheme"),
    (b"||ad-emea.doubleclick.net/", "rule with a path"),
    (b"//oyy.ru^", "rule with a path"),
    (b"||mxtads.com:8040", "rule with a port"),
    (b"||admicro*.vcmedia.vn^", "wildcard inside a rule"),
    (b"||ad.doubleclick.*;sz=", "wildcard inside a rule"),
    (b"||admulti.", "'||name.' (any top-level domain) rule"),
    (b"||adsjudo.com.^", "'||name.' (any top-level domain) rule"),
    (b"/banner[0-9]+\\.example/", "regular-expression rule"),
    (b"example.com##.ad-banner", "cosmetic rule"),
    (b"##.sponsored", "cosmetic rule"),
    (b"example.com#@#.ad", "cosmetic rule"),
    (b"example.com#?#div:has(> .ad)", "cosmetic rule"),
    (b"||1.0.209.238^", "IP address rule"),
    (b"@@||207.148.115.161^", "IP address rule"),
    (b".adonweb.ru^", "rule without '||' anchor"),
    (b"octopusads.net", "rule without '||' anchor"),
    (b"@@dnsotls-ds.metric.gstatic.com^", "unsupported rule syntax"),
]


def test_adblock_block_and_allow_rules() -> None:
    data = (
        b"||ads.example.com^\n"
        b"||pipe.example.com^|\n"
        b"||bare.example.com\n"
        b"@@||blog.logrocket.com^|\n"
        b"@@||imasdk.googleapis.com^\n"
        b"||Upper.Example.COM^\n"
    )
    parsed = run(data, Format.ADBLOCK)
    assert pairs(parsed) == expect(
        [
            (b"ads.example.com", SUBTREE),
            (b"pipe.example.com", SUBTREE),
            (b"bare.example.com", SUBTREE),
            (b"upper.example.com", SUBTREE),
            (b"blog.logrocket.com", ALLOW),
            (b"imasdk.googleapis.com", ALLOW),
        ]
    )
    assert counts(parsed) == (6, 0, 0)


def test_adblock_rules_are_subtree_whatever_the_list_mode() -> None:
    parsed = run(
        b"||ads.example.com^\n@@||ok.example.com^\n", Format.ADBLOCK, plain_scope=Scope.EXACT
    )
    assert pairs(parsed) == expect([(b"ads.example.com", SUBTREE), (b"ok.example.com", ALLOW)])


def test_adblock_important_is_kept_as_a_plain_rule() -> None:
    data = b"||tracker.example^$important\n@@||fine.example^$important\n"
    assert pairs(run(data, Format.ADBLOCK)) == expect(
        [
            (b"tracker.example", SUBTREE),
            (b"fine.example", ALLOW),
        ]
    )


@pytest.mark.parametrize(("line", "reason"), IGNORED_ADBLOCK)
def test_adblock_unsupported_rules_are_ignored_with_a_reason(line: bytes, reason: str) -> None:
    parsed = run(b"||kept.example^\n" + line + b"\n", Format.ADBLOCK)
    assert names(parsed) == sorted([b"kept.example"])
    assert problems(parsed) == [(2, reason)]
    assert counts(parsed) == (1, 0, 1)


def test_adblock_comments_and_headers_are_not_entries() -> None:
    data = (
        b"[Adblock Plus 2.0]\n"
        b"! Title: AdGuard DNS filter\n"
        b"! Expires: 4 days\n"
        b"# a hash comment\n"
        b"\n"
        b"||one.example^\n"
    )
    parsed = run(data, Format.ADBLOCK)
    assert names(parsed) == sorted([b"one.example"])
    assert parsed.entries == 1


def test_adblock_invalid_names_inside_rules() -> None:
    # hostsVN's generator turned "60www.com" into "||60com^" (NOTES.md §11).
    data = b"||60com^\n||bad..example^\n||xn--80abnuns.xn--p1acf^\n"
    parsed = run(data, Format.ADBLOCK)
    assert names(parsed) == sorted([b"xn--80abnuns.xn--p1acf"])
    assert problems(parsed) == [(1, SINGLE_LABEL), (2, "empty label")]
    assert counts(parsed) == (1, 2, 0)


def test_adblock_raw_unicode_and_crlf() -> None:
    # The AdGuard DNS filter is CRLF throughout and has a raw Cyrillic rule.
    data = f"! Title: x\r\n||{CYRILLIC}^\r\n||ads.example^\r\n||mxtads.com:8040\r\n".encode()
    parsed = run(data, Format.ADBLOCK)
    assert names(parsed) == sorted([b"ads.example", CYRILLIC.encode("idna")])
    assert problems(parsed) == [(4, "rule with a port")]
    assert parsed.problems[0].text == "||mxtads.com:8040"


# ========================================================================== RPZ

RPZ_ZONE = b"""\
$TTL 30
; comment line
@ IN SOA localhost. root.localhost. (
        2023091701 ; serial
        3600 600 86400 30 )
 NS localhost.
nx.example CNAME .
*.nx.example CNAME .
nodata.example CNAME *.
pass.example CNAME rpz-passthru.
drop.example CNAME rpz-drop.
ttl.example 300 IN CNAME .
class.example IN 300 CNAME .
32.1.2.0.192.rpz-ip CNAME .
ns.evil.example.rpz-nsdname CNAME .
24.0.2.0.192.rpz-client-ip CNAME .
ns1.rpz-nsip CNAME .
local.example A 192.0.2.1
txt.example TXT "a ; quoted semicolon"
rewrite.example CNAME walled-garden.example.
tcp.example CNAME rpz-tcp-only.
"""


def test_rpz_actions_scopes_and_ignored_records() -> None:
    parsed = run(RPZ_ZONE, Format.RPZ)
    nx = EntryKind(Scope.EXACT, action=Action.NXDOMAIN)
    assert pairs(parsed) == expect(
        [
            (b"nx.example", nx),
            (b"ttl.example", nx),
            (b"class.example", nx),
            (b"nx.example", EntryKind(Scope.BELOW, action=Action.NXDOMAIN)),
            (b"nodata.example", EntryKind(Scope.EXACT, action=Action.NODATA)),
            (b"pass.example", EntryKind(Scope.EXACT, allow=True)),
            (b"drop.example", EntryKind(Scope.EXACT, action=Action.DROP)),
        ]
    )
    assert problems(parsed) == [
        (14, "rpz-ip trigger"),
        (15, "rpz-nsdname trigger"),
        (16, "rpz-client-ip trigger"),
        (17, "rpz-nsip trigger"),
        (18, "local-data record"),
        (19, "local-data record"),
        (20, "CNAME rewrite to another name"),
        (21, "rpz-tcp-only action"),
    ]
    # 15 records after SOA and NS: the directive, SOA and NS are structure, not entries.
    assert counts(parsed) == (7, 0, 8)
    assert parsed.entries == RPZ_ZONE.count(b" CNAME ") + RPZ_ZONE.count(b" A ") + 1


def test_rpz_hagezi_layout_soa_without_class_and_indented_ns() -> None:
    data = (
        b"; hagezi DoH\n"
        b"$TTL 300\n"
        b"@ SOA localhost. root.localhost. 1 43200 3600 259200 300\n"
        b"  NS  localhost.\n"
        b"shield.afixer.app CNAME .\n"
        b"*.shield.afixer.app CNAME .\n"
    )
    parsed = run(data, Format.RPZ)
    assert pairs(parsed) == expect(
        [
            (b"shield.afixer.app", EntryKind(Scope.EXACT, action=Action.NXDOMAIN)),
            (b"shield.afixer.app", EntryKind(Scope.BELOW, action=Action.NXDOMAIN)),
        ]
    )
    assert counts(parsed) == (2, 0, 0)


def test_rpz_adjacent_name_and_wildcard_with_one_target_join_into_one_subtree_entry() -> None:
    data = (
        b"*.first.example CNAME .\n"  # wildcard first, then the name: joined
        b"first.example CNAME .\n"
        b"mixed.example CNAME .\n"  # different targets: not joined
        b"*.mixed.example CNAME *.\n"
        b"apart.example CNAME .\n"  # not adjacent: not joined
        b"between.example CNAME .\n"
        b"*.apart.example CNAME .\n"
        b"pass.example CNAME rpz-passthru.\n"  # any target joins
        b"*.pass.example CNAME rpz-passthru.\n"
        b"*.pass.example CNAME rpz-passthru.\n"  # the same wildcard again: on its own
    )
    nx = Action.NXDOMAIN
    joined = run(data, Format.RPZ, join_rpz_pairs=True)
    assert pairs(joined) == expect(
        [
            (b"first.example", EntryKind(Scope.SUBTREE, action=nx)),
            (b"mixed.example", EntryKind(Scope.EXACT, action=nx)),
            (b"mixed.example", EntryKind(Scope.BELOW, action=Action.NODATA)),
            (b"apart.example", EntryKind(Scope.EXACT, action=nx)),
            (b"between.example", EntryKind(Scope.EXACT, action=nx)),
            (b"apart.example", EntryKind(Scope.BELOW, action=nx)),
            (b"pass.example", EntryKind(Scope.SUBTREE, allow=True)),
            (b"pass.example", EntryKind(Scope.BELOW, allow=True)),
        ]
    )
    assert counts(joined) == (10, 0, 0)  # every line is accounted for, joined or not
    # Without the option (the probe) every record stays a rule of its own.
    plain = run(data, Format.RPZ)
    assert counts(plain) == (10, 0, 0)
    assert (b"first.example", EntryKind(Scope.EXACT, action=nx)) in pairs(plain)
    assert (b"first.example", EntryKind(Scope.BELOW, action=nx)) in pairs(plain)
    assert plain.names == 10


def test_rpz_owner_is_inherited_by_lines_starting_with_white_space() -> None:
    data = b'kept.example TXT "reason"\n    CNAME .\n\tIN CNAME *.\n'
    parsed = run(data, Format.RPZ)
    assert pairs(parsed) == expect(
        [
            (b"kept.example", EntryKind(Scope.EXACT, action=Action.NXDOMAIN)),
            (b"kept.example", EntryKind(Scope.EXACT, action=Action.NODATA)),
        ]
    )
    assert problems(parsed) == [(1, "local-data record")]


def test_rpz_a_continuation_line_takes_the_owner_of_a_plain_policy_line() -> None:
    # The first and third lines take the quick path for "name CNAME target";
    # the continuation lines after them must still see their owners.
    data = (
        b"*.fast.example CNAME .\n  CNAME rpz-passthru.\nother.example 300 IN CNAME *.\n\tTXT x\n"
    )
    parsed = run(data, Format.RPZ)
    assert pairs(parsed) == expect(
        [
            (b"fast.example", EntryKind(Scope.BELOW, action=Action.NXDOMAIN)),
            (b"fast.example", EntryKind(Scope.BELOW, allow=True)),
            (b"other.example", EntryKind(Scope.EXACT, action=Action.NODATA)),
        ]
    )
    assert problems(parsed) == [(4, "local-data record")]


def test_rpz_origin_and_absolute_owner_names() -> None:
    data = (
        b"$ORIGIN rpz.example.net.\n"
        b"relative.example CNAME .\n"
        b"absolute.example.rpz.example.net. CNAME .\n"
        b"Upper.Example.RPZ.example.NET. CNAME .\n"
        b"outside.example.org. CNAME .\n"
        b"rpz.example.net. CNAME .\n"
        b"@ CNAME .\n"
    )
    parsed = run(data, Format.RPZ)
    assert names(parsed) == sorted([b"relative.example", b"absolute.example", b"upper.example"])
    assert problems(parsed) == [
        (5, "absolute owner name outside $ORIGIN"),
        (6, "policy record at the zone apex"),
        (7, "policy record at the zone apex"),
    ]
    assert counts(parsed) == (3, 3, 0)


def test_rpz_absolute_owner_without_origin_is_invalid() -> None:
    parsed = run(b"bad.example.rpz. CNAME .\n", Format.RPZ)
    assert problems(parsed) == [(1, "absolute owner name without $ORIGIN")]


def test_rpz_malformed_records_and_directives() -> None:
    data = (
        b"$INCLUDE other.zone\n"
        b"lonely.example 300\n"
        b"empty.example CNAME\n"
        b"two.example CNAME . extra\n"
        b"1.2.3.4.example.com CNAME .\n"
        b"10.0.0.1 CNAME .\n"
    )
    parsed = run(data, Format.RPZ)
    assert names(parsed) == sorted([b"1.2.3.4.example.com"])
    assert problems(parsed) == [
        (1, "unsupported zone directive"),
        (2, "record without a type"),
        (3, "CNAME without a single target"),
        (4, "CNAME without a single target"),
        (6, IP_NAME),
    ]
    assert counts(parsed) == (1, 5, 0)


def test_rpz_problem_line_is_the_first_line_of_a_multi_line_record() -> None:
    data = b"$TTL 30\n\nmulti.example IN (\n  A\n  192.0.2.1 )\nnext.example CNAME .\n"
    parsed = run(data, Format.RPZ)
    assert names(parsed) == sorted([b"next.example"])
    assert problems(parsed) == [(3, "local-data record")]


def test_rpz_single_label_trigger_follows_allow_tld() -> None:
    data = b"zip CNAME .\n"
    assert problems(run(data, Format.RPZ)) == [(1, SINGLE_LABEL)]
    assert names(run(data, Format.RPZ, allow_tld=True)) == sorted([b"zip"])


def test_rpz_ttl_with_units_is_a_ttl() -> None:
    parsed = run(b"$TTL 1h\nunits.example 1h IN CNAME .\nmixed.example 1d2h CNAME .\n", Format.RPZ)
    assert names(parsed) == sorted([b"units.example", b"mixed.example"])
    assert counts(parsed) == (2, 0, 0)


def test_rpz_second_origin_applies_to_relative_owners() -> None:
    data = (
        b"$ORIGIN rpz.example.net.\n"
        b"first.example CNAME .\n"
        b"$ORIGIN example.org.rpz.example.net.\n"
        b"www CNAME .\n"
    )
    parsed = run(data, Format.RPZ)
    assert names(parsed) == sorted([b"first.example", b"www.example.org"])


# ======================================================================= native

NATIVE = """\
#filterd-list 1
# NAME                 KIND          CATEGORY   REFERENCE
gambling.example       block         gambling   sample-decision-001
games.example          block-exact   games      sample-decision-006
wild.example           block-below   fraud      sample-decision-007
safe.adult.example     allow         -          sample-decision-002
only.example           allow-exact   Adult
Casino.Example.NET.    BLOCK         -          Quyết định 1234/QĐ-BTTTT ngày 01/02/2024
""".encode()


def test_native_kinds_categories_and_references() -> None:
    parsed = run(NATIVE, Format.NATIVE)
    assert pairs(parsed) == expect(
        [
            (
                b"gambling.example",
                EntryKind(Scope.SUBTREE, False, "gambling", None, "sample-decision-001"),
            ),
            (b"games.example", EntryKind(Scope.EXACT, False, "games", None, "sample-decision-006")),
            (b"wild.example", EntryKind(Scope.BELOW, False, "fraud", None, "sample-decision-007")),
            (
                b"safe.adult.example",
                EntryKind(Scope.SUBTREE, True, None, None, "sample-decision-002"),
            ),
            (b"only.example", EntryKind(Scope.EXACT, True, "adult", None, "")),
            (
                b"casino.example.net",
                EntryKind(
                    Scope.SUBTREE, False, None, None, "Quyết định 1234/QĐ-BTTTT ngày 01/02/2024"
                ),
            ),
        ]
    )
    assert counts(parsed) == (6, 0, 0)


def test_native_header_is_required() -> None:
    without = NATIVE.split(b"\n", 1)[1]
    parsed = run(without, Format.NATIVE)
    assert parsed.groups == {}
    assert counts(parsed) == (0, 1, 0)
    assert problems(parsed) == [(1, "missing '#filterd-list 1' header")]
    assert run(b"", Format.NATIVE).invalid == 1


def test_native_rejects_bad_lines_with_reasons() -> None:
    data = (
        "#filterd-list 1\n"
        "ok.example block -\n"
        "two.example block\n"
        "kind.example deny -\n"
        "cat.example block bad!cat\n"
        "under.example block _hidden\n"
        "*.wild.example block -\n"
        "1.2.3.4 block -\n"
        "tld block -\n"
        "long.example block - " + "r" * 201 + "\n"
        "fine.example block - " + "r" * 200 + "\n"
    ).encode() + b"utf.example block - \xff\xfe\n"
    parsed = run(data, Format.NATIVE)
    assert names(parsed) == sorted([b"ok.example", b"fine.example"])
    assert problems(parsed) == [
        (3, "expected NAME KIND CATEGORY [REFERENCE]"),
        (4, "unknown kind (block, block-exact, block-below, allow, allow-exact)"),
        (5, "category must match [a-z0-9][a-z0-9_-]* or be '-'"),
        (6, "category must match [a-z0-9][a-z0-9_-]* or be '-'"),
        (7, "wildcards are written as kind 'block-below', not '*.'"),
        (8, IP_NAME),
        (9, SINGLE_LABEL),
        (10, "reference longer than 200 bytes (UTF-8)"),
        (12, "reference is not valid UTF-8"),
    ]
    assert counts(parsed) == (2, 9, 0)


def test_native_header_detection_and_parser_agree() -> None:
    # The header is an exact token: another case or version is not this format,
    # for detection and parsing alike.
    for header in (b"#FILTERD-LIST 1", b"#filterd-list 10"):
        data = header + b"\nx.example block -\n"
        assert detect_format(data) is not Format.NATIVE
        assert run(data, Format.NATIVE).accepted == 0
    data = b"#filterd-list 1\nx.example block -\n"
    assert detect_format(data) is Format.NATIVE
    assert run(data, Format.NATIVE).accepted == 1


def test_native_everything_after_the_category_is_the_reference() -> None:
    # There are no inline comments in the native format.
    parsed = run(b"#filterd-list 1\nx.example block - # not a comment\n", Format.NATIVE)
    assert [kind.ref for _, kind in pairs(parsed)] == ["# not a comment"]


def test_native_crlf_and_idn() -> None:
    data = (
        b"#filterd-list 1\r\n" + IDN_RAW + b" block adult\r\n\r\n" + IDN_ACE + b" block adult\r\n"
    )
    parsed = run(data, Format.NATIVE)
    assert pairs(parsed) == expect(
        [
            (IDN_ACE, EntryKind(Scope.SUBTREE, category="adult")),
            (IDN_ACE, EntryKind(Scope.SUBTREE, category="adult")),
        ]
    )


# ===================================================================== detection


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (b"#filterd-list 1\nexample.com block -\n", Format.NATIVE),
        (b"! Title: AdGuard DNS filter\n||ads.example^\n", Format.ADBLOCK),
        (b"[Adblock Plus 2.0]\n||ads.example^\n", Format.ADBLOCK),
        (b"# no header\n||ads.example^\n", Format.ADBLOCK),
        (b"@@||ok.example^\n", Format.ADBLOCK),
        (b"$TTL 30\n@ IN SOA localhost. root.localhost. 1 2 3 4 5\n NS localhost.\n", Format.RPZ),
        (b"; hagezi\n@ SOA localhost. root.localhost. 1 2 3 4 5\nx.example CNAME .\n", Format.RPZ),
        (b"$ORIGIN rpz.example.\nx.example CNAME .\n", Format.RPZ),
        (b"bad.example CNAME .\n", Format.RPZ),
        (b"# header\n0.0.0.0 a.example\n127.0.0.1 b.example\n", Format.HOSTS),
        (b"::1 localhost\nfe80::1%lo0 localhost\n0.0.0.0 x.example\n", Format.HOSTS),
        (b"# header\na.example\nb.example\n", Format.DOMAINS),
        (b"*.ns.00dani.me\n.afshin.ir\n", Format.DOMAINS),
        # urlhaus-filter-domains: mostly bare IPs, still a domains list.
        (b"1.0.209.238\n1.0.209.239\nbad.example\n", Format.DOMAINS),
        (b"", Format.DOMAINS),
    ],
)
def test_detect_format(sample: bytes, expected: Format) -> None:
    assert detect_format(sample) is expected


def test_detect_format_needs_a_majority_of_address_lines_for_hosts() -> None:
    assert detect_format(b"0.0.0.0 a.example\nb.example\nc.example\n") is Format.DOMAINS
    assert detect_format(b"0.0.0.0 a.example\n0.0.0.0 b.example\nc.example\n") is Format.HOSTS


def test_detect_format_tab_separated_rpz() -> None:
    sample = (
        b"@\tIN\tSOA\tlocalhost. root.localhost. 1 2 3 4 5\n\tNS\tlocalhost.\nx.example\tCNAME\t.\n"
    )
    assert detect_format(sample) is Format.RPZ


# =============================================================== both code paths


@pytest.mark.parametrize(
    ("fmt", "fast", "slow"),
    [
        (Format.DOMAINS, b"a.example\n", b"  a.example  \n"),
        (Format.HOSTS, b"0.0.0.0 a.example\n", b"0.0.0.0   a.example # c\n"),
        (Format.ADBLOCK, b"||a.example^\n", b"||a.example^$important\n"),
    ],
)
def test_bulk_and_per_line_paths_agree(fmt: Format, fast: bytes, slow: bytes) -> None:
    for scope in (Scope.SUBTREE, Scope.EXACT):
        one = run(fast, fmt, plain_scope=scope)
        other = run(slow, fmt, plain_scope=scope)
        assert pairs(one) == pairs(other)
        assert counts(one) == counts(other) == (1, 0, 0)


def test_native_reference_limit_counts_utf8_bytes_like_the_canonical_form() -> None:
    """A Vietnamese reference is judged by its UTF-8 size, as the sync protocol's
    canonical form is, so the parser never accepts what a snapshot would refuse."""
    fits = "Quyết định " + "ế" * 61  # 16 + 183 = 199 bytes, 72 characters
    too_long = fits + "ếế"  # 205 bytes, 74 characters
    data = f"#filterd-list 1\nfits.example block - {fits}\nlong.example block - {too_long}\n"
    parsed = run(data.encode(), Format.NATIVE)
    assert names(parsed) == [b"fits.example"]
    assert problems(parsed) == [(3, "reference longer than 200 bytes (UTF-8)")]
