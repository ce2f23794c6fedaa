"""The enforcement probe's pure parts: sampling, target names, verdicts, report, usage.

Answers are real DNS messages built with dnslib and judged as bytes, the
way the probe receives them; lists are parsed by filterd's own parsers.
Usage errors run the command's real entry point and read its stderr.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import random
import socket
from pathlib import Path

import pytest
from dnslib import EDNS0, RCODE, RR, DNSRecord, EDNSOption

from filterd.cli import main
from filterd.formats import Format, ParseOptions, detect_format, parse
from filterd.model.rules import Action, Scope
from filterd.probe.report import Check, Report, RunInfo, percent
from filterd.probe.sample import (
    ListInputError,
    ListLine,
    ListRule,
    ListRules,
    Target,
    draw,
    inflate,
    locate,
    made_up_name,
    rules_of,
    targets_for,
)
from filterd.probe.verdict import DEFAULT_SINKHOLES, Ede, Outcome, Verdict, classify, failed
from filterd.sync.snapshot import make_entry, serialize_snapshot

# ------------------------------------------------------------------ lists


def rules_from(text: str, *, mode: Scope = Scope.SUBTREE) -> ListRules:
    data = text.encode()
    return rules_of(parse(data, detect_format(data), ParseOptions("test", plain_scope=mode)))


def domains(count: int) -> ListRules:
    return rules_from("".join(f"site{i}.example\n" for i in range(count)))


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    rules = domains(1000)
    first = draw(rules, 50, seed=7)
    assert first == draw(rules, 50, seed=7)
    assert [t.qname for t in first.targets] != [t.qname for t in draw(rules, 50, seed=8).targets]


def test_sample_is_without_replacement_and_capped_by_the_list() -> None:
    rules = domains(30)
    sample = draw(rules, 200, seed=1)
    names = [t.qname for t in sample.targets]
    assert len(names) == len(set(names)) == 30
    assert set(names) == {f"site{i}.example" for i in range(30)}
    assert len(draw(rules, 10, seed=1).targets) == 10


def test_large_list_is_sampled_lazily_and_reproducibly() -> None:
    rules = domains(120_000)  # above FULL_SHUFFLE_LIMIT: indices drawn one by one
    sample = draw(rules, 100, seed=3)
    names = [t.qname for t in sample.targets]
    assert len(set(names)) == 100 and names == [t.qname for t in draw(rules, 100, 3).targets]


def test_only_block_rules_are_sampled_and_allows_exempt_their_names() -> None:
    rules = rules_from(
        "||ads.example^\n||tracker.example^\n@@||tracker.example^\n"
        "||cdn.example^\n@@||good.cdn.example^\n"
    )
    assert rules.format is Format.ADBLOCK and rules.total == 3
    sample = draw(rules, 10, seed=0)
    # tracker.example: the allow on the same name wins; good.cdn.example is not
    # probed, so the allow below cdn.example does not matter.
    assert sorted(t.qname for t in sample.targets) == ["ads.example", "cdn.example"]
    assert sample.exempted == 1


def test_duplicate_names_are_probed_once() -> None:
    rules = rules_from("#filterd-list 1\ndup.example block -\ndup.example block-exact -\n")
    sample = draw(rules, 10, seed=0)
    assert [t.qname for t in sample.targets] == ["dup.example"]


def test_target_names_follow_the_rule_kind() -> None:
    rng = random.Random(5)
    exact = ListRule(b"exact.example", Scope.EXACT)
    subtree = ListRule(b"tree.example", Scope.SUBTREE)
    below = ListRule(b"wild.example", Scope.BELOW, Action.NXDOMAIN)
    assert targets_for(exact, rng, subdomains=True) == [Target("exact.example", exact)]
    assert targets_for(subtree, rng, subdomains=False) == [Target("tree.example", subtree)]
    with_sub = targets_for(subtree, rng, subdomains=True)
    assert with_sub is not None and with_sub[0] == Target("tree.example", subtree)
    assert with_sub[1].made_up and with_sub[1].qname.endswith(".tree.example")
    only_below = targets_for(below, rng, subdomains=False)
    assert only_below is not None and len(only_below) == 1
    label, _, parent = only_below[0].qname.partition(".")
    assert parent == "wild.example" and only_below[0].made_up
    assert label.startswith("probe-") and len(label) == 14
    int(label[6:], 16)


def test_rpz_wildcard_only_rule_probes_a_made_up_subdomain() -> None:
    rules = rules_from(
        "$ORIGIN rpz.example.\n@ SOA ns. host. 1 2 3 4 5\n"
        "exact.example CNAME .\n*.wild.example CNAME .\n*.nodata.example CNAME *.\n"
    )
    assert rules.format is Format.RPZ
    sample = draw(rules, 10, seed=2)
    by_rule = {t.rule.name: t for t in sample.targets if t.rule is not None}
    assert by_rule[b"exact.example"].qname == "exact.example"
    for name in (b"wild.example", b"nodata.example"):
        target = by_rule[name]
        assert target.qname.endswith("." + name.decode()) and target.made_up
        assert target.rule is not None and target.rule.scope is Scope.BELOW


def test_made_up_name_that_does_not_fit_is_refused() -> None:
    long_name = ".".join(["a" * 60] * 4)  # 243 characters
    assert made_up_name(long_name.encode(), random.Random(0)) is None
    other = "b" + long_name[1:]
    rules = rules_from(f"#filterd-list 1\n{long_name} block-below -\n{other} block -\n")
    # No name below the first can be made up; the second is still probed by its own name.
    assert [t.qname for t in draw(rules, 5, 0, subdomains=True).targets] == [other]


def test_a_gzip_snapshot_is_a_native_list() -> None:
    snapshot = serialize_snapshot(
        [make_entry("b.example", "block-below"), make_entry("a.example", "block", "gambling")]
    )
    data = inflate(gzip.compress(snapshot, mtime=0), "42.gz")
    assert data == snapshot and detect_format(data) is Format.NATIVE
    rules = rules_from(data.decode())
    assert {(template.scope, tuple(names)) for template, names in rules.groups} == {
        (Scope.SUBTREE, (b"a.example",)),
        (Scope.BELOW, (b"b.example",)),
    }


def test_inflating_is_bounded_and_rules_group_by_scope_only() -> None:
    with pytest.raises(ListInputError, match=r"bomb\.gz: inflates to more than 100 bytes"):
        inflate(gzip.compress(b"x" * 1000), "bomb.gz", limit=100)
    entries = [make_entry(f"n{i}.example", "block", "gambling", f"decision-{i}") for i in range(50)]
    rules = rules_from(serialize_snapshot(entries).decode())
    assert len(rules.groups) == 1 and rules.total == 50


def test_list_lines_are_found_for_each_format() -> None:
    two, three = ListRule(b"two.example", Scope.SUBTREE), ListRule(b"three.example", Scope.SUBTREE)
    hosts = b"# header\n0.0.0.0 one.example\n\n0.0.0.0 Two.Example three.example\n"
    assert locate(hosts, Format.HOSTS, ParseOptions("h"), {two, three}) == {
        two: ListLine(4, "0.0.0.0 Two.Example three.example"),
        three: ListLine(4, "0.0.0.0 Two.Example three.example"),
    }
    cdn = ListRule(b"cdn.example", Scope.SUBTREE)
    adblock = b"! cdn.example\n@@||cdn.example^\n||cdn.example^$important\n"
    assert locate(adblock, Format.ADBLOCK, ParseOptions("a"), {cdn}) == {
        cdn: ListLine(3, "||cdn.example^$important")
    }
    # RPZ's usual pair: each rule is found on its own line.
    exact = ListRule(b"pair.example", Scope.EXACT, Action.NXDOMAIN)
    below = ListRule(b"pair.example", Scope.BELOW, Action.NXDOMAIN)
    nope = ListRule(b"nope.example", Scope.EXACT, Action.NXDOMAIN)
    rpz = (
        b"$ORIGIN rpz.\n*.pair.example CNAME rpz-passthru.\npair.example CNAME .\n"
        b"*.pair.example 60 CNAME .\n"
    )
    assert locate(rpz, Format.RPZ, ParseOptions("r"), {exact, below, nope}) == {
        exact: ListLine(3, "pair.example CNAME ."),
        below: ListLine(4, "*.pair.example 60 CNAME ."),
    }
    native = b"#filterd-list 1\n# x.example block -\nx.example block-exact gambling ref-1\n"
    x = ListRule(b"x.example", Scope.EXACT)
    assert locate(native, Format.NATIVE, ParseOptions("n"), {x}) == {
        x: ListLine(3, "x.example block-exact gambling ref-1")
    }


# ------------------------------------------------------------------ verdicts


def reply(
    rcode: int = RCODE.NOERROR,
    records: str = "",
    *,
    ede: tuple[int, str] | None = None,
    ext_rcode: int = 0,
) -> bytes:
    query = DNSRecord.question("name.example", "A")
    message = query.reply()
    message.header.rcode = rcode
    if records:
        message.add_answer(*RR.fromZone(records))
    if ede is not None or ext_rcode:
        options = (
            [] if ede is None else [EDNSOption(15, ede[0].to_bytes(2, "big") + ede[1].encode())]
        )
        message.add_ar(EDNS0(udp_len=1232, ext_rcode=ext_rcode, opts=options))
    packed: bytes = message.pack()
    return packed


SINKHOLES = DEFAULT_SINKHOLES | {ipaddress.ip_address("192.0.2.80")}


@pytest.mark.parametrize(
    ("message", "outcome", "how"),
    [
        (reply(RCODE.NXDOMAIN), Outcome.BLOCKED, "nxdomain"),
        (reply(RCODE.REFUSED), Outcome.BLOCKED, "refused"),
        (reply(), Outcome.BLOCKED, "nodata"),
        (reply(records="name.example. 60 A 0.0.0.0"), Outcome.BLOCKED, "sinkhole"),
        (reply(records="name.example. 60 AAAA ::"), Outcome.BLOCKED, "sinkhole"),
        (reply(records="name.example. 60 A 192.0.2.80"), Outcome.BLOCKED, "sinkhole"),
        (
            reply(records="name.example. 60 CNAME edge.example.\nedge.example. 60 A 192.0.2.80"),
            Outcome.BLOCKED,
            "sinkhole",
        ),
        (reply(records="name.example. 60 A 192.0.2.10"), Outcome.RESOLVED, "answer"),
        (reply(records="name.example. 60 CNAME edge.example."), Outcome.RESOLVED, "answer"),
        (reply(RCODE.REFUSED, ede=(15, "")), Outcome.BLOCKED, "refused"),
        (reply(RCODE.REFUSED, ede=(18, "")), Outcome.ERROR, "prohibited"),
        (reply(RCODE.SERVFAIL), Outcome.ERROR, "servfail"),
        (reply(RCODE.FORMERR), Outcome.ERROR, "formerr"),
        (reply(ext_rcode=1), Outcome.ERROR, "badvers"),
        (b"\x00\x01\x81", Outcome.ERROR, "malformed"),
    ],
)
def test_answers_are_judged_from_the_answer_alone(
    message: bytes, outcome: Outcome, how: str
) -> None:
    verdict = classify(message, SINKHOLES)
    assert (verdict.outcome, verdict.how) == (outcome, how)


def test_a_sinkhole_address_only_counts_when_configured() -> None:
    message = reply(records="name.example. 60 A 192.0.2.80")
    assert classify(message, DEFAULT_SINKHOLES).outcome is Outcome.RESOLVED


def test_extended_dns_error_is_reported_as_evidence() -> None:
    verdict = classify(reply(RCODE.NXDOMAIN, ede=(16, "national v42")), SINKHOLES)
    assert verdict.ede == (Ede(16, "national v42"),) and verdict.policy_ede
    assert verdict.describe() == "NXDOMAIN; EDE 16 (Censored): national v42"
    plain = classify(reply(RCODE.NXDOMAIN), SINKHOLES)
    assert plain.outcome is Outcome.BLOCKED and not plain.ede and not plain.policy_ede
    stale = classify(reply(records="name.example. 60 A 192.0.2.1", ede=(3, "")), SINKHOLES)
    assert stale.outcome is Outcome.RESOLVED and not stale.policy_ede


def test_descriptions_say_what_came_back() -> None:
    assert classify(reply(), SINKHOLES).describe() == "NOERROR; no records (NODATA)"
    answer = classify(reply(records="name.example. 60 A 192.0.2.10"), SINKHOLES)
    assert answer.describe() == "NOERROR; A 192.0.2.10"
    assert failed("timeout").describe() == "no answer (timed out, after one retry)"


# ------------------------------------------------------------------ report


def report(outcomes: list[Outcome], controls: list[Outcome], minimum: float = 100) -> Report:
    rule = ListRule(b"x.example", Scope.SUBTREE)
    info = RunInfo(
        "127.0.0.1:53", "list", "domains", 1000, 200, len(outcomes), 0, 9, "A", (), minimum
    )
    return Report(
        info,
        tuple(
            Check(Target(f"n{i}.example", rule), Verdict(o, "x")) for i, o in enumerate(outcomes)
        ),
        tuple(Check(Target(f"c{i}.example"), Verdict(o, "x")) for i, o in enumerate(controls)),
    )


def test_summary_line_and_exact_pass_decision() -> None:
    outcomes = [Outcome.BLOCKED] * 197 + [Outcome.RESOLVED] * 2 + [Outcome.ERROR]
    result = report(outcomes, [Outcome.RESOLVED] * 3, minimum=98.5)
    assert result.summary() == (
        "compliance: 98.5% (197/200 blocked, 1 errors), controls: 3/3 resolved"
    )
    assert result.passed and [c.target.qname for c in result.leaks] == [
        "n197.example",
        "n198.example",
    ]
    assert not report(outcomes, [Outcome.RESOLVED], minimum=98.6).passed
    assert not report([Outcome.BLOCKED], [Outcome.RESOLVED, Outcome.BLOCKED]).passed
    alone = report([Outcome.BLOCKED], [])
    assert alone.passed and alone.summary().endswith("errors), no controls")
    assert any(note.startswith("no controls") for note in alone.notes())


def test_compliance_is_rounded_down() -> None:
    assert percent(1999, 2000) == 99.9 and percent(199, 200) == 99.5
    assert percent(1, 3) == 33.3 and percent(2, 3) == 66.6 and percent(5, 5) == 100.0
    almost = report([Outcome.BLOCKED] * 1999 + [Outcome.ERROR], [])
    assert almost.compliance == 99.9 and not almost.passed


# ------------------------------------------------------------------ usage


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = main(["probe", *argv])
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "list.txt"
    good.write_text("ads.example\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing but comments\n\n")
    broken = tmp_path / "snapshot.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00broken")
    controls = tmp_path / "controls.txt"
    controls.write_text("www.example.com\nnot a name\n")
    base = ["--resolver", "127.0.0.1:53", "--list"]
    cases = [
        ([*base, str(tmp_path / "missing.txt")], "missing.txt: No such file or directory"),
        ([*base, str(empty)], "empty.txt: no block rules to probe"),
        ([*base, str(broken)], "snapshot.gz: not a valid gzip file"),
        ([*base, str(good), "--controls", str(controls)], "controls.txt:2: control 'not a name'"),
        ([*base, str(good), "--control", "bad..name"], "--control: control 'bad..name'"),
    ]
    for argv, message in cases:
        status, err = run(argv, capsys)
        assert status == 2 and err.count("\n") == 1 and message in err, err
    for argv, message in [
        (["--resolver", "resolver.example", "--list", str(good)], "is not an IP address"),
        (["--resolver", "127.0.0.1:99999", "--list", str(good)], "port '99999'"),
        ([*base, str(good), "--sinkhole", "nowhere"], "'nowhere' is not an IP address"),
        ([*base, str(good), "--min-compliance", "101"], "101 is not between 0 and 100"),
        ([*base, str(good), "--sample", "0"], "0 is not between 1 and 100000"),
    ]:
        # argparse's own errors: the usage, then one line saying what is wrong.
        status, err = run(argv, capsys)
        last = err.splitlines()[-1]
        assert status == 2 and last.startswith("filterd probe: error:") and message in last, err


def test_json_output_is_machine_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A socket that never answers: every name is an error (timeout after one
    # retry), neither blocked nor leaked, and the run fails without a traceback.
    listed = tmp_path / "list.txt"
    listed.write_text("0.0.0.0 a.example\n0.0.0.0 b.example\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        status = main(
            ["probe", "--resolver", f"127.0.0.1:{port}", "--list", str(listed), "--seed", "4",
             "--timeout", "0.1", "--format", "json"]
        )  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert document["seed"] == 4 and document["probed"] == 2 and document["errors"] == 2
    assert document["blocked"] == 0 and document["failures"] == [] and not document["passed"]
    assert {c["how"] for c in document["checks"]} == {"timeout"}
    assert {c["rule"]["name"]: c["line"]["number"] for c in document["checks"]} == {
        "a.example": 1,
        "b.example": 2,
    }
