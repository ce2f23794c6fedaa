"""Table entries untracked by the cyclic collector (``_untracked.c``).

See ``filterd.pipeline.untracked``.
"""

from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")

def store(table: dict[_K, _V], key: _K, value: _V, /) -> None: ...
