"""Guard: who may query at all (never an open resolver).

The access list is checked for every query, so the decision per client
address is memoised in a bounded dict: a hit costs one dict lookup, a new
address one ``ipaddress`` parse. The memo is bounded (a scan over many
spoofed sources cannot grow memory without bound): when full, its newest
1/64 is dropped (``filterd.pipeline.memo.make_room``, no pause).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from filterd.pipeline.memo import make_room

MEMO_LIMIT: Final = 65536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Guard:
    __slots__ = ("_memo", "_v4", "_v6")

    def __init__(self, allow: Iterable[Network]) -> None:
        networks = list(allow)
        self._v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
        self._v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
        self._memo: dict[bytes, bool] = {}

    @property
    def memo(self) -> dict[bytes, bool]:
        """Address -> allowed, for the addresses seen lately (bounded, room
        made when full). The pipeline's repeat path and the rate limit read
        it before calling ``allows``: a dict lookup instead of a call."""
        return self._memo

    def allows(self, address: bytes) -> bool:
        """Is the packed IPv4 or IPv6 ``address`` allowed to query?"""
        allowed = self._memo.get(address)
        if allowed is None:
            allowed = self._classify(address)
            if len(self._memo) >= MEMO_LIMIT:
                make_room(self._memo)
            self._memo[address] = allowed
        return allowed

    def _classify(self, address: bytes) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv4Address):
            return any(ip in network for network in self._v4)
        return any(ip in network for network in self._v6)
