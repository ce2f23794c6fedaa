"""Response rate limiting over UDP, in the manner of BIND's RRL.

A UDP query's source address can be forged, so a resolver that answers
everyone it allows at any rate is a reflector: an attacker sends small
queries "from" a victim inside the allowed ranges, and the answers flood the
victim. The limit is on *identical responses to one client prefix*: a token
bucket per (prefix /24 or /56, question), refilled at
``responses_per_second`` up to ``burst`` tokens. A real client asks the
same question a few times a second at most (it caches the answer), so the
default rate is far above any real one and only floods meet it.
``all_per_second`` (off by default) bounds every response to a prefix.

A response over the limit is dropped, except every ``slip``-th one, which
is sent as an empty truncated answer (TC=1, question only): a real client
behind a forged flood retries over TCP, which cannot be forged, and gets
its answer; the victim receives only small answers at 1/slip of the rate.
TCP answers are never limited, nor are answers to the ``exempt`` networks
(loopback by default: a packet from 127.0.0.0/8 or ::1 cannot arrive from
the network, the kernel drops it as a martian, so it cannot be forged by a
remote attacker; load generators and local forwarders live there).

The table of buckets is bounded (``MAX_BUCKETS``); when full, its newest
1/64 is dropped (``filterd.pipeline.memo.make_room``: no pause, and the
buckets of long-limited sources stay), which lets those keys a fresh burst
rather than grow without bound. The check costs one dict lookup and a few
float operations per UDP answer.
"""

from __future__ import annotations

from typing import Final

from filterd.pipeline.clients import prefix_of
from filterd.pipeline.guard import Guard, Network
from filterd.pipeline.memo import make_room
from filterd.pipeline.tally import Counters

MAX_BUCKETS: Final = 200_000
FLAG_TC: Final = 0x02


class ResponseRateLimit:
    __slots__ = (
        "_all_burst",
        "_all_rate",
        "_buckets",
        "_burst",
        "_counters",
        "_exempt",
        "_exempt_memo",
        "_rate",
        "_slip",
    )

    def __init__(
        self,
        responses_per_second: float,
        burst: float,
        all_per_second: float,
        slip: int,
        counters: Counters,
        exempt: tuple[Network, ...] = (),
    ) -> None:
        """``counters`` outlive this limiter (a reload rebuilds it): the drops
        and slips are counted there."""
        self._rate = responses_per_second
        self._burst = burst
        self._all_rate = all_per_second
        self._all_burst = all_per_second * burst / responses_per_second if all_per_second else 0.0
        self._slip = slip
        self._buckets: dict[bytes, list[float]] = {}
        self._counters = counters
        self._exempt = Guard(exempt)
        self._exempt_memo = self._exempt.memo

    def limit(self, address: bytes, question: bytes, answer: bytes, now: float) -> bytes | None:
        """``answer`` as it may be sent to ``address`` now: itself, its
        truncated stand-in (a slip), or None (dropped). ``question`` is the
        query's key (its lower-cased wire question and one variant byte;
        empty when the question could not be decoded)."""
        if self._exempt_memo.get(address) or self._exempt.allows(address):
            return answer
        prefix = prefix_of(address)
        if self._all_rate and not self._take(prefix, self._all_rate, self._all_burst, now):
            return self._over(prefix, question, answer)
        key = prefix + question
        if self._take(key, self._rate, self._burst, now):
            return answer
        return self._over(key, question, answer)

    def _take(self, key: bytes, rate: float, burst: float, now: float) -> bool:
        """One token from ``key``'s bucket, made full (less this token) if new."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                make_room(self._buckets)
            self._buckets[key] = [burst - 1.0, now, 0.0]
            return True
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def _over(self, key: bytes, question: bytes, answer: bytes) -> bytes | None:
        bucket = self._buckets[key]
        bucket[2] += 1
        if self._slip and question and bucket[2] % self._slip == 0:
            self._counters.rate_slipped += 1
            return slip_answer(answer, len(question) - 1)
        self._counters.rate_dropped += 1
        return None


def slip_answer(answer: bytes, question_size: int) -> bytes:
    """The truncated stand-in of ``answer``: its ID, flags with TC set and its
    rcode, the question, nothing else (RFC 1035 §4.2.1: the client retries
    over TCP)."""
    return (
        answer[:2]
        + bytes((answer[2] | FLAG_TC, answer[3]))
        + b"\x00\x01\x00\x00\x00\x00\x00\x00"
        + answer[12 : 12 + question_size]
    )
