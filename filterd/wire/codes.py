"""Numeric DNS codes used across filterd (RFC 1035, 2136, 6891, 8914).

Plain ints rather than enums: they are compared and packed on the hot path,
where an enum member lookup costs more than the comparison itself.
"""

from __future__ import annotations

from typing import Final

# RCODEs (RFC 1035 §4.1.1, RFC 6891 §9 for the extended BADVERS).
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16

RCODE_NAMES: Final = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
    BADVERS: "BADVERS",
}

# RR types used by filterd itself.
TYPE_A: Final = 1
TYPE_NS: Final = 2
TYPE_CNAME: Final = 5
TYPE_SOA: Final = 6
TYPE_MX: Final = 15
TYPE_TXT: Final = 16
TYPE_AAAA: Final = 28
TYPE_SRV: Final = 33
TYPE_DNAME: Final = 39
TYPE_OPT: Final = 41
TYPE_DS: Final = 43
TYPE_RRSIG: Final = 46
TYPE_SVCB: Final = 64
TYPE_HTTPS: Final = 65
TYPE_IXFR: Final = 251
TYPE_AXFR: Final = 252
TYPE_ANY: Final = 255

CLASS_IN: Final = 1

# Extended DNS Error info-codes (RFC 8914 §4).
EDE_OTHER: Final = 0
EDE_STALE_ANSWER: Final = 3
EDE_BLOCKED: Final = 15
EDE_CENSORED: Final = 16
EDE_FILTERED: Final = 17
EDE_PROHIBITED: Final = 18
EDE_NOT_READY: Final = 14
EDE_NO_REACHABLE_AUTHORITY: Final = 22
EDE_OPTION_CODE: Final = 15

# Header flag bits (RFC 1035 §4.1.1), as seen in the 16-bit flags word.
FLAG_QR: Final = 0x8000
FLAG_AA: Final = 0x0400
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
FLAG_RA: Final = 0x0080
FLAG_AD: Final = 0x0020
FLAG_CD: Final = 0x0010

# Smallest UDP payload every DNS client must accept (RFC 1035 §4.2.1).
CLASSIC_UDP_SIZE: Final = 512
