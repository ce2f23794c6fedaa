"""Log lines are rate limited by origin: a flood of one kind of line costs
``BURST`` lines per window and one summary, never one line per event."""

from __future__ import annotations

import logging

from filterd.logs import BURST, RateLimit


def record(name: str, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)


def test_a_flood_of_one_line_is_cut_to_a_burst_and_a_summary() -> None:
    clock = [1000.0]
    limit = RateLimit(window=10.0, burst=BURST, clock=lambda: clock[0])
    template = "notify refused (%s): %s"
    passed = [limit.filter(record("filterd.admin", template, "json", i)) for i in range(1000)]
    assert passed.count(True) == BURST
    assert limit.filter(record("filterd.admin", "another kind of line"))  # its own budget
    clock[0] += 10.0
    summary = record("filterd.admin", template, "json", "x")
    assert limit.filter(summary)
    assert summary.getMessage().endswith(f"[{1000 - BURST} more like this not logged]")


def test_information_lines_are_never_left_out() -> None:
    limit = RateLimit(window=10.0, burst=BURST, clock=lambda: 0.0)
    lines = [
        logging.LogRecord("filterd.audit", logging.INFO, "", 1, "audit head: seq %d", (n,), None)
        for n in range(50)
    ]
    assert all(limit.filter(line) for line in lines)
