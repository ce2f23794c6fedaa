"""What the block page asks of the rest of filterd: why a name is blocked.

The supervisor passes in an ``Explain`` callable; the page calls it with the
visited name (canonical ASCII, ``wire.names.normalise``) and the visitor's
address, and shows what comes back. The address is there because the answer
depends on who asks once networks have profiles (a school's range filters
more than a household's): the callable may use it to find the client's
group, and must not keep or log it. ``None`` means "no reason to show": the
page then says only that the network's policy blocks the site.

A reason carries labels, never list content: the category (``gambling``),
who decided (``BlockedBy``) and a short label naming that list or profile,
the same facts the blocked DNS answer's Extended DNS Error text gives
(RFC 8914: ``list=... category=...``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedBy(StrEnum):
    """On whose authority a name is blocked."""

    STATE = "state"
    """A mandatory list a state authority requires (the national or a
    provincial list): the page answers 451 (RFC 7725)."""
    OPERATOR = "operator"
    """The operator's own list."""
    PROFILE = "profile"
    """A filtering profile the network asked for (a school's, a family's)."""


@dataclass(frozen=True, slots=True)
class BlockReason:
    category: str
    """The category label of the deciding entry (``gambling``); the page
    translates the labels it knows (``texts.CATEGORIES``) and shows others
    as they are."""
    blocked_by: BlockedBy
    label: str = ""
    """Names the list or profile for people ("Danh sách quốc gia",
    "school-primary"); "" shows only ``blocked_by``'s wording."""


class Explain(Protocol):
    """Why ``name`` is blocked for ``client``, or None if there is nothing to show."""

    def __call__(self, name: str, client: IPAddress) -> BlockReason | None: ...
