"""Bounded HTTP to one authority: settings, the session, and size-limited GETs.

Everything read from the network is bounded twice: in time (``sync.timeout``
for the whole exchange) and in size, counted while reading, so an endless or
slow body is cut, never buffered. A snapshot or delta is bounded by the size
its signed manifest announces (plus the most gzip can add to incompressible
data), not only by the configured ceiling: a body larger than announced is
cut at that size, before it reaches memory.

``Settings`` are read and checked once (key, token, certificates) and then
swapped in whole: a reload either applies every new sync setting or, if one
cannot be read, refuses and keeps all the old ones.
"""

from __future__ import annotations

import ssl
import zlib
from dataclasses import dataclass
from typing import Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from filterd import __version__
from filterd.config import SyncConfig
from filterd.errors import StartupError
from filterd.sync.model import FileRef, SyncError, load_public_key, sha256_hex

READ_CHUNK: Final = 64 * 1024
GZIP_OVERHEAD: Final = 1024
"""Bytes a gzip member may add beyond deflate's bound: header (with a file
name or comment, if the authority's tool writes one) and trailer."""


def compressed_bound(size: int) -> int:
    """The largest gzip body of ``size`` uncompressed bytes that an honest
    authority can produce (zlib's ``deflateBound`` for stored blocks, plus
    the gzip envelope): anything longer is cut."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13 + GZIP_OVERHEAD


@dataclass(frozen=True, slots=True)
class Settings:
    """One authority's sync settings with their files read and checked."""

    config: SyncConfig
    public_key: Ed25519PublicKey
    token: str
    tls: ssl.SSLContext | bool

    @classmethod
    def load(cls, config: SyncConfig) -> Settings:
        """Read the key, token and certificates; ``StartupError`` naming the
        file that cannot be used (start-up stops, a reload is refused)."""
        try:
            public_key = load_public_key(config.public_key)
        except ValueError as exc:
            raise StartupError(f"sync.public_key: {exc}") from None
        token = ""
        if config.token_file is not None:
            try:
                token = config.token_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise StartupError(f"sync.token_file {config.token_file}: {reason}") from None
            if not token:
                raise StartupError(f"sync.token_file {config.token_file}: empty")
        tls: ssl.SSLContext | bool = True
        if config.ca_file is not None or config.client_cert is not None:
            try:
                tls = ssl.create_default_context(
                    cafile=str(config.ca_file) if config.ca_file else None
                )
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise StartupError(f"sync.ca_file {config.ca_file}: {reason}") from None
            try:
                if config.client_cert is not None:  # mutual TLS
                    tls.load_cert_chain(str(config.client_cert), str(config.client_key))
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(
                    f"sync: client certificate {config.client_cert} or key "
                    f"{config.client_key}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
        return cls(config, public_key, token, tls)

    def session(self) -> aiohttp.ClientSession:
        # Files are gzip by themselves (never Content-Encoding): ask proxies not
        # to add an encoding, and never inflate before the size limits are checked.
        return aiohttp.ClientSession(
            headers={
                "Authorization": f"Bearer {self.token}",
                "User-Agent": f"filterd/{__version__}",
                "Accept-Encoding": "identity",
            },
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            connector=aiohttp.TCPConnector(ssl=self.tls, limit=4),
        )

    def url(self, path: str) -> str:
        assert self.config.url is not None
        return self.config.url + path


async def get(
    session: aiohttp.ClientSession,
    settings: Settings,
    path: str,
    limit: int,
    headers: dict[str, str],
) -> tuple[int, bytes, str]:
    """GET ``path``: (status 200 or 304, body, ETag), the body at most ``limit`` bytes."""
    try:
        async with session.get(settings.url(path), headers=headers) as response:
            if response.status == 304:
                return 304, b"", ""
            if response.status != 200:
                raise SyncError("http", f"GET {path}: HTTP {response.status}")
            if (response.content_length or 0) > limit:
                raise SyncError(
                    "size", f"GET {path}: {response.content_length} bytes, limit {limit}"
                )
            chunks = []
            size = 0
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise SyncError("size", f"GET {path}: body over {limit} bytes")
                chunks.append(chunk)
            return 200, b"".join(chunks), response.headers.get("ETag", "")
    except TimeoutError:
        raise SyncError(
            "timeout", f"GET {path}: no complete answer in {settings.config.timeout:g} s"
        ) from None
    except aiohttp.ClientPayloadError:
        raise SyncError("truncated", f"GET {path}: body cut short") from None
    except aiohttp.ClientError as exc:
        raise SyncError("network", f"GET {path}: {exc}") from None


async def get_file(
    session: aiohttp.ClientSession, settings: Settings, ref: FileRef, limit: int
) -> bytes:
    """Download ``ref`` (gzip) and check its uncompressed size and SHA-256.

    ``limit`` is the configured ceiling on the uncompressed size; the body is
    read up to the bound of the size the manifest announces."""
    if ref.size > limit:
        raise SyncError("size", f"{ref.path}: {ref.size} bytes announced, limit {limit}")
    _, compressed, _ = await get(session, settings, ref.path, compressed_bound(ref.size), {})
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(compressed, ref.size + 1)
    except zlib.error:
        raise SyncError("truncated", f"{ref.path}: not a gzip stream") from None
    if len(data) > ref.size or inflater.unconsumed_tail:
        raise SyncError("size", f"{ref.path}: more than the {ref.size} bytes announced")
    if not inflater.eof:
        raise SyncError("truncated", f"{ref.path}: gzip stream cut short")
    if len(data) != ref.size or sha256_hex(data) != ref.sha256:
        raise SyncError("hash", f"{ref.path}: SHA-256 or size differs from the manifest")
    return data
