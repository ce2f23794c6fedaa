"""Safe search by DNS: search and video sites answered with their restricted hosts.

Each site publishes a host name that serves only its filtered service; a
resolver that answers the site's own names with a CNAME to that host
enforces the filter for every device on the network, signed in or not.
filterd writes the CNAME and resolves the target upstream
(``filterd.wire.rewrite``, docs/profiles.md). The names, and where each is
documented:

- Google Search: ``forcesafesearch.google.com`` for ``www.google.com`` and
  the country domains (Google's help for network administrators, "Block
  adult content at your school with SafeSearch",
  support.google.com/websearch/answer/186669; every Google domain is listed
  at www.google.com/supported_domains: the common ones in this region are
  below, and a country domain left out is simply not rewritten);
- YouTube Restricted Mode: ``restrict.youtube.com`` (strict) or
  ``restrictmoderate.youtube.com`` (moderate) for ``www.youtube.com``,
  ``m.youtube.com``, ``youtubei.googleapis.com``,
  ``youtube.googleapis.com`` and ``www.youtube-nocookie.com`` (Google
  Workspace help, "Restrict YouTube content on your network",
  support.google.com/a/answer/6214622);
- Bing: ``strict.bing.com`` for ``www.bing.com`` and ``bing.com`` (as
  used by Cisco Umbrella's and CleanBrowsing's documented safe search;
  Microsoft's own page for it could not be checked here);
- DuckDuckGo: ``safe.duckduckgo.com`` for ``duckduckgo.com`` and
  ``www.duckduckgo.com`` (DuckDuckGo's own help documents only its URL
  parameter ``kp=1``; the host is the one filtering resolvers use).
"""

from __future__ import annotations

from typing import Final

GOOGLE_SAFE: Final = b"forcesafesearch.google.com"
GOOGLE_DOMAINS: Final = (
    "google.com", "google.com.vn", "google.com.kh", "google.la", "google.co.th",
    "google.com.sg", "google.com.my", "google.co.id", "google.com.ph", "google.com.hk",
    "google.com.tw", "google.co.jp", "google.co.kr", "google.cn", "google.co.in",
    "google.com.au", "google.co.nz", "google.co.uk", "google.fr", "google.de",
    "google.ru", "google.ca", "google.com.br", "google.com.mx", "google.es", "google.it",
)  # fmt: skip
YOUTUBE_NAMES: Final = (
    "www.youtube.com", "m.youtube.com", "youtubei.googleapis.com", "youtube.googleapis.com",
    "www.youtube-nocookie.com",
)  # fmt: skip
YOUTUBE_TARGETS: Final = {
    "strict": b"restrict.youtube.com",
    "moderate": b"restrictmoderate.youtube.com",
}
BING_SAFE: Final = b"strict.bing.com"
BING_NAMES: Final = ("bing.com", "www.bing.com")
DUCKDUCKGO_SAFE: Final = b"safe.duckduckgo.com"
DUCKDUCKGO_NAMES: Final = ("duckduckgo.com", "www.duckduckgo.com")


def rewrites(safe_search: bool, youtube: str) -> dict[bytes, bytes]:
    """Canonical name -> the name it is answered as, for one profile."""
    table: dict[bytes, bytes] = {}
    if safe_search:
        for domain in GOOGLE_DOMAINS:
            table[domain.encode()] = GOOGLE_SAFE
            table[b"www." + domain.encode()] = GOOGLE_SAFE
        table.update(dict.fromkeys((n.encode() for n in BING_NAMES), BING_SAFE))
        table.update(dict.fromkeys((n.encode() for n in DUCKDUCKGO_NAMES), DUCKDUCKGO_SAFE))
    target = YOUTUBE_TARGETS.get(youtube)
    if target is not None:
        table.update(dict.fromkeys((n.encode() for n in YOUTUBE_NAMES), target))
    return table
