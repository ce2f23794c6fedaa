"""A cached answer aged to a moment: the C extension (``filterd.pipeline._render``,
a compiled install) and the Python fallback (``cache._render``) agree on every
entry the cache can hold, at every moment, and the extension refuses a
malformed entry instead of writing outside it. The source-build pass of
``tests/run`` runs this file without the extension (the agreement test is
then skipped; the fallback's own behaviour is in ``tests/unit/pipeline``)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.pipeline import cache
from filterd.pipeline.cache import Answer

NATIVE = cache.render is not cache._render
needs_extension = pytest.mark.skipif(not NATIVE, reason="the C extension is not built here")


@st.composite
def entries(draw: st.DrawFn) -> tuple[Answer, float]:
    """An entry as ``build_answer`` packs it, and a moment at or after its storing."""
    wire = draw(st.binary(min_size=4, max_size=300))
    stored_at = draw(st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
    lifetime = draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
    offsets = draw(st.lists(st.integers(0, len(wire) - 4), max_size=8))
    ttls = draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(offsets), max_size=len(offsets)))
    meta = struct.pack("=dd", stored_at, stored_at + lifetime) + b"".join(
        struct.pack("=HI", offset, ttl) for offset, ttl in zip(offsets, ttls, strict=True)
    )
    cnames = tuple(draw(st.lists(st.binary(max_size=20), max_size=3)))
    due = draw(st.floats(min_value=0.0, max_value=2e7, allow_nan=False))
    now = stored_at + draw(st.floats(min_value=0.0, max_value=2e6, allow_nan=False))
    return (wire, due, cnames, meta), now


@needs_extension
@settings(max_examples=500, deadline=None)
@given(entries())
def test_the_extension_renders_as_the_python_fallback(entry: tuple[Answer, float]) -> None:
    answer, now = entry
    assert cache.render(answer, now) == cache._render(answer, now)


@needs_extension
def test_the_extension_refuses_a_malformed_entry() -> None:
    times = struct.pack("=dd", 0.0, 100.0)
    with pytest.raises(ValueError, match="TTL field at 8 of a 10-octet answer"):
        cache.render((bytes(10), 0.0, (), times + struct.pack("=HI", 8, 60)), 1.0)
    with pytest.raises(ValueError, match="meta of 17 octets"):
        cache.render((bytes(10), 0.0, (), times + b"\0"), 1.0)
    with pytest.raises(TypeError, match="4-tuple"):
        cache.render((bytes(10), 0.0, ()), 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        cache.render((bytearray(10), 0.0, (), times), 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes 2 arguments"):
        cache.render((bytes(10), 0.0, (), times))  # type: ignore[call-arg]
