"""The private channel between the supervisor and its workers.

A Unix socketpair created by the supervisor, one per worker, carrying
length-prefixed pickled messages. Pickle is acceptable on channels like
this one and the list compiler's pipes: both ends are the same program,
started together, and neither channel is reachable from outside the
process pair.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass
from typing import Final

from filterd.config import Config
from filterd.matching.matcher import Overlaid
from filterd.model.sources import SourceInfo
from filterd.stats import WorkerStats

_LENGTH: Final = struct.Struct("!I")
MAX_MESSAGE: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Prepare:
    """Get ready to serve this configuration and compiled index (mapped and
    prefaulted), but keep serving the current generation until ``Commit``.

    ``overlay`` and ``sources``: names changed by authority deltas since the
    index was compiled, and the list versions that go with them (see
    ``filterd.lists.overlay``)."""

    generation: int
    config: Config
    index_path: str
    overlay: dict[bytes, Overlaid] | None = None
    sources: tuple[SourceInfo, ...] | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """Serve the prepared ``generation`` from now on."""

    generation: int


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the prepared ``generation``: another worker could not prepare it."""

    generation: int


@dataclass(frozen=True, slots=True)
class Installed:
    """The reply to each of the three: ``error`` empty when it worked."""

    generation: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class StatsRequest:
    request_id: int


@dataclass(frozen=True, slots=True)
class StatsReply:
    request_id: int
    stats: WorkerStats


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop accepting queries, finish those in flight (up to ``timeout``), exit."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Drained:
    pass


Message = Prepare | Commit | Abort | Installed | StatsRequest | StatsReply | Drain | Drained


class ChannelClosed(Exception):
    """The other end went away."""


async def send(writer: asyncio.StreamWriter, message: Message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(payload)) + payload)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> Message:
    try:
        header = await reader.readexactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(header)
        if length > MAX_MESSAGE:
            raise ChannelClosed(f"control message of {length} bytes")
        payload = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelClosed(str(exc)) from None
    message: Message = pickle.loads(payload)
    return message
