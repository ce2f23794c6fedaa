"""A packed sequence of names: one byte blob and an array of end offsets.

Why not ``list[bytes]``: a million names as Python objects cost about 65 MB
(object headers and pointers on top of 20 MB of text), and once freed,
pymalloc keeps most of that memory mapped in partly used arenas, under the
NumPy arrays the index builder allocates next. Packed, the same million
names are the 20 MB of text plus 4 MB of 32-bit offsets (a list is at most
1 GiB); the parser appends each chunk's names at once, and the builder
copies blob and offsets wholesale.
Reading a name back (``names[i]``, iteration) makes one small ``bytes``.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain
from operator import sub
from typing import overload


class Names(Sequence[bytes]):
    __slots__ = ("_ends", "blob")

    def __init__(self, names: Iterable[bytes] = ()) -> None:
        self.blob = bytearray()
        self._ends = array("I")
        self.extend(names)

    def append(self, name: bytes) -> None:
        self.blob += name
        self._ends.append(len(self.blob))

    def extend(self, names: Iterable[bytes]) -> None:
        names = names if isinstance(names, list | tuple) else list(names)
        if not names:
            return
        self._ends.extend(accumulate(map(len, names), initial=len(self.blob)))
        del self._ends[-len(names) - 1]  # ``initial`` repeats the previous end
        self.blob += b"".join(names)

    def take_blob(self) -> bytearray:
        """Hand over the blob and become empty (the index builder adopts the
        text of a list it is given instead of copying it)."""
        blob, self.blob = self.blob, bytearray()
        del self._ends[:]
        return blob

    def lengths(self) -> array[int]:
        """Length of every name, in order."""
        ends = self._ends
        return array("I", map(sub, ends, chain((0,), ends)))

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self._ends)
        end = self._ends[index]  # IndexError when out of range
        start = self._ends[index - 1] if index else 0
        return bytes(self.blob[start:end])

    def __iter__(self) -> Iterator[bytes]:
        blob = self.blob
        start = 0
        for end in self._ends:
            yield bytes(blob[start:end])
            start = end

    def __repr__(self) -> str:
        return f"Names({list(self)!r})"
