"""The query pipeline, assembled in one place.

Every query, over UDP or TCP, goes through the same stages in this order:

1. guard   - access list: refuse (or drop) clients outside it, before any
             parsing, so an open-resolver probe costs one dict lookup;
2. decode  - the question sliced from the wire bytes (``parse_query``);
             malformed packets become FORMERR/NOTIMP/BADVERS or are dropped;
3. policy  - the client's group (its address, or a trusted forwarder's
             client subnet), then its profile's verdict: above the cache,
             so a list swap or a schedule transition applies on the very
             next query and the cache holds upstream truth only; a
             safe-search rewrite asks the target's question instead
             (``filterd.pipeline.rewrite``);
4. cache   - upstream answers with decremented TTLs; CNAME targets inside a
             cached answer are re-checked by policy (a blocked CDN alias stays
             blocked however it is reached);
5. forward - cache misses go upstream (coalesced, bounded); their answers
             come back through ``_resume`` and take the same policy re-check.

Type ANY is answered at stage 4 with RFC 8482's minimal answer (one HINFO
record) instead of being forwarded: a full ANY answer is the classic
amplification payload (45 bytes in, over 1,200 out). Every UDP answer,
whatever the stage, then passes the response rate limit
(``filterd.pipeline.ratelimit``: identical answers to one client prefix),
which may drop it or send its truncated stand-in; TCP answers never do.

Stages 1-4 answer synchronously inside the listener's read callback: no
task, no await, no dnslib object, no log line. Only stage 5 is
asynchronous. ``Pipeline.handle`` returns the bytes to send now, or
``None`` when there is nothing to send now (dropped, or answered later
through a ``Reply``).

A message asked again skips stages 2-4 while its answer would be the
same. For a group whose profile has no schedule (every group of the
default configuration, which has one), the answer to a given message, ID
aside, is fixed by the policy snapshot and the cached answer's rendering,
so ``handle`` keeps the messages it answered from the cache in the common
form (RD set, lower-case question, at most 512 octets), and those it
answered with a block when the question was asked before (any form, at
most 512 octets: a block's rendering is a function of the message and the
block alone; a listed name asked once stays out), in the group's *served*
tables (``ClientGroup.served``, ``served_blocks``), keyed by the message
after its ID, and answers a repeat with the client's ID and the same
bytes: one dict lookup instead of decoding, the verdict memo and the cache
or the rendering. A block never ages, so its entry lasts as long as the
snapshot. The client's group is found as stage 3 finds it (the one group,
or the address memo; a trusted forwarder's clients, whose group the query
names, take the full path). Every repeat is counted as the full path
counts it (a cache hit, or a block: its list's counter, its group's, the
top blocked names). A cached answer's bytes are good until its next
re-rendering (``due``: the next whole second of age, or its expiry). A
repeat after that takes the cache's live rendering of the same key (one
lookup and the TTL copy, ``_renew``), the verdict being the snapshot's:
only when the cache no longer holds the key, the answer expired, its CNAME
targets are not the ones checked when the entry was made (a new upstream
answer), or it no longer fits 512 octets does the full path run. A new
policy snapshot starts with empty tables. With a popularity mix most
queries are repeats within the second (about two in three in
``bench/run``'s mix at 100k qps), and most of the rest are repeats of an
earlier second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

from filterd.config import Config
from filterd.errors import QueryError
from filterd.pipeline.cache import (
    CNAMES,
    DUE,
    WIRE,
    Answer,
    ResponseCache,
    serve,
    serve_stale,
)
from filterd.pipeline.forward import Forwarder, Forwarding, Reply
from filterd.pipeline.guard import Guard
from filterd.pipeline.memo import make_room
from filterd.pipeline.policy import (
    ClientGroup,
    CountedBlock,
    Policy,
    Rewrite,
    Served,
    ServedBlock,
)
from filterd.pipeline.ratelimit import ResponseRateLimit
from filterd.pipeline.rewrite import (
    RewriteReply,
    from_cache,
    question_for,
    rewritten,
    target_key,
)
from filterd.pipeline.tally import (
    NO_QTYPE,
    OTHER_QTYPE,
    QTYPE_SLOT,
    BlockedNames,
    Counters,
    Outcomes,
)
from filterd.pipeline.untracked import store
from filterd.upstream.exchange import Reactor, UpstreamIO
from filterd.upstream.pool import UpstreamPool
from filterd.wire.codes import (
    CLASS_IN,
    CLASSIC_UDP_SIZE,
    EDE_NO_REACHABLE_AUTHORITY,
    EDE_PROHIBITED,
    EDE_STALE_ANSWER,
    FORMERR,
    REFUSED,
    SERVFAIL,
    TYPE_ANY,
    TYPE_AXFR,
    TYPE_IXFR,
    TYPE_OPT,
)
from filterd.wire.query import BadVersion, Query, parse_query, validate
from filterd.wire.synth import (
    ede_option,
    error_response,
    minimal_any,
    query_error,
    truncated,
)

Client = TypeVar("Client")
Client_contra = TypeVar("Client_contra", contravariant=True)


class ReplySource(Protocol[Client_contra]):
    """A listener (UDP) or connection (TCP) that can make a ``Reply`` for one of
    its clients, found again by what the listener passed to ``handle``: the
    UDP listener the datagram's index in its read batch (``int``: the
    client's address is copied out only on a cache miss), a TCP connection
    nothing (``None``: the connection is the client)."""

    def reply(self, client: Client_contra, received: float) -> Reply: ...


_REFUSED_EDE: Final = ede_option(EDE_PROHIBITED, "client not allowed")
_CLASS_EDE: Final = ede_option(EDE_PROHIBITED, "only class IN is served")
_XFR_EDE: Final = ede_option(EDE_PROHIBITED, "zone transfers are not served")
_STALE_EDE: Final = ede_option(EDE_STALE_ANSWER, "upstream resolvers unreachable")
_UNSERVED_TYPES: Final = frozenset({TYPE_AXFR, TYPE_IXFR, TYPE_OPT})
_NOT_REWRITTEN: Final = _UNSERVED_TYPES | {TYPE_ANY}
SERVED_LIMIT: Final = 65_536
"""Messages kept in a group's served table (room is made when full:
``make_room``). An entry is a key of about 50 bytes and a tuple, and keeps
its cache answer alive until it is renewed or dropped: about 20 MB at
most. At 100k queries/s fewer than 65,536 distinct messages are asked
twice in one second."""
SERVED_BLOCKS_LIMIT: Final = 16_384
"""Messages kept in a group's table of served blocks (room is made when
full). An entry holds its own bytes (the message, the answer, the key and
the listed name: about 430 bytes with its slot), so the table costs about
7 MB at most. Room is made by dropping the newest entries, so it keeps
the blocked questions asked twice first: the popular ones."""


class Pipeline:
    __slots__ = (
        "_allowed",
        "_cache",
        "_deny_drop",
        "_forwarder",
        "_guard",
        "_key",
        "_max_udp_size",
        "_tcp_outcomes",
        "_udp_outcomes",
        "blocked_names",
        "counters",
        "policy",
        "rrl",
    )

    def __init__(
        self,
        guard: Guard,
        policy: Policy,
        cache: ResponseCache,
        forwarder_factory: Callable[[Pipeline], Forwarding],
        max_udp_size: int,
        deny_drop: bool,
        counters: Counters,
        blocked_names: BlockedNames | None,
        rrl: ResponseRateLimit | None = None,
    ) -> None:
        """``counters`` and ``blocked_names`` (``None``: not kept) outlive the
        pipeline: a reload that rebuilds it must not reset the counts.
        ``rrl``: the UDP response rate limit (``None``: off)."""
        self._guard = guard
        self.policy = policy
        self._cache = cache
        self._max_udp_size = max_udp_size
        self._deny_drop = deny_drop
        self._forwarder = forwarder_factory(self)
        self.counters = counters
        self.blocked_names = blocked_names
        self.rrl = rrl
        self._key = b""
        """The key of the query being handled (``b""``: not decoded), for the RRL."""
        self._allowed = guard.memo
        self._udp_outcomes = counters.udp
        self._tcp_outcomes = counters.tcp

    @property
    def forwarder(self) -> Forwarding:
        return self._forwarder

    @property
    def guard(self) -> Guard:
        return self._guard

    @property
    def cache(self) -> ResponseCache:
        return self._cache

    def swap_policy(self, policy: Policy) -> None:
        """Install a new snapshot: one reference replaced, effective on the
        next query (its groups' served tables start empty: the old ones hold
        answers the old snapshot decided)."""
        self.policy = policy

    def handle(
        self,
        data: bytes,
        address: bytes,
        udp: bool,
        source: ReplySource[Client],
        client: Client,
        now: float,
    ) -> bytes | None:
        """Run one query through the pipeline (see the module docstring).

        ``source.reply(client, now)`` is called only on a cache miss, to get the
        object that sends the later answer (so a hit allocates nothing for
        it). ``address`` is the client's packed IP address (4 or 16 bytes);
        ``now`` is the listener's monotonic clock reading for the batch.
        """
        policy = self.policy
        group = policy.single or policy.by_address.get(address)
        response: bytes | None = None
        if group is not None and group.served is not None:
            asked = data[2:]
            served = group.served.get(asked)
            if served is not None:
                if self._allowed.get(address) or self._guard.allows(address):
                    # A repeat (see the module docstring): stages 2-4 gave this
                    # answer to these very bytes for this group, counted as they count.
                    answer, slot, key = served
                    if now < answer[DUE]:
                        wire = answer[WIRE]
                    else:
                        wire = self._renew(group.served, asked, served, now)
                    if wire:
                        self._key = key
                        (self._udp_outcomes if udp else self._tcp_outcomes)[slot].cached += 1
                        group.counter.queries += 1
                        self._cache.hits += 1
                        response = data[:2] + wire
            else:
                blocked = group.served_blocks.get(asked)
                if blocked is not None and (
                    self._allowed.get(address) or self._guard.allows(address)
                ):
                    response = data[:2] + self._block_again(group, blocked, udp)
        if response is None:
            response = self._respond(data, address, udp, source, client, now)
        if udp and response is not None and self.rrl is not None:
            return self.rrl.limit(address, self._key, response, now)
        return response

    def _block_again(self, group: ClientGroup, served: ServedBlock, udp: bool) -> bytes:
        """A served repeat of a blocked message: counted as ``_blocked`` counts,
        answered with the bytes it rendered (after the ID)."""
        wire, slot, key, number, name = served
        block = group.view.block(number)
        block.counter.count += 1
        group.counter.queries += 1
        group.counter.blocked += 1
        if self.blocked_names is not None:
            self.blocked_names.count_wire(name, block.counter.category)
        (self._udp_outcomes if udp else self._tcp_outcomes)[slot].blocked += 1
        self._key = key
        return wire

    def _renew(
        self, table: Served, asked: bytes, served: tuple[Answer, int, bytes], now: float
    ) -> bytes:
        """A served repeat whose answer's rendering is due: the wire bytes of
        the cache's live rendering of the same key, stored for the next
        repeats, if it is the answer stages 2-4 would give now (see the
        module docstring); else b"", and the full path decides."""
        answer = self._cache.renewed(served[2], now)
        if (
            answer is None
            or answer[CNAMES] is not served[0][CNAMES]  # a new answer: its CNAMEs unchecked
            or len(answer[WIRE]) + 2 > CLASSIC_UDP_SIZE
        ):
            return b""
        store(table, asked, (answer, served[1], served[2]))
        return answer[WIRE]

    def _respond(
        self,
        data: bytes,
        address: bytes,
        udp: bool,
        source: ReplySource[Client],
        client: Client,
        now: float,
    ) -> bytes | None:
        self._key = b""
        table = self.counters.udp if udp else self.counters.tcp
        outcomes = table[NO_QTYPE]
        # 1. guard
        if not self._guard.allows(address):
            return self._refuse(data, outcomes)
        # 2. decode
        try:
            query = parse_query(data)
        except BadVersion as bad:  # its own name: compiled, a name has one type
            outcomes.badvers += 1
            return query_error(bad.query, bad.rcode, self._max_udp_size)
        except QueryError as exc:
            return self._decode_error(data, exc, outcomes)
        if query is None:
            outcomes.dropped += 1
            return None
        slot = QTYPE_SLOT.get(query.qtype, OTHER_QTYPE)
        outcomes = table[slot]
        key = self._key = query.key
        # 3. policy: the client's group, then its profile's verdict (memoised
        # per question, so keyed like the cache)
        policy = self.policy
        group = policy.single  # no groups, no schedule: nothing to look up
        if group is None:
            if now >= policy.next_tick:  # a schedule's minute may have turned
                policy.tick_if_due(now)
            group = policy.by_address.get(address) or policy.group_of(address, query, now)
        group.counter.queries += 1
        verdict = group.memoised(key)
        decided_before = verdict is not None
        if verdict is None:
            # First decision on this key: the name must be well-formed first
            # (a memoised or cached key was validated when it was stored).
            try:
                validate(query)
            except QueryError as exc:
                return self._decode_error(data, exc, outcomes)
            key = self._key = query.key
            verdict = group.view.decide(key, query.name_end - 12)
        block, offset = verdict
        if block is not None:
            if isinstance(block, Rewrite):
                if query.qclass == CLASS_IN and query.qtype not in _NOT_REWRITTEN:
                    return self._rewrite(query, block, udp, source, client, now, outcomes, group)
            else:
                return self._blocked(
                    query, block, offset, udp, outcomes, slot, group, decided_before
                )
        # 4. cache: a cached key was validated (name, class, type) when stored
        answer = self._cache.get(key, now)
        if answer is not None:
            if answer[CNAMES]:
                blocked = self._cname_block(query, answer, outcomes, group)
                if blocked is not None:
                    return self._fit(query, blocked, udp, outcomes) if blocked else None
            outcomes.cached += 1
            out = serve(answer, query)
            if len(out) > CLASSIC_UDP_SIZE:
                return self._fit(query, out, udp, outcomes)
            served = group.served
            if served is not None and data[2] & 0x01 and query.asked_lower:
                # Served as stored (serve's common case): repeats may skip stages 2-4.
                _remember(served, data[2:], (answer, slot, key), SERVED_LIMIT)
            return out
        if query.qclass != CLASS_IN or query.qtype in _UNSERVED_TYPES:
            return self._unserved(query, outcomes)
        if query.qtype == TYPE_ANY:
            outcomes.minimal += 1  # RFC 8482: never forwarded, never amplified
            return minimal_any(query, self._max_udp_size)
        # 5. forward
        self._forwarder.forward(query, source.reply(client, now))
        return None

    # ---------------------------------------------------------------- helpers

    def _fit(self, query: Query, out: bytes, udp: bool, outcomes: Outcomes) -> bytes:
        """Apply the client's UDP size limit (RFC 6891 §7, RFC 1035 §4.2.1)."""
        if udp and len(out) > query.response_limit(self._max_udp_size):
            outcomes.truncated += 1
            return truncated(query, out, self._max_udp_size)
        return out

    def _blocked(
        self,
        query: Query,
        block: CountedBlock,
        offset: int,
        udp: bool,
        outcomes: Outcomes,
        slot: int,
        group: ClientGroup,
        decided_before: bool,
    ) -> bytes | None:
        """A block's answer, counted; kept for repeats of the message when its
        verdict was ``decided_before`` (memoised: the question was asked
        before): a blocked name asked once, common in a long tail of listed
        names, would only fill the table with its own bytes."""
        block.counter.count += 1
        group.counter.blocked += 1
        name = query.key[offset : query.name_end - 12]
        if self.blocked_names is not None:
            self.blocked_names.count_wire(name, block.counter.category)
        if block.drops:
            outcomes.dropped += 1
            return None
        outcomes.blocked += 1
        out = block.render(query, offset)
        if len(out) > CLASSIC_UDP_SIZE:
            return self._fit(query, out, udp, outcomes)
        if decided_before and group.served is not None:
            # The rendering is a function of the message and the block alone:
            # repeats of these bytes may skip stages 2-4.
            entry = (out[2:], slot, query.key, block.number, name)
            _remember(group.served_blocks, query.data[2:], entry, SERVED_BLOCKS_LIMIT)
        return out

    def _rewrite(
        self,
        query: Query,
        rewrite: Rewrite,
        udp: bool,
        source: ReplySource[Client],
        client: Client,
        now: float,
        outcomes: Outcomes,
        group: ClientGroup,
    ) -> bytes | None:
        """Safe search: answer the target's records under a CNAME, from the
        cache or once upstream answers the target's question."""
        group.counter.rewritten += 1
        answer = self._cache.get(target_key(query, rewrite), now)
        if answer is None:
            target = question_for(query, rewrite)
            if target is None:
                outcomes.servfail += 1
                return rewritten(query, rewrite, b"", self._max_udp_size, udp)
            reply = RewriteReply(query, rewrite, source.reply(client, now), self._max_udp_size)
            self._forwarder.forward(target, reply)
            return None
        # A cached target answer is checked like any other: a CNAME in it may be blocked.
        stopped = self._cname_block(query, answer, outcomes, group) if answer[CNAMES] else None
        if stopped is not None:
            return self._fit(query, stopped, udp, outcomes) if stopped else None
        outcomes.cached += 1
        return from_cache(query, rewrite, answer, now, self._max_udp_size, udp)

    def _refuse(self, data: bytes, outcomes: Outcomes) -> bytes | None:
        if self._deny_drop:
            outcomes.dropped += 1
            return None
        outcomes.refused += 1
        try:
            query = parse_query(data)
            if query is None:
                return None
            # The answer echoes the question: walk its labels first, as for an
            # allowed client, or a malformed name goes back out unparseable.
            validate(query)
        except QueryError:
            return None
        return query_error(query, REFUSED, self._max_udp_size, _REFUSED_EDE)

    def _decode_error(self, data: bytes, exc: QueryError, outcomes: Outcomes) -> bytes:
        if exc.rcode == FORMERR:
            outcomes.formerr += 1
        else:
            outcomes.notimp += 1
        return error_response(data, exc.rcode)

    def _unserved(self, query: Query, outcomes: Outcomes) -> bytes:
        if query.qtype == TYPE_OPT:
            outcomes.formerr += 1
            return query_error(query, FORMERR, self._max_udp_size)
        outcomes.refused += 1
        ede = _CLASS_EDE if query.qclass != CLASS_IN else _XFR_EDE
        return query_error(query, REFUSED, self._max_udp_size, ede)

    def _cname_block(
        self, query: Query, answer: Answer, outcomes: Outcomes, group: ClientGroup
    ) -> bytes | None:
        """The blocked answer if a CNAME target in ``answer`` is blocked for
        ``group`` (``b""``: drop it), ``None`` if every target is allowed."""
        for target in answer[CNAMES]:
            block, offset = group.view.check_text(target)
            if isinstance(block, CountedBlock):
                block.counter.count += 1
                group.counter.blocked += 1
                if self.blocked_names is not None:
                    self.blocked_names.count_text(target[offset:], block.counter.category)
                if block.drops:
                    outcomes.dropped += 1
                    return b""
                outcomes.blocked += 1
                # The SOA owner points at the question name itself (offset 0).
                return block.render(query, 0)
        return None

    def resume(self, query: Query, reply: Reply, answer: Answer | None, reason: str) -> None:
        """Stage 5's way back: an upstream answer (or failure) for one waiting client."""
        udp = reply.udp
        counters = self.counters
        outcomes = (counters.udp if udp else counters.tcp)[QTYPE_SLOT.get(query.qtype, OTHER_QTYPE)]
        now = time.monotonic()
        (counters.udp_upstream if udp else counters.tcp_upstream).observe(now - reply.received)
        if answer is None:
            stale = self._cache.stale_answer(query.key, now)
            if stale is not None:
                # RFC 8767: an expired answer beats no answer while upstreams
                # are down; the client is told (TTL 30 s, EDE 3 Stale Answer).
                outcomes.stale += 1
                out = self._fit(query, serve_stale(stale, query, _STALE_EDE), udp, outcomes)
                self._send(reply, query, out, now)
                return
            # Upstream failure is SERVFAIL, never NXDOMAIN: a downstream cache
            # must not store a lie (RFC 2308 §7.1 leaves SERVFAIL uncached).
            outcomes.servfail += 1
            ede = ede_option(EDE_NO_REACHABLE_AUTHORITY, f"upstream failure: {reason}")
            self._send(reply, query, query_error(query, SERVFAIL, self._max_udp_size, ede), now)
            return
        if answer[CNAMES]:
            group = self.policy.group_of(reply.address, query, now)
            blocked = self._cname_block(query, answer, outcomes, group)
            if blocked is not None:
                if blocked:
                    self._send(reply, query, self._fit(query, blocked, udp, outcomes), now)
                return
        outcomes.forwarded += 1
        self._send(reply, query, self._fit(query, serve(answer, query), udp, outcomes), now)

    def _send(self, reply: Reply, query: Query, out: bytes, now: float) -> None:
        """A later answer, through the rate limit if it goes over UDP."""
        if reply.udp and self.rrl is not None:
            limited = self.rrl.limit(reply.address, query.key, out, now)
            if limited is None:
                return
            out = limited
        reply.send(out)


def _remember(table: dict[bytes, Any], asked: bytes, entry: tuple[Any, ...], limit: int) -> None:
    """Keep how ``asked`` (a message after its ID) was answered, for its repeats."""
    if len(table) >= limit:
        make_room(table)
    store(table, asked, entry)


def build_pipeline(
    config: Config,
    policy: Policy,
    loop: asyncio.AbstractEventLoop,
    counters: Counters,
    blocked_names: BlockedNames | None = None,
    reactor: Reactor | None = None,
) -> Pipeline:
    """The one place that assembles the stages (order explained in the module docstring).

    ``reactor``: where upstream I/O is served (the worker's hot path; default ``loop``)."""
    # Each worker answers its own share of the questions (filterd.listeners.steer),
    # so the workers' caches together are one cache of ``max_bytes``.
    cache = ResponseCache(config.cache.max_bytes // config.server.workers, config.cache.serve_stale)
    limits = config.rate_limit
    rrl = (
        ResponseRateLimit(
            limits.responses_per_second,
            limits.burst,
            limits.all_per_second,
            limits.slip,
            counters,
            limits.exempt,
        )
        if limits.responses_per_second
        else None
    )

    def forwarder(pipeline: Pipeline) -> Forwarder:
        return Forwarder(
            UpstreamIO(loop, reactor),
            UpstreamPool(config.upstream),
            cache,
            config.cache,
            config.upstream,
            config.server.max_udp_size,
            config.server.max_inflight,
            pipeline.resume,
            config.server.max_inflight_per_client,
        )

    return Pipeline(
        Guard(config.access.allow),
        policy,
        cache,
        forwarder,
        config.server.max_udp_size,
        config.access.deny_action == "drop",
        counters,
        blocked_names,
        rrl,
    )
