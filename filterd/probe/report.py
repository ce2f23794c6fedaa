"""The probe's findings: compliance, failures, errors, controls, as text or JSON.

Pure code. Definitions (docs/probe.md):

- *compliance* is the share of probed names that were blocked:
  ``blocked / probed``. Errors (SERVFAIL, timeouts) are neither blocked nor
  resolved; they count against compliance, and are listed apart from the
  names that resolved, so that an outage is not mistaken for a leak;
- a *control* passes when it resolves (NOERROR with at least one record,
  none pointing at a sinkhole); with no controls given the report says so
  instead of inventing any;
- the run *passes* when compliance is at least the required percentage and
  every control resolved.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from filterd.probe.sample import ListLine, Target
from filterd.probe.verdict import Ede, Outcome, Verdict


@dataclass(frozen=True, slots=True)
class Check:
    """One name asked, what came back, and where its rule is written."""

    target: Target
    verdict: Verdict
    line: ListLine | None = None

    @property
    def passed(self) -> bool:
        expected = Outcome.RESOLVED if self.target.rule is None else Outcome.BLOCKED
        return self.verdict.outcome is expected

    def to_json(self) -> dict[str, Any]:
        verdict = self.verdict
        rule = self.target.rule
        return {
            "name": self.target.qname,
            "outcome": verdict.outcome.value,
            "how": verdict.how,
            "rcode": verdict.rcode,
            "records": list(verdict.records),
            "ede": [{"code": option.code, "text": option.text} for option in verdict.ede],
            "transport": verdict.transport,
            "made_up": self.target.made_up,
            "rule": None
            if rule is None
            else {"name": rule.name.decode(), "kind": rule.kind, "text": rule.describe()},
            "line": None
            if self.line is None
            else {"number": self.line.number, "text": self.line.text},
        }


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What was probed, and how: enough to repeat the run."""

    resolver: str
    list_path: str
    list_format: str
    block_rules: int
    requested: int
    sampled_rules: int
    exempted: int
    seed: int
    qtype: str
    sinkholes: tuple[str, ...]
    min_compliance: float


def percent(part: int, whole: int) -> float:
    """``part/whole`` in percent, rounded *down* to 0.1: 199/200 of a
    required 100 % must never print as 100.0 %."""
    if whole == 0:
        return 0.0
    return math.floor(part * 1000 / whole) / 10


@dataclass(frozen=True, slots=True)
class Report:
    run: RunInfo
    checks: tuple[Check, ...]
    controls: tuple[Check, ...]

    def _count(self, outcome: Outcome) -> int:
        return sum(check.verdict.outcome is outcome for check in self.checks)

    @property
    def blocked(self) -> int:
        return self._count(Outcome.BLOCKED)

    @property
    def errors(self) -> int:
        return self._count(Outcome.ERROR)

    @property
    def leaks(self) -> tuple[Check, ...]:
        """Names that must be blocked and resolved instead: the failures."""
        leaks = (c for c in self.checks if c.verdict.outcome is Outcome.RESOLVED)
        return tuple(sorted(leaks, key=lambda check: check.target.qname))

    @property
    def controls_resolved(self) -> int:
        return sum(check.passed for check in self.controls)

    @property
    def compliance(self) -> float:
        return percent(self.blocked, len(self.checks))

    @property
    def passed(self) -> bool:
        # Exact arithmetic: compliance shown rounded must not decide the status.
        enough = self.blocked * 100 >= self.run.min_compliance * len(self.checks)
        return enough and self.controls_resolved == len(self.controls)

    def summary(self) -> str:
        line = (
            f"compliance: {self.compliance:.1f}% ({self.blocked}/{len(self.checks)} blocked, "
            f"{self.errors} errors), "
        )
        if not self.controls:
            return line + "no controls"
        return line + f"controls: {self.controls_resolved}/{len(self.controls)} resolved"

    def notes(self) -> list[str]:
        """What to weigh before trusting the figure: blocks that rest on answers an
        unfiltered resolver could give as well, and missing controls."""
        blocked = [c for c in self.checks if c.verdict.outcome is Outcome.BLOCKED]
        made_up = sum(c.target.made_up and not c.verdict.policy_ede for c in blocked)
        nodata = sum(
            c.verdict.how == "nodata" and not c.target.made_up and not c.verdict.policy_ede
            for c in blocked
        )
        notes = []
        if made_up:
            notes.append(
                f"{made_up} made-up names counted as blocked came without an Extended DNS "
                "Error: a resolver that does not filter gives the same answer for a name "
                "that does not exist"
            )
        if nodata:
            notes.append(
                f"{nodata} names counted as blocked by an empty NOERROR answer (NODATA) "
                "came without an Extended DNS Error: a name with no record of that type "
                "gives the same answer"
            )
        if not self.controls:
            notes.append(
                "no controls: nothing shows that this resolver resolves names at all "
                "(give --control NAME or --controls FILE)"
            )
        return notes

    def evidence(self) -> str:
        """How the blocked names were answered, e.g. ``190 nxdomain, 7 sinkhole``."""
        blocked = [c.verdict for c in self.checks if c.verdict.outcome is Outcome.BLOCKED]
        hows = Counter(v.how for v in blocked)
        # By code only: the extra text differs per list, version and category.
        codes = Counter(Ede(option.code).describe() for v in blocked for option in v.ede)
        text = ", ".join(f"{count} {how}" for how, count in sorted(hows.items()))
        if codes:
            shown = ", ".join(f"{ede} on {count}" for ede, count in sorted(codes.items()))
            text += f"; extended errors: {shown}"
        elif blocked:
            text += "; no Extended DNS Error"
        return text

    # ------------------------------------------------------------- rendering

    def to_text(self) -> str:
        run = self.run
        names = len(self.checks)
        lines = [
            f"probe: {run.resolver}, {run.qtype} queries, {run.sampled_rules} of "
            f"{run.block_rules} block rules from {run.list_path} ({run.list_format}), "
            f"{names} names, seed {run.seed}",
            self.summary(),
        ]
        if self.blocked:
            lines.append(f"blocked: {self.evidence()}")
        if run.exempted:
            lines.append(f"passed over: {run.exempted} drawn rules that an allow rule exempts")
        _section(lines, "not blocked", self.leaks)
        errors = [c for c in self.checks if c.verdict.outcome is Outcome.ERROR]
        _section(lines, "errors", sorted(errors, key=lambda check: check.target.qname))
        _section(lines, "controls not resolved", [c for c in self.controls if not c.passed])
        lines.extend(f"note: {note}" for note in self.notes())
        lines.append(f"result: {'PASS' if self.passed else 'FAIL'} ({self._why()})")
        return "\n".join(lines) + "\n"

    def _why(self) -> str:
        required = f"{self.run.min_compliance:g}%"
        if self.passed:
            return f"compliance at least {required}" + (
                ", every control resolved" if self.controls else ""
            )
        reasons = []
        if self.blocked * 100 < self.run.min_compliance * len(self.checks):
            reasons.append(f"compliance below the required {required}")
        unresolved = len(self.controls) - self.controls_resolved
        if unresolved:
            reasons.append(f"{unresolved} control{'s' if unresolved > 1 else ''} not resolved")
        return ", ".join(reasons)

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "resolver": run.resolver,
            "list": {"path": run.list_path, "format": run.list_format},
            "block_rules": run.block_rules,
            "seed": run.seed,
            "sample": run.requested,
            "sampled_rules": run.sampled_rules,
            "exempted": run.exempted,
            "qtype": run.qtype,
            "sinkholes": list(run.sinkholes),
            "compliance": self.compliance,
            "probed": len(self.checks),
            "blocked": self.blocked,
            "not_blocked": len(self.leaks),
            "errors": self.errors,
            "controls_given": len(self.controls),
            "controls_resolved": self.controls_resolved,
            "min_compliance": run.min_compliance,
            "passed": self.passed,
            "failures": [check.target.qname for check in self.leaks],
            "notes": self.notes(),
            "checks": [check.to_json() for check in self.checks],
            "controls": [check.to_json() for check in self.controls],
        }


def _section(lines: list[str], title: str, checks: list[Check] | tuple[Check, ...]) -> None:
    if not checks:
        return
    lines.append(f"{title} ({len(checks)}):")
    for check in checks:
        lines.append(f"  {check.target.qname}: {check.verdict.describe()}")
        rule = check.target.rule
        if rule is not None:
            where = f"line {check.line.number}: {check.line.text}" if check.line else "line unknown"
            lines.append(f"    rule: {rule.describe()} ({where})")
