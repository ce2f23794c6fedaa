"""Client prefixes: the unit of fairness and rate limiting.

Limits that protect the resolver from one source (TCP connections, upstream
queries in flight, response rate) count per client *prefix*, not per
address: one subscriber's devices, or one spoofer, share a prefix, and a
per-address limit is defeated by walking a /64. The prefixes are those of
BIND's response rate limiting: /24 for IPv4 and /56 for IPv6 (a typical
subscriber delegation). Pure code on packed addresses (4 or 16 bytes).
"""

from __future__ import annotations

from typing import Final

V4_PREFIX_BYTES: Final = 3  # /24
V6_PREFIX_BYTES: Final = 7  # /56
_MAPPED: Final = bytes(10) + b"\xff\xff"


def prefix_of(address: bytes) -> bytes:
    """The client's prefix as bytes (IPv4-mapped IPv6 counts as IPv4)."""
    if len(address) == 16 and address[:12] == _MAPPED:
        address = address[12:]
    if len(address) == 4:
        return address[:V4_PREFIX_BYTES]
    return address[:V6_PREFIX_BYTES]
