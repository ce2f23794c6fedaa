"""A cached answer's TTLs aged in one copy (``_render.c``; see ``filterd.pipeline.cache``)."""

def render(
    answer: tuple[bytes, float, tuple[bytes, ...], bytes], now: float, /
) -> tuple[bytes, float, tuple[bytes, ...], bytes] | None: ...
