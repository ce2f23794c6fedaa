"""Which version of each list was enforced when: exact intervals, and the gaps.

The report (report.py) tells this room each time a list stops being enforced
at a version (a ``lists`` record names another version or drops the list,
or the run ends): ``close(name, since, until)``. Intervals are clipped to
the report's window and kept as they are, never widened to a first-seen /
last-seen span: a version enforced 19:51-19:55 and again 20:00-20:02 (the
node was down in between, or ten other versions came and went) is two
intervals, and the time between them is a gap. That lets an authority ask
"which version was enforced at 19:57?" and get "none: not enforced".

Pure code over datetimes; JSON-ready output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from filterd.audit.chain import format_time


@dataclass(slots=True)
class Enforced:
    """A list enforced at one version since a moment (open interval)."""

    version: str
    sha256: str | None
    mandatory: bool
    since: datetime


@dataclass(slots=True)
class _Version:
    name: str
    version: str
    sha256: str | None
    mandatory: bool
    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)


class Enforcement:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.end = end
        self._versions: dict[tuple[str, str], _Version] = {}

    def close(self, name: str, enforced: Enforced, until: datetime) -> None:
        first, last = max(enforced.since, self.start), min(until, self.end)
        if last <= first:
            return  # not enforced within the window
        key = (name, enforced.version)
        seen = self._versions.get(key)
        if seen is None:
            seen = self._versions[key] = _Version(
                name, enforced.version, enforced.sha256, enforced.mandatory
            )
        if seen.sha256 is None:
            seen.sha256 = enforced.sha256
        if seen.intervals and seen.intervals[-1][1] == first:
            seen.intervals[-1] = (seen.intervals[-1][0], last)  # contiguous: one interval
        else:
            seen.intervals.append((first, last))

    def report(self) -> list[dict[str, Any]]:
        """Per list (by name): seconds enforced, each version with its intervals,
        and the gaps between the first and the last moment it was enforced."""
        by_list: dict[str, list[_Version]] = {}
        for version in self._versions.values():
            by_list.setdefault(version.name, []).append(version)
        return [self._list(name, by_list[name]) for name in sorted(by_list)]

    def _list(self, name: str, versions: list[_Version]) -> dict[str, Any]:
        versions.sort(key=lambda v: v.intervals[0][0])
        spans = sorted((a, b) for v in versions for a, b in v.intervals)
        total = sum((b - a).total_seconds() for a, b in spans)
        gaps = [
            {
                "from": format_time(before[1]),
                "to": format_time(after[0]),
                "seconds": round((after[0] - before[1]).total_seconds(), 3),
            }
            for before, after in pairwise(spans)
            if after[0] > before[1]
        ]
        return {
            "list": name,
            "mandatory": any(v.mandatory for v in versions),
            "seconds_enforced": round(total, 3),
            "hours_enforced": round(total / 3600, 3),
            "from": format_time(spans[0][0]),
            "to": format_time(spans[-1][1]),
            "versions": [_version(v) for v in versions],
            "gaps": gaps,
        }


def _version(version: _Version) -> dict[str, Any]:
    seconds = sum((b - a).total_seconds() for a, b in version.intervals)
    return {
        "version": version.version,
        "sha256": version.sha256,
        "seconds": round(seconds, 3),
        "hours": round(seconds / 3600, 3),
        "intervals": [
            {
                "from": format_time(a),
                "to": format_time(b),
                "seconds": round((b - a).total_seconds(), 3),
            }
            for a, b in version.intervals
        ],
    }
