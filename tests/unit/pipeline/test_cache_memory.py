"""The cache's byte accounting against what the interpreter really allocates.

``cache.max_bytes`` is only a memory bound if ``entry_size`` never counts
less than an entry costs. ``sys.getsizeof`` gives what each object the
cache holds takes (bytes, tuples, floats, and the dict and deque tables)
but not the allocator's rounding, so the accounted figure must lie at or
above their sum, and not so far above that the bound wastes memory. The
objects measured are the ones the cache holds, not the ones handed to
``put``: compiled, ``put`` stores a new tuple of the same items (mypyc keeps
a fixed-length tuple unboxed between compiled functions and boxes it again
when it goes into a dict), and the one handed in is freed by its caller.
"""

from __future__ import annotations

import sys

import dns.message
import dns.rrset
import pytest

from filterd.config import CacheConfig
from filterd.pipeline.cache import Answer, ResponseCache, build_answer, entry_size
from filterd.wire.answer import inspect_response
from filterd.wire.query import parse_query

ENTRIES = 5_000


def answers(cnames: bool) -> list[tuple[bytes, Answer]]:
    out = []
    for i in range(ENTRIES):
        name = f"host{i}.example{i % 97}.com."
        request = dns.message.make_query(name, "AAAA" if i % 3 else "A", use_edns=0)
        query = parse_query(request.to_wire())
        assert query is not None
        response = dns.message.make_response(request)
        response.use_edns(0, payload=1232)
        owner = name
        if cnames:
            owner = f"edge{i}.cdn.example.net."
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", owner))
        rdata = "2001:db8::7" if i % 3 else "192.0.2.7"
        response.answer.append(
            dns.rrset.from_text(owner, 300, "IN", "AAAA" if i % 3 else "A", rdata)
        )
        wire = response.to_wire()
        info = inspect_response(wire, query.key[:-1], request.id)
        answer, _ = build_answer(wire, info, query, CacheConfig(), 1232, 100.0)
        out.append((query.key, answer))
    return out


def object_bytes(key: bytes, answer: Answer) -> int:
    """What the entry's own objects take (``sys.getsizeof`` counts GC headers)."""
    size = sys.getsizeof(key) + sys.getsizeof(answer)
    size += sys.getsizeof(answer[0]) + sys.getsizeof(answer[1]) + sys.getsizeof(answer[3])
    if answer[2]:
        size += sys.getsizeof(answer[2]) + sum(sys.getsizeof(t) for t in answer[2])
    return size


@pytest.mark.parametrize("cnames", [False, True], ids=["address", "cname-then-address"])
def test_accounted_bytes_cover_what_the_entries_allocate(cnames: bool) -> None:
    entries = answers(cnames)
    cache = ResponseCache(1 << 40)
    for key, answer in entries:
        cache.put(key, answer)
    held: dict[bytes, Answer] = cache._entries  # what the cache really keeps
    tables = sys.getsizeof(held) + sys.getsizeof(cache._order)
    allocated = tables + sum(object_bytes(key, answer) for key, answer in held.items())
    assert len(held) == ENTRIES
    assert cache.bytes == sum(entry_size(key, answer) for key, answer in entries)
    assert allocated <= cache.bytes <= 1.3 * allocated
