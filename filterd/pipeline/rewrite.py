"""Safe-search rewrites on the query path: the target's question, its answer spliced back.

A profile with safe search answers ``www.google.com`` as ``CNAME
forcesafesearch.google.com`` plus the target's records (docs/profiles.md).
The target is asked as a question of its own, built from the client's query
(same type, class, flags and OPT record): its answer comes from the cache
or from upstream like any other, coalesced with every other client asking
for it, and CNAME targets inside it are checked by policy. Its bytes are
then spliced under the client's question (``filterd.wire.rewrite``).

Splicing decodes and re-encodes the target's records (tens of
microseconds), so a finished answer is memoised per question as the client
wrote it (flags, case, OPT record and transport included), for as long as
it is made from the same cached target answer at the same age in seconds:
a popular search engine then costs a dict lookup and a new ID per query,
and its TTLs still count down.

When the target cannot be resolved (every upstream failing, a refusal, an
answer that does not decode) the client gets SERVFAIL with EDE 23 (Network
Error), never the unrewritten name: the point of the rewrite is that the
unfiltered service is unreachable.
"""

from __future__ import annotations

from typing import Final

from filterd.errors import QueryError
from filterd.pipeline.cache import WIRE, Answer, serve, stored_at
from filterd.pipeline.forward import Reply
from filterd.pipeline.policy import Rewrite
from filterd.pipeline.untracked import store
from filterd.wire.codes import SERVFAIL
from filterd.wire.query import Query, parse_query, validate
from filterd.wire.rewrite import splice, target_query
from filterd.wire.synth import ede_option, query_error, truncated

EDE_NETWORK_ERROR: Final = 23  # RFC 8914 §4.24
SPLICED_LIMIT: Final = 4096
"""Finished answers memoised per rewrite target (cleared when full)."""
_FAILED_EDE: Final = ede_option(EDE_NETWORK_ERROR, "safe search target could not be resolved")


def question_for(query: Query, rewrite: Rewrite) -> Query | None:
    """The client's query asking for the rewrite's target instead."""
    try:
        target = parse_query(target_query(query.data, query.name_end, rewrite.target_wire))
        if target is not None:
            validate(target)
    except QueryError:
        return None
    return target


def target_key(query: Query, rewrite: Rewrite) -> bytes:
    """The cache key of the target's question: its name, then the client's
    type, class and variant (``Query.key`` without parsing a new query)."""
    return rewrite.target_wire + query.key[query.name_end - 12 :]


def from_cache(
    query: Query, rewrite: Rewrite, answer: Answer, now: float, max_udp_size: int, udp: bool
) -> bytes:
    """The client's answer from the target's cached ``answer``, memoised."""
    data = query.data
    age = int(now - stored_at(answer))
    key = (b"u" if udp else b"t") + data[2:4] + data[12:]
    found = rewrite.spliced.get(key)
    if found is not None and found[0] is answer[WIRE] and found[1] == age:
        return data[:2] + found[2]
    target = question_for(query, rewrite)
    if target is None:
        return rewritten(query, rewrite, b"", max_udp_size, udp)
    out = rewritten(query, rewrite, serve(answer, target), max_udp_size, udp)
    memo = rewrite.spliced
    if len(memo) >= SPLICED_LIMIT:
        memo.clear()
    store(memo, key, (answer[WIRE], age, out[2:]))
    return out


def rewritten(query: Query, rewrite: Rewrite, answer: bytes, max_udp_size: int, udp: bool) -> bytes:
    """The client's answer from the target's (``answer``), or SERVFAIL."""
    out = splice(query.data, rewrite.target, answer, rewrite.ttl)
    if out is None:
        return query_error(query, SERVFAIL, max_udp_size, _FAILED_EDE)
    if udp and len(out) > query.response_limit(max_udp_size):
        return truncated(query, out, max_udp_size)
    return out


class RewriteReply:
    """Where the target's answer goes once upstream answers: spliced, then
    to the client's own reply (its address, transport and read time)."""

    __slots__ = ("_max_udp_size", "_query", "_reply", "_rewrite")

    def __init__(self, query: Query, rewrite: Rewrite, reply: Reply, max_udp_size: int) -> None:
        self._query = query
        self._rewrite = rewrite
        self._reply = reply
        self._max_udp_size = max_udp_size

    @property
    def udp(self) -> bool:
        return self._reply.udp

    @property
    def received(self) -> float:
        return self._reply.received

    @property
    def address(self) -> bytes:
        return self._reply.address

    def send(self, answer: bytes) -> None:
        reply = self._reply
        out = rewritten(self._query, self._rewrite, answer, self._max_udp_size, reply.udp)
        reply.send(out)
