"""The response cache: TTLs age on the way out, clamps apply, variants stay
apart, and the bound is the accounted bytes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from filterd.config import CacheConfig
from filterd.pipeline.cache import (
    CNAMES,
    WIRE,
    ResponseCache,
    build_answer,
    entry_size,
    serve,
    serve_stale,
)
from filterd.wire.answer import inspect_response
from filterd.wire.query import Query, parse_query


def query(name: str = "www.example.com", edns: bool = True, case: str | None = None) -> Query:
    message = dns.message.make_query(case or name, "A", use_edns=0 if edns else False)
    parsed = parse_query(message.to_wire())
    assert parsed is not None
    return parsed


def upstream_answer(q: Query, ttls: tuple[int, ...] = (300, 60)) -> bytes:
    request = dns.message.from_wire(q.data)
    response = dns.message.make_response(request)
    response.use_edns(0, payload=1232)
    response.answer.append(
        dns.rrset.from_text("www.example.com.", ttls[0], "IN", "CNAME", "cdn.example.net.")
    )
    response.answer.append(dns.rrset.from_text("cdn.example.net.", ttls[1], "IN", "A", "192.0.2.7"))
    return response.to_wire()


def store(q: Query, config: CacheConfig, now: float, ttls: tuple[int, ...] = (300, 60)):  # type: ignore[no-untyped-def]
    wire = upstream_answer(q, ttls)
    info = inspect_response(wire, q.key[:-1], dns.message.from_wire(q.data).id)
    return build_answer(wire, info, q, config, 1232, now)


def test_ttls_decrement_with_age_and_expire() -> None:
    q = query()
    answer, lifetime = store(q, CacheConfig(), now=100.0)
    assert lifetime == 60
    assert answer[CNAMES] == (b"cdn.example.net",)
    cache = ResponseCache(1 << 20)
    cache.put(q.key, answer)
    hit = cache.get(q.key, 100.4)
    assert hit is not None
    first = dns.message.from_wire(serve(hit, q))
    assert [rrset.ttl for rrset in first.answer] == [300, 60]
    later = cache.get(q.key, 142.9)
    assert later is not None
    assert [rrset.ttl for rrset in dns.message.from_wire(serve(later, q)).answer] == [258, 18]
    again = cache.get(q.key, 142.95)
    assert again is not None
    assert again[WIRE] is later[WIRE]  # the same second of age: served as rendered
    assert cache.get(q.key, 160.0) is None
    assert (cache.hits, cache.misses, cache.expired) == (3, 1, 1)


def test_served_answer_carries_the_clients_id_and_question_case() -> None:
    stored = query()
    answer, _ = store(stored, CacheConfig(), now=0.0)
    other = query(case="WwW.ExAmPlE.CoM")
    assert other.key == stored.key
    reply = dns.message.from_wire(serve(answer, other))
    assert reply.id == dns.message.from_wire(other.data).id
    assert str(reply.question[0].name) == "WwW.ExAmPlE.CoM."
    assert reply.answer[1][0].address == "192.0.2.7"


def test_ttl_clamps() -> None:
    q = query()
    answer, lifetime = store(q, CacheConfig(min_ttl=120, max_ttl=200), now=0.0)
    assert lifetime == 120
    reply = dns.message.from_wire(serve(answer, q))
    assert [rrset.ttl for rrset in reply.answer] == [200, 120]


def test_opt_only_for_clients_that_sent_edns() -> None:
    with_edns = query()
    answer, _ = store(with_edns, CacheConfig(), now=0.0)
    assert dns.message.from_wire(serve(answer, with_edns)).edns == 0
    plain = query(edns=False)
    assert plain.key != with_edns.key  # separate cache entries per variant
    answer, _ = store(plain, CacheConfig(), now=0.0)
    assert dns.message.from_wire(serve(answer, plain)).edns == -1


def test_rd_bit_follows_the_client() -> None:
    q = query()
    answer, _ = store(q, CacheConfig(), now=0.0)
    no_rd = bytearray(q.data)
    no_rd[2] &= 0xFE
    parsed = parse_query(bytes(no_rd))
    assert parsed is not None
    reply = dns.message.from_wire(serve(answer, parsed))
    assert not reply.flags & dns.flags.RD and reply.flags & dns.flags.RA
    assert dns.message.from_wire(serve(answer, q)).flags & dns.flags.RD


def sized(names: int) -> int:
    """A byte bound that holds exactly ``names`` answers of ``n<i>.example.com``."""
    q = query("n0.example.com")
    return names * entry_size(q.key, store(q, CacheConfig(), now=0.0)[0])


def test_eviction_keeps_the_accounted_bytes_under_the_bound() -> None:
    cache = ResponseCache(sized(2))
    for i in range(3):
        q = query(f"n{i}.example.com")
        answer, _ = store(q, CacheConfig(), now=0.0)
        cache.put(q.key, answer)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.bytes == sized(2)


def test_replacing_an_entry_accounts_it_once() -> None:
    cache = ResponseCache(1 << 20)
    q = query()
    for now in (0.0, 1.0, 2.0):
        cache.put(q.key, store(q, CacheConfig(), now=now)[0])
    assert len(cache) == 1
    assert cache.bytes == entry_size(q.key, store(q, CacheConfig(), now=0.0)[0])
    cache.clear()
    assert (len(cache), cache.bytes) == (0, 0)


def test_an_answer_bigger_than_the_whole_cache_is_not_stored() -> None:
    q = query()
    answer, _ = store(q, CacheConfig(), now=0.0)
    cache = ResponseCache(entry_size(q.key, answer) - 1)
    cache.put(q.key, answer)
    assert len(cache) == 0 and cache.bytes == 0 and cache.evictions == 0


def test_zero_bytes_disables_the_cache() -> None:
    cache = ResponseCache(0)
    q = query()
    answer, _ = store(q, CacheConfig(), now=0.0)
    cache.put(q.key, answer)
    assert cache.get(q.key, 0.0) is None


def test_clock_eviction_spares_entries_used_since_last_examined() -> None:
    cache = ResponseCache(sized(3))
    keys = []
    for i in range(3):
        q = query(f"c{i}.example.com")
        answer, _ = store(q, CacheConfig(), now=0.0)
        cache.put(q.key, answer)
        keys.append(q.key)
    assert cache.get(keys[0], 1.0) is not None  # c0 used: gets a second chance
    extra = query("c3.example.com")
    answer, _ = store(extra, CacheConfig(), now=0.0)
    cache.put(extra.key, answer)
    assert cache.evictions == 1
    assert cache.get(keys[0], 1.0) is not None
    assert cache.get(keys[1], 1.0) is None  # the oldest unused one went
    assert cache.get(extra.key, 1.0) is not None


def test_clock_order_stays_bounded_when_entries_expire() -> None:
    cache = ResponseCache(sized(10))
    q = query()
    for round_ in range(3000):  # the same key expires and is stored again, many times
        answer, _ = store(q, CacheConfig(), now=float(round_ * 100))
        cache.put(q.key, answer)
        assert cache.get(q.key, round_ * 100 + 99.0) is None  # expired (lifetime 60)
    cache.put(q.key, store(q, CacheConfig(), now=0.0)[0])
    assert len(cache._order) <= 2 * 1 + 1024 + 1
    assert len(cache) == 1
    assert cache.bytes == entry_size(q.key, store(q, CacheConfig(), now=0.0)[0])


def test_expired_answers_are_kept_for_serve_stale_and_rendered_with_ttl_30() -> None:
    cache = ResponseCache(1 << 20, stale_for=100.0)
    q = query(case="WWW.example.COM")
    answer, _ = store(q, CacheConfig(), now=0.0)  # lifetime 60
    cache.put(q.key, answer)
    assert cache.get(q.key, 61.0) is None  # expired: a miss, but kept
    stale = cache.stale_answer(q.key, 61.0)
    assert stale is not None and cache.stale_answer(q.key, 160.0) is None  # past the window
    ede = b"\x00\x0f\x00\x02\x00\x03"  # EDE option, code 3
    reply = dns.message.from_wire(serve_stale(stale, q, ede))
    assert reply.id == dns.message.from_wire(q.data).id
    assert str(reply.question[0].name) == "WWW.example.COM."
    assert [rrset.ttl for rrset in reply.answer] == [30, 30]
    assert reply.edns == 0 and reply.payload == 1232
    assert [(option.otype, option.code) for option in reply.options] == [(15, 3)]
    assert cache.get(q.key, 161.0) is None and len(cache) == 0  # gone once past the window
    assert cache.bytes == 0


def test_without_serve_stale_expired_answers_are_dropped() -> None:
    cache = ResponseCache(1 << 20)
    q = query()
    cache.put(q.key, store(q, CacheConfig(), now=0.0)[0])
    assert cache.get(q.key, 61.0) is None and len(cache) == 0
    assert cache.stale_answer(q.key, 61.0) is None
