"""Judging a resolver's answer from the answer alone: blocked, resolved or error.

Pure code. The probe must work against any resolver (filterd, Unbound with
an RPZ, a vendor's appliance), so nothing here relies on filterd's own
signals. The rules, documented for operators in docs/probe.md:

- NXDOMAIN or REFUSED: *blocked*; but REFUSED with EDE 18 (Prohibited) is
  an *error*: the resolver refuses this client (an access list), whatever
  the name;
- NOERROR with an A or AAAA record (anywhere in the answer section, also at
  the end of a CNAME chain) whose address is in the sinkhole set: *blocked*;
- NOERROR with an empty answer section (NODATA, what RPZ ``CNAME *.`` and
  filterd's ``nodata`` action give): *blocked*. A name that really has no
  record of the asked type gives the same answer; the controls show whether
  the resolver resolves at all, and docs/probe.md says how to read it;
- NOERROR with any other answer: *resolved*;
- SERVFAIL, any other rcode, no answer in time, a malformed or mismatched
  reply: *error*, neither blocked nor resolved (RFC 1035 §4.1.1: SERVFAIL
  is the server's failure to answer, not a policy).

An Extended DNS Error option (RFC 8914) is read when present and reported
as evidence, never required: other resolvers may not send one. Codes 15
(Blocked), 16 (Censored) and 17 (Filtered) say the answer is a policy
decision.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from dnslib import QTYPE, DNSRecord

from filterd.wire.codes import (
    EDE_BLOCKED,
    EDE_CENSORED,
    EDE_FILTERED,
    EDE_OPTION_CODE,
    EDE_PROHIBITED,
    NOERROR,
    NXDOMAIN,
    RCODE_NAMES,
    REFUSED,
    TYPE_A,
    TYPE_AAAA,
    TYPE_OPT,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_SINKHOLES: Final[frozenset[IPAddress]] = frozenset(
    {ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::")}
)
"""The unspecified addresses: no name that resolves for real points there,
and "null" blocking (Pi-hole, AdGuard, hosts files) answers them."""

POLICY_EDE: Final = frozenset({EDE_BLOCKED, EDE_CENSORED, EDE_FILTERED})
EDE_NAMES: Final = {
    EDE_BLOCKED: "Blocked",
    EDE_CENSORED: "Censored",
    EDE_FILTERED: "Filtered",
    EDE_PROHIBITED: "Prohibited",
}
MAX_SHOWN_RECORDS: Final = 4


class Outcome(StrEnum):
    BLOCKED = "blocked"
    RESOLVED = "resolved"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Ede:
    """One Extended DNS Error option (RFC 8914 §2): info-code and extra text."""

    code: int
    text: str = ""

    def describe(self) -> str:
        name = EDE_NAMES.get(self.code)
        label = f"EDE {self.code}" + (f" ({name})" if name else "")
        return f"{label}: {self.text}" if self.text else label


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the resolver answered, and what that means."""

    outcome: Outcome
    how: str
    """``nxdomain``, ``refused``, ``sinkhole``, ``nodata``, ``answer``, or for an
    error ``servfail``, ``timeout``, ``unreachable``, ``malformed``, an rcode name…"""
    rcode: str | None = None
    records: tuple[str, ...] = ()
    """Answer-section records as ``TYPE DATA``."""
    ede: tuple[Ede, ...] = ()
    transport: str = "udp"

    @property
    def policy_ede(self) -> bool:
        return any(option.code in POLICY_EDE for option in self.ede)

    def describe(self) -> str:
        """One line for a person: what came back."""
        if self.rcode is None:
            return {
                "timeout": "no answer (timed out, after one retry)",
                "deadline": "not asked: the run's time limit was reached",
                "unreachable": "no answer (ICMP unreachable: nothing listening)",
                "tcp": "truncated over UDP, and no answer over TCP",
            }.get(self.how, f"no usable answer ({self.how})")
        parts = [self.rcode]
        if self.records:
            shown = ", ".join(self.records[:MAX_SHOWN_RECORDS])
            more = len(self.records) - MAX_SHOWN_RECORDS
            parts.append(shown + (f" (+{more} more)" if more > 0 else ""))
        elif self.rcode == "NOERROR":
            parts.append("no records (NODATA)")
        parts.extend(option.describe() for option in self.ede)
        if self.transport != "udp":
            parts.append(f"over {self.transport.upper()}")
        return "; ".join(parts)


def failed(reason: str) -> Verdict:
    """The verdict for a query that got no usable answer."""
    return Verdict(Outcome.ERROR, reason)


def _record_text(record: Any) -> str:
    rtype = QTYPE.get(record.rtype)
    return f"{rtype if isinstance(rtype, str) else f'TYPE{record.rtype}'} {record.rdata}"


def _address(record: Any) -> IPAddress | None:
    if record.rtype not in (TYPE_A, TYPE_AAAA):
        return None
    try:
        return ipaddress.ip_address(str(record.rdata))
    except ValueError:
        return None


def extended_errors(message: Any) -> tuple[Ede, ...]:
    """Every EDE option in the OPT record of a parsed message (RFC 8914 §2)."""
    found = []
    for record in message.ar:
        if record.rtype != TYPE_OPT:
            continue
        for option in record.rdata:
            data = bytes(option.data)
            if option.code == EDE_OPTION_CODE and len(data) >= 2:
                text = data[2:].decode("utf-8", "replace").rstrip("\x00")
                found.append(Ede(int.from_bytes(data[:2], "big"), text))
    return tuple(found)


def classify(message: bytes, sinkholes: frozenset[IPAddress], transport: str = "udp") -> Verdict:
    """Judge one reply (already matched to its question by the client)."""
    try:
        parsed = DNSRecord.parse(message)
    except Exception:  # dnslib raises more than DNSError on bad input
        return Verdict(Outcome.ERROR, "malformed", transport=transport)
    rcode = int(parsed.header.rcode)
    for record in parsed.ar:
        if record.rtype == TYPE_OPT:  # the upper 8 bits of the rcode (RFC 6891 §6.1.3)
            rcode |= (int(record.ttl) >> 24) << 4
    name = RCODE_NAMES.get(rcode, f"RCODE{rcode}")
    records = tuple(_record_text(record) for record in parsed.rr)
    ede = extended_errors(parsed)
    if rcode == REFUSED and any(option.code == EDE_PROHIBITED for option in ede):
        # RFC 8914 §4.19: the *client* is refused (an ACL), which says nothing about the name.
        outcome, how = Outcome.ERROR, "prohibited"
    elif rcode in (NXDOMAIN, REFUSED):
        outcome, how = Outcome.BLOCKED, name.lower()
    elif rcode != NOERROR:
        outcome, how = Outcome.ERROR, name.lower()
    elif any(_address(record) in sinkholes for record in parsed.rr):
        outcome, how = Outcome.BLOCKED, "sinkhole"
    elif not parsed.rr:
        outcome, how = Outcome.BLOCKED, "nodata"
    else:
        outcome, how = Outcome.RESOLVED, "answer"
    return Verdict(outcome, how, name, records, ede, transport)
