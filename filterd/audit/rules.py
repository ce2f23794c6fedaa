"""What the records of an intact chain must also say, in order.

The hash chain proves records were not changed after the fact; these rules
catch records that were *made up* in the wrong shape (a forger who chains
correctly still has to tell a consistent story), and make explicit what a
crash or a clock step did. Pure code, one record at a time, in trail order;
``check`` returns why a record cannot follow the ones before it, or "":

- **time**: a record is at most ``CLOCK_TOLERANCE`` seconds earlier than the
  one before it, unless it is a ``clock_step`` record (the writer writes one
  whenever the wall clock stepped; see trail.py);
- **lifecycle**: ``start`` ... ``stop``. A run's records (``lists``,
  ``stats``, ``reload``, ``sync_*``) lie between a ``start`` and its
  ``stop``; a ``start`` while a run is open needs a ``recover`` record first
  (the writer writes one when the previous run ended without a ``stop``);
  a ``stop`` closes an open run only. ``rotate`` and ``clock_step`` may
  come anywhere, and so may ``recover`` (written at start-up, it closes a
  run the daemon left without a ``stop``);
- **rotation**: a ``rotate`` record is the first line of its file and names
  the file before it with that file's first and last seq (checked by the
  verifier, which knows the files: ``rotation_problem``).

A trail whose oldest files were pruned starts in an unknown state: the
lifecycle is judged from its first ``start`` or ``stop`` on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from filterd.audit.chain import CLOCK_TOLERANCE, format_time, parse_time

RUN_EVENTS: Final = frozenset({"lists", "stats", "reload", "sync_applied", "sync_rejected"})
ANYWHERE: Final = frozenset({"rotate", "clock_step"})


class Order:
    """The time and lifecycle state of one pass over a trail."""

    def __init__(self) -> None:
        self.time: datetime | None = None
        self.seq = 0
        self.running: bool | None = None
        """True inside a run, False between runs, None not known yet (pruned start)."""
        self.since = 0
        """Seq of the record that opened (``start``) or closed the current state."""

    def check(self, record: dict[str, Any]) -> str:
        seq: int = record["seq"]
        if seq == 1:
            self.running = False  # the very first record: nothing ran before it
        problem = self._time(seq, record["event"], parse_time(record["time"]))
        return self._lifecycle(seq, record["event"]) or problem

    def _time(self, seq: int, event: str, moment: datetime) -> str:
        previous, before = self.time, self.seq
        self.time, self.seq = moment, seq
        if previous is None or event == "clock_step":
            return ""
        back = (previous - moment).total_seconds()
        if back <= CLOCK_TOLERANCE:
            return ""
        return (
            f"time goes back {back:.3f} s from seq {before} ({format_time(previous)}) "
            f"to seq {seq} ({format_time(moment)}) with no clock_step record "
            "(records reordered or edited)"
        )

    def _lifecycle(self, seq: int, event: str) -> str:
        running, since = self.running, self.since
        problem = ""
        if event == "start":
            if running:
                problem = (
                    f"start, but the run started at seq {since} has no stop and no "
                    "recover record (records removed, or inserted)"
                )
            self.running, self.since = True, seq
        elif event == "stop":
            if running is False:
                problem = "stop without a start" + (
                    f" (the last run ended at seq {since})" if since else ""
                )
            self.running, self.since = False, seq
        elif event == "recover":  # written at start-up: it closes a run left open
            self.running, self.since = False, seq
        elif event in RUN_EVENTS and running is False:
            problem = (
                f"{event} record after the run that ended at seq {since}, with no start between"
                if since
                else f"{event} record before any start"
            )
        return f"seq {seq}: {problem}" if problem else ""


def rotation_problem(record: dict[str, Any], line: int, before: tuple[str, int, int] | None) -> str:
    """Why a ``rotate`` record at ``line`` of its file does not continue the
    file ``before`` (its name, first seq, last seq; None when that file was
    not walked: the first file kept), or ""."""
    seq = record["seq"]
    if line != 1:
        return f"seq {seq}: rotate record at line {line}, not at the start of a file"
    if before is None:
        return ""
    name, first, last = before
    said = (record.get("file"), record.get("first_seq"), record.get("last_seq"))
    if said != (name, first, last):
        return (
            f"seq {seq}: rotate record names {said[0]} with seq {said[1]}..{said[2]}, "
            f"but the file before is {name} with seq {first}..{last}"
        )
    return ""
