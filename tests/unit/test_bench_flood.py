"""The flood ladder's reading of kxdpgun and its summary (``bench.flood``,
``bench.harness``): the figures bench/README.md reports come from here.

The kxdpgun text is what kxdpgun 3.2 printed in a ``bench/run`` of the 1M
list (filterd at 223,000 offered queries per second)."""

from __future__ import annotations

import dataclasses

import pytest

from bench.flood import Flood, parse_kxdpgun
from bench.harness import flood_ratios, flood_summary
from bench.targets import TargetError

KXDPGUN_3_2 = """\
using interface fb12921c, XDP threads 1, UDP, native mode
thread#00: sent 446000, received 427576
total queries:     446000 (223000 pps)
total replies:     427576 (213788 pps) (95%)
average DNS reply size: 62 B
average Ethernet reply rate: 178804124 bps (178.80 Mbps)
responded NOERROR:   397567
responded NXDOMAIN:  30009
duration: 2 s
"""


def step(offered: int, answered: int, *, server_sent: int | None = None) -> Flood:
    """A two-second step in which kxdpgun sent the offered rate and every
    query reached the server, which refused what it did not answer."""
    return Flood(
        offered=offered,
        sent=2 * offered,
        sent_qps=float(offered),
        answered=2 * answered,
        qps=float(answered),
        wall_s=4.0,
        rcodes={"NOERROR": 2 * answered},
        arrived=2 * offered,
        refused=2 * (offered - answered),
        server_sent=2 * answered if server_sent is None else server_sent,
        server_core_busy=0.5,
        server_core_steal=0.0,
    )


def test_kxdpgun_summary_is_read_as_printed() -> None:
    sent, sent_qps, answered, qps, rcodes = parse_kxdpgun(KXDPGUN_3_2)
    assert (sent, sent_qps, answered, qps) == (446_000, 223_000.0, 427_576, 213_788.0)
    assert rcodes == {"NOERROR": 397_567, "NXDOMAIN": 30_009}


def test_kxdpgun_without_a_summary_is_an_error_not_a_zero() -> None:
    failed = "using interface fb1c, XDP threads 1, UDP, native mode\nfailed to init XDP (-1)\n"
    with pytest.raises(TargetError, match="no summary"):
        parse_kxdpgun(failed)


def test_the_maximum_is_the_most_answered_and_clean_is_the_fastest_served_step() -> None:
    # Past its maximum a server answers fewer as more is offered.
    summary = flood_summary(
        [step(100_000, 100_000), step(150_000, 140_000), step(200_000, 120_000)]
    )
    assert summary["max_qps"] == 140_000.0
    assert summary["offered_at_max"] == 150_000
    assert summary["clean_qps"] == 100_000
    assert summary["answered_pct_at_max"] == pytest.approx(100 * 140 / 150)
    assert summary["client_missed_pct"] == 0.0


def test_answers_the_server_sent_and_kxdpgun_did_not_count_are_the_clients_loss() -> None:
    summary = flood_summary([step(100_000, 99_000, server_sent=200_000)])
    assert summary["client_missed_pct"] == pytest.approx(1.0)


def test_no_step_served_wholly_leaves_clean_unset() -> None:
    assert flood_summary([step(100_000, 90_000)])["clean_qps"] is None


def test_a_step_the_client_fell_short_of_is_not_served() -> None:
    # kxdpgun sent 90 % of the offered rate and every query was answered.
    short = dataclasses.replace(step(200_000, 180_000), sent=360_000, sent_qps=180_000.0)
    summary = flood_summary([step(100_000, 100_000), short])
    assert summary["clean_qps"] == 100_000
    assert summary["steps"][1]["answered_pct"] == pytest.approx(90.0)


def test_queries_that_never_reached_the_server_are_counted_apart() -> None:
    lossy = dataclasses.replace(step(100_000, 99_000), arrived=199_000, refused=1_000)
    assert lossy.lost_before_server == 1_000
    assert flood_summary([lossy])["lost_before_server_pct"] == pytest.approx(0.5)


def test_the_median_ratio_counts_only_steps_that_overloaded_both() -> None:
    filterd = flood_summary(
        [step(100_000, 100_000), step(150_000, 140_000), step(200_000, 150_000)]
    )
    unbound = flood_summary([step(100_000, 99_500), step(150_000, 100_000), step(200_000, 100_000)])
    note = flood_ratios(filterd, unbound)
    assert "**1.50x**;" in note  # 150,000 / 100,000, the most answered of each
    assert "**1.45x** over 2 steps" in note  # median of 1.40x and 1.50x; the first step is left out
