"""Worker restart backoff: grows while a worker keeps dying, starts over once
it has served for a stable period (the defect: after five crashes, every
later crash cost 30 s of outage, even after hours of service)."""

from __future__ import annotations

from filterd.supervisor.workers import RESTART_BACKOFF, STABLE_AFTER, RestartBackoff


def test_backoff_grows_while_a_worker_keeps_dying() -> None:
    backoff = RestartBackoff()
    now = 1000.0
    delays = []
    for _ in range(8):
        backoff.started(now)
        now += 1.0  # dies a second after each start
        delays.append(backoff.next_delay(now))
        now += delays[-1]
    assert delays == [*RESTART_BACKOFF, RESTART_BACKOFF[-1], RESTART_BACKOFF[-1]]


def test_backoff_starts_over_after_a_stable_period() -> None:
    backoff = RestartBackoff()
    now = 1000.0
    for _ in range(6):
        backoff.started(now)
        now += 1.0
        now += backoff.next_delay(now)
    backoff.started(now)
    now += STABLE_AFTER + 3600  # hours of service
    assert backoff.next_delay(now) == RESTART_BACKOFF[0]


def test_a_failed_start_does_not_count_as_stable_service() -> None:
    backoff = RestartBackoff()
    backoff.started(0.0)
    assert backoff.next_delay(1.0) == RESTART_BACKOFF[0]
    # The restart failed before the process started: no started() call.
    assert backoff.next_delay(STABLE_AFTER * 10) == RESTART_BACKOFF[1]
