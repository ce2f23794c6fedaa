"""Cache: upstream answers, served again with decremented TTLs, bounded by memory.

Entries are keyed by the lower-cased question plus the variant byte (EDNS
presence, DO, CD; see ``filterd.wire.query``). The bound is bytes, not a
count: an entry is accounted as its key, its wire bytes and its metadata
plus ``ENTRY_OVERHEAD`` (and ``CNAME_OVERHEAD`` per CNAME target), the
interpreter's own cost of holding it, measured as resident memory over a
realistic mix (``tests/unit/pipeline/test_cache_memory.py`` checks that
the accounting never falls below what the interpreter allocates). A count
bound said nothing about memory: answers range from 60 bytes to several
kilobytes, and an operator sizes a cache in bytes.

An entry is one plain ``tuple`` (``Answer``): the answer from the flags
word on (question included, TTLs already decremented for the age it was
rendered at), the monotonic time of its next *due* event, its CNAME targets
and a packed metadata string (stored at, expires at, and the offset and
original value of every TTL field). Serving it is the client's ID plus the
wire bytes (or, for a client that wrote its question in mixed case, its own
question spliced in). Why tuples and not objects: a tuple of bytes and
floats can be kept out of the cyclic garbage collector's sight
(``filterd.pipeline.untracked``: every answer is stored through ``store``), so
the table of a million cached answers is never visited by a collection,
and it is the smallest container Python has (no ``__dict__``, no per-object
slots table).

The read path does one dict lookup and one float comparison: until ``due``
the wire bytes are served as they are. ``due`` is the next whole second of
age (TTLs are rewritten at most once per second of age per entry, not per
query) or the expiry, whichever is first; past it the entry is rendered
again (a new tuple replaces the old) or found expired.

Eviction is CLOCK (Corbató's second chance), O(1) amortised: keys sit in a
deque in insertion order; the hand evicts the oldest unless it was used
since it was last examined. "Used" costs the read path nothing: the hand
clears an entry by setting its ``due`` to 0.0, so the next hit renders it
again (which it would do within a second anyway) and gives it a ``due``
above zero. A new entry starts cleared, so a name asked once is the first
to go.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Final

from filterd.config import CacheConfig
from filterd.pipeline.untracked import store
from filterd.wire.answer import ResponseInfo
from filterd.wire.query import Query
from filterd.wire.synth import opt_record

Answer = tuple[bytes, float, tuple[bytes, ...], bytes]
"""(wire from the flags word on, due, CNAME targets, metadata); see the module docstring."""
WIRE: Final = 0
DUE: Final = 1
CNAMES: Final = 2
META: Final = 3

_TTL: Final = struct.Struct("!I")
_TIMES: Final = struct.Struct("=dd")  # stored at, expires at (monotonic seconds)
_FIELD: Final = struct.Struct("=HI")  # offset of a TTL field in the wire bytes, its value
STALE_TTL: Final = 30
"""TTL of a stale answer (RFC 8767 §4: 30 seconds is recommended)."""
_PLAIN_OPT_SIZE: Final = len(opt_record(0, False))
_NO_CNAMES: Final[tuple[bytes, ...]] = ()

ENTRY_OVERHEAD: Final = 256
"""Bytes an entry costs beyond its key, wire and metadata lengths: the
objects' headers and allocator rounding, the tuple, the ``due`` float, its
share of the dict's and the deque's tables. Measured as the growth of the
resident set per entry over 200,000-600,000 A answers with EDNS (CPython
3.11, 64-bit): 380-392 bytes for 130 bytes of key, wire and metadata."""
CNAME_OVERHEAD: Final = 80
"""Bytes a CNAME target costs beyond its length (its bytes object and its
tuple slot); measured the same way: 543 bytes for a CNAME-then-A answer
holding 201 bytes."""


def entry_size(key: bytes, answer: Answer) -> int:
    """What ``answer`` stored under ``key`` counts against ``max_bytes``."""
    size = len(key) + len(answer[WIRE]) + len(answer[META]) + ENTRY_OVERHEAD
    for target in answer[CNAMES]:
        size += len(target) + CNAME_OVERHEAD
    return size


def _render(answer: Answer, now: float) -> Answer | None:
    """``answer`` with its TTLs aged to ``now``; ``None`` once it has expired."""
    meta = answer[META]
    stored_at, expires_at = _TIMES.unpack_from(meta)
    if now >= expires_at:
        return None
    age = int(now - stored_at)
    out = bytearray(answer[WIRE])
    pack = _TTL.pack_into
    for offset, ttl in _FIELD.iter_unpack(meta[_TIMES.size :]):
        pack(out, offset, ttl - age if ttl > age else 0)
    due = min(stored_at + age + 1, expires_at)
    return (bytes(out), due, answer[CNAMES], meta)


def _render_call() -> Callable[[Answer, float], Answer | None]:
    try:
        from filterd.pipeline._render import render as native  # noqa: PLC0415 - optional
    except ImportError:
        return _render
    return native


render: Final = _render_call()
"""``_render``, from the C extension ``filterd.pipeline._render`` where it is
built (one copy instead of a bytearray, an iterator, a tuple and a
``pack_into`` call per TTL field: see its source), else the function above."""


def stored_at(answer: Answer) -> float:
    """When ``answer`` came from upstream (monotonic seconds)."""
    return float(_TIMES.unpack_from(answer[META])[0])


def serve(answer: Answer, query: Query) -> bytes:
    """``answer`` for ``query``: the client's ID, question and RD bit.

    The common case (client asked in lower case with RD=1, as stored) is one
    concatenation; otherwise the client's own question bytes are spliced in
    (case preserved for 0x20-randomising clients)."""
    data = query.data
    wire = answer[WIRE]
    if data[2] & 0x01 and query.asked_lower:
        return data[:2] + wire
    qend = query.qend
    head = wire[:10] if data[2] & 0x01 else bytes((wire[0] & 0xFE,)) + wire[1:10]
    # The stored question spans wire[10 : qend - 2] (wire starts at message offset 2).
    return data[:2] + head + data[12:qend] + wire[qend - 2 :]


def serve_stale(answer: Answer, query: Query, ede: bytes) -> bytes:
    """``answer`` past its expiry (RFC 8767): every TTL ``STALE_TTL``, and for
    an EDNS client the ``ede`` option (RFC 8914 code 3, Stale Answer) in
    filterd's OPT record, which is the last record of an EDNS variant."""
    out = bytearray(answer[WIRE])
    for offset, _ in _FIELD.iter_unpack(answer[META][_TIMES.size :]):
        _TTL.pack_into(out, offset, STALE_TTL)
    if query.has_edns:
        udp_size = int.from_bytes(out[-_PLAIN_OPT_SIZE + 3 : -_PLAIN_OPT_SIZE + 5], "big")
        out[-_PLAIN_OPT_SIZE:] = opt_record(udp_size, query.do, 0, ede)
    data = query.data
    if not data[2] & 0x01:
        out[0] &= 0xFE
    qend = query.qend
    return data[:2] + bytes(out[:10]) + data[12:qend] + bytes(out[qend - 2 :])


def build_answer(
    message: bytes,
    info: ResponseInfo,
    query: Query,
    config: CacheConfig,
    max_udp_size: int,
    now: float,
) -> tuple[Answer, float | None]:
    """Turn an upstream message into an ``Answer`` for clients of ``query``'s variant.

    Returns the answer and how long it may be cached (``None``: not at all).
    The upstream's OPT record is removed; clients that sent EDNS get
    filterd's own (RFC 6891 §7: never an OPT to a client that sent none).
    TTLs are clamped into [min_ttl, max_ttl] (negative answers: at most
    negative_max_ttl) when stored, so clients see the clamped values.
    """
    qend = query.qend
    records = message[qend:]
    offsets = [offset - qend for offset in info.ttl_offsets]
    arcount = message[10] << 8 | message[11]
    if info.opt_span is not None:
        start, end = info.opt_span
        records = message[qend:start] + message[end:]
        shift = end - start
        offsets = [o - shift if o + qend >= end else o for o in offsets]
        arcount -= 1
    if query.has_edns:
        records += opt_record(max_udp_size, query.do)
        arcount += 1
    ceiling = config.negative_max_ttl if info.negative else config.max_ttl
    ttls = [max(config.min_ttl, min(ttl, ceiling)) for ttl in info.ttls]
    lifetime: float | None = None
    if info.cacheable_ttl is not None:
        lifetime = max(config.min_ttl, min(info.cacheable_ttl, ceiling))
    # Flags: upstream's rcode, AA, AD, CD; RA set (we recurse for the client);
    # TC cleared (a truncated message is retried over TCP, never served).
    flags_hi = (message[2] & 0xFD) | 0x01
    flags_lo = (message[3] & 0x7F) | 0x80
    head = bytes((flags_hi, flags_lo)) + message[4:10] + struct.pack("!H", arcount)
    out = bytearray(head + query.key[:-1] + records)
    base = len(out) - len(records)  # the records' offset inside the wire bytes
    meta = bytearray(_TIMES.pack(now, now + (lifetime or 0.0)))
    for offset, ttl in zip(offsets, ttls, strict=True):
        _TTL.pack_into(out, base + offset, ttl)
        meta += _FIELD.pack(base + offset, ttl)
    targets = tuple(info.cname_targets) if info.cname_targets else _NO_CNAMES
    # Stored cleared (due 0.0): see the module docstring on CLOCK.
    return (bytes(out), 0.0, targets, bytes(meta)), lifetime


class ResponseCache:
    """Map from cache key to ``Answer``, bounded by accounted bytes; expiry
    checked on read."""

    __slots__ = (
        "_entries",
        "_max_bytes",
        "_order",
        "_stale_for",
        "bytes",
        "evictions",
        "expired",
        "hits",
        "misses",
    )

    def __init__(self, max_bytes: int, stale_for: float = 0.0) -> None:
        """``max_bytes`` 0 disables caching (every query goes upstream);
        ``stale_for``: seconds an expired entry is kept for ``stale_answer``."""
        self._max_bytes = max_bytes
        self._entries: dict[bytes, Answer] = {}
        self._order: deque[bytes] = deque()
        self._stale_for = stale_for
        self.bytes = 0
        """Accounted size of every entry held (see ``entry_size``)."""
        self.hits = 0
        self.misses = 0
        self.expired = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def get(self, key: bytes, now: float) -> Answer | None:
        """The live answer for ``key``, its TTLs aged to ``now``; ``None`` on a
        miss. Counted: a hit, or a miss (and an expiry when the entry is there
        but past its TTL)."""
        answer = self.renewed(key, now)
        if answer is not None:
            self.hits += 1
            return answer
        self.misses += 1
        expired = self._entries.get(key)
        if expired is not None:
            _, expires_at = _TIMES.unpack_from(expired[META])
            if now >= expires_at + self._stale_for:
                self._remove(key, expired)  # else kept: a stale answer if upstreams fail
            self.expired += 1
        return None

    def renewed(self, key: bytes, now: float) -> Answer | None:
        """The live answer for ``key`` rendered for ``now``, counting nothing
        (``get`` counts; a served repeat whose stored rendering is due counts
        its own hit, ``pipeline``). ``None`` if the entry is gone or expired."""
        answer = self._entries.get(key)
        if answer is None or now < answer[DUE]:
            return answer
        rendered = render(answer, now)
        if rendered is not None:
            store(self._entries, key, rendered)
        return rendered

    def stale_answer(self, key: bytes, now: float) -> Answer | None:
        """An expired answer still within ``stale_for`` (RFC 8767), for when
        every upstream failed; ``None`` if there is none."""
        answer = self._entries.get(key)
        if answer is None:
            return None
        _, expires_at = _TIMES.unpack_from(answer[META])
        return None if now >= expires_at + self._stale_for else answer

    def put(self, key: bytes, answer: Answer) -> None:
        size = entry_size(key, answer)
        if size > self._max_bytes:
            return  # also: a cache of 0 bytes is off
        entries = self._entries
        old = entries.get(key)
        if old is None:
            order = self._order
            order.append(key)
            if len(order) > 2 * len(entries) + 1024:
                # Keys removed on expiry leave stale places behind; rebuild
                # from the live keys (insertion order) so the deque stays bounded.
                self._order = deque(entries)
                self._order.append(key)
        else:
            self.bytes -= entry_size(key, old)
        store(entries, key, answer)
        self.bytes += size
        while self.bytes > self._max_bytes:
            self._evict_one()

    def _remove(self, key: bytes, answer: Answer) -> None:
        del self._entries[key]
        self.bytes -= entry_size(key, answer)

    def _evict_one(self) -> None:
        """Evict the entry under the CLOCK hand that was not used since it was
        last examined. Bounded: every pass clears a used entry, so within
        ``len(order) + 1`` steps an unused one comes up; keys removed since
        they were queued (expired on read) are dropped on the way."""
        order = self._order
        entries = self._entries
        for _ in range(len(order) + 1):
            key = order.popleft()
            answer = entries.get(key)
            if answer is None:
                continue
            if answer[DUE]:
                store(entries, key, (answer[WIRE], 0.0, answer[CNAMES], answer[META]))
                order.append(key)
                continue
            self._remove(key, answer)
            self.evictions += 1
            return
        raise AssertionError("cache over its bound with no entry to evict")

    def clear(self) -> None:
        self._entries.clear()
        self._order.clear()
        self.bytes = 0

    def continue_counts(self, previous: ResponseCache) -> None:
        """Count on from ``previous`` (the cache this one replaces on a reload)."""
        self.hits += previous.hits
        self.misses += previous.misses
        self.expired += previous.expired
        self.evictions += previous.evictions
