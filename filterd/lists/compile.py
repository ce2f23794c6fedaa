"""Compiling the configured lists into one index file.

``compile_lists`` is the whole job of the compiler process: read every list,
parse it, merge all entries into one ``IndexBuilder`` and write the index
into the state directory. It runs in a child process (see
``filterd.lists.compile_child``) so that neither the parse's CPU nor its memory
peak lands on a serving process.

The output is content-addressed: its file name is a digest of the list
contents and of every setting that shapes the index, and the report is
stored inside the file. Restarting with unchanged lists therefore reuses the
last compiled index instead of parsing again, and an index on disk is always
complete (written to a temporary name, fsynced, renamed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Final

from filterd.config import Config, ListConfig
from filterd.config.groups import MAX_CATEGORIES
from filterd.errors import ListError
from filterd.formats import (
    FORMAT_HEAD,
    EntryKind,
    ParsedList,
    ParseOptions,
    detect_format,
    parse,
)
from filterd.lists import guard
from filterd.lists.sources import sources_of
from filterd.matching.build import IndexBuilder
from filterd.matching.index import CompiledIndex, IndexFormatError
from filterd.model.rules import Action, Rule, Scope
from filterd.model.sources import SourceInfo
from filterd.sync.store import Pin
from filterd.wire.codes import EDE_BLOCKED

COMPILER_VERSION: Final = "6"
CANARY_SOURCE: Final = "bypass-canaries"

# Names through which clients detect a filtering resolver and stay on it
# instead of switching to their own encrypted resolver (docs/list-formats.md):
# Firefox's canary domain, Apple's iCloud Private Relay and DDR (RFC 9462).
CANARIES: Final = (
    (b"use-application-dns.net", Action.NXDOMAIN),
    (b"mask.icloud.com", Action.NXDOMAIN),
    (b"mask-h2.icloud.com", Action.NXDOMAIN),
    (b"_dns.resolver.arpa", Action.NODATA),
)


@dataclass(frozen=True, slots=True)
class CompileReport:
    """Result of one compile: where the index is and what went into it."""

    index_path: Path
    digest: str
    sources: tuple[SourceInfo, ...]
    distinct_names: int
    seconds: float
    reused: bool

    def source_json(self) -> list[dict[str, Any]]:
        return [asdict(source) for source in self.sources]


@dataclass(frozen=True, slots=True)
class CompileRequest:
    """What the compiler process is asked to do: ``config``'s lists, with
    each synced list read from its pin (keyed by list id), never from
    whatever ``snapshot.list`` holds by the time the child opens it."""

    config: Config
    pins: Mapping[str, Pin] = field(default_factory=dict)
    baseline: guard.Baseline = field(default_factory=lambda: guard.Baseline({}, {}))


async def compile_in_child(
    config: Config, pins: Mapping[str, Pin], baseline: guard.Baseline
) -> CompileReport:
    """Run ``compile_lists(config, pins, baseline)`` in a fresh ``filterd.lists.compile_child``
    process; raise ``ListError`` on failure. It runs in its own session, so
    signals meant for the daemon (SIGHUP, a terminal's SIGINT) do not reach
    it, and so that it has a scheduler group of its own to lower
    (``filterd.lists.compile_child.run_idle``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",  # the installed filterd, never a filterd/ in the current directory
        "-m",
        "filterd.lists.compile_child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    timeout = config.compile.timeout
    try:
        request = CompileRequest(config, dict(pins), baseline)
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate(pickle.dumps(request))
    except (asyncio.CancelledError, TimeoutError) as exc:
        process.kill()
        await process.wait()
        # Compiles never overlap: any temporary index is the killed one's.
        for leftover in index_dir(config).glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, TimeoutError):
            raise ListError(
                f"list compiler did not finish in {timeout:g} s (compile.timeout): "
                "a list on a hung mount, or much larger than before?"
            ) from None
        raise
    if process.returncode != 0 or not output:
        raise ListError(f"list compiler exited with status {process.returncode}")
    result = pickle.loads(output)
    if isinstance(result, CompileReport):
        return result
    if isinstance(result, ListError):
        raise result
    raise ListError(str(result))


@contextmanager
def _open_list(lst: ListConfig, limit: int) -> Iterator[BinaryIO]:
    """A list file open for reading, within the size limit; a read error
    while it is open (here or in the caller) becomes a ``ListError``.

    Only a regular file is a list: it is opened without blocking and checked
    before anything is read, so a FIFO, a device or a directory put in a
    list's place is an error at once instead of a compile that never ends."""
    try:
        fd = os.open(lst.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ListError(f"{lst.path}: list {lst.name!r} is not a regular file")
            if info.st_size > limit:
                raise ListError(
                    f"{lst.path}: list {lst.name!r} is {info.st_size} bytes, larger than "
                    f"compile.max_list_bytes ({limit})"
                )
            os.set_blocking(fd, True)
            yield handle
    except OSError as exc:
        raise ListError(f"{lst.path}: cannot read list {lst.name!r}: {exc.strerror}") from None


class _HashingReader:
    """A list file read through SHA-256: the hash is of the very bytes parsed."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _hash_file(lst: ListConfig, limit: int) -> str:
    """SHA-256 of a list file, read in chunks (the content is not kept)."""
    with _open_list(lst, limit) as handle:
        reader = _HashingReader(handle)
        while reader.read(1 << 20):
            pass
    return reader.digest.hexdigest()


def _digest(config: Config, hashes: list[str], versions: list[str]) -> str:
    shaping = {
        "compiler": COMPILER_VERSION,
        "canaries": config.blocking.bypass_canaries,
        "lists": [
            [lst.name, lst.format, lst.kind, int(lst.mode), lst.mandatory, lst.category,
             lst.action, lst.ede_code, lst.allow_tld, lst.opt_in, lst.https_only, sha, version]
            for lst, sha, version in zip(config.lists, hashes, versions, strict=True)
        ],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(shaping, default=str).encode()).hexdigest()[:32]


def pinned_lists(config: Config, pins: Mapping[str, Pin]) -> Config:
    """``config`` with every synced list read from its pin. A synced list
    without a pin cannot be compiled: what it holds could not be named."""
    for lst in config.lists:
        if lst.sync and lst.sync not in pins:
            raise ListError(f"list {lst.name!r}: authority list {lst.sync!r} not obtained yet")
    lists = tuple(
        replace(lst, path=pins[lst.sync].path) if lst.sync else lst for lst in config.lists
    )
    return replace(config, lists=lists)


def index_dir(config: Config) -> Path:
    return config.state_dir / "index"


def compile_lists(
    config: Config,
    pins: Mapping[str, Pin] | None = None,
    baseline: guard.Baseline | None = None,
    *,
    reuse: bool = True,
) -> CompileReport:
    """Parse every configured list and write (or reuse) the compiled index.

    A synced list is read from its pin and must hash to the pinned state;
    every source reports the full SHA-256 of the bytes parsed, and a synced
    one the serial of its pin as its version. A list file must pass its
    guards against ``baseline`` (``filterd.lists.guard``), also when the
    index is reused: the baseline may have moved since it was written."""
    started = time.monotonic()
    pins = pins or {}
    shown = [lst.path for lst in config.lists]  # a pin's own name is an implementation detail
    config = pinned_lists(config, pins)
    limit = config.compile.max_list_bytes
    hashes = [_hash_file(lst, limit) for lst in config.lists]
    for lst, sha in zip(config.lists, hashes, strict=True):
        if lst.sync and sha != pins[lst.sync].state.sha256:
            raise ListError(
                f"list {lst.name!r}: {lst.path} is not serial {pins[lst.sync].state.serial} "
                "of the authority (its SHA-256 differs)"
            )
    versions = [
        str(pins[lst.sync].state.serial) if lst.sync else sha[:12]
        for lst, sha in zip(config.lists, hashes, strict=True)
    ]
    digest = _digest(config, hashes, versions)
    baseline = baseline or guard.Baseline({}, {})
    path = index_dir(config) / f"{digest}.fidx"
    if reuse and path.exists():
        try:
            index = CompiledIndex(path)
        except IndexFormatError:
            pass
        else:
            try:
                report = _report_from(index, path, digest, time.monotonic() - started)
            finally:
                index.close()
            for lst, source in zip(config.lists, report.sources, strict=False):
                _guard(lst, source.accepted, source.invalid, source.sha256, baseline)
            return report
    builder = IndexBuilder()
    sources = []
    categories: set[str] = set()  # of opt-in rules: each gets a bit (docs/profiles.md)
    for number, (lst, sha, version) in enumerate(zip(config.lists, hashes, versions, strict=True)):
        # One list in memory at a time; the builder keeps only the names.
        parsed, parsed_sha = _parse_list(lst, limit)
        if parsed_sha != sha:
            raise ListError(f"list {lst.name!r}: {lst.path} changed while it was compiled")
        _guard(lst, parsed.accepted, parsed.invalid, sha, baseline)
        sources.append(_source_info(replace(lst, path=shown[number]), version, sha, parsed))
        for kind, names in parsed.groups.items():
            rule = _rule(number, lst, kind)
            builder.add(names, rule, kind.ref)
            if lst.opt_in and names:
                categories.add(rule.category)
        del parsed
    if len(categories) > MAX_CATEGORIES:
        raise ListError(
            f"opt-in lists carry {len(categories)} categories; at most {MAX_CATEGORIES} "
            "(one bit each in a profile mask)"
        )
    if config.blocking.bypass_canaries:
        number = len(sources)
        sources.append(
            SourceInfo(
                CANARY_SOURCE,
                "builtin",
                False,
                EDE_BLOCKED,
                "bypass-canary",
                None,
                "",
                "builtin",
                len(CANARIES),
                len(CANARIES),
                names=len(CANARIES),
                sha256="",
            )
        )
        for name, action in CANARIES:
            builder.add([name], Rule(number, Scope.EXACT, False, "bypass-canary", action))
    meta = {
        "digest": digest,
        "sources": [asdict(s) for s in sources],
        "categories": sorted(categories),
    }
    distinct = builder.write(path, meta)
    return CompileReport(path, digest, tuple(sources), distinct, time.monotonic() - started, False)


def _parse_list(lst: ListConfig, limit: int) -> tuple[ParsedList, str]:
    """Parse a list file streamed a chunk at a time: a large list is never in
    memory whole (20 MB of text for a million names), only its packed names.
    Also the SHA-256 of the bytes parsed."""
    options = ParseOptions(
        str(lst.path), plain_scope=lst.mode, allow_tld=lst.allow_tld, join_rpz_pairs=True
    )
    with _open_list(lst, limit) as handle:
        fmt = lst.format
        if fmt is None:
            fmt = detect_format(handle.read(FORMAT_HEAD))
            handle.seek(0)
        reader = _HashingReader(handle)
        parsed = parse(reader, fmt, options)
        reader.read()  # what the parser left unread still counts
        return parsed, reader.digest.hexdigest()


def _guard(
    lst: ListConfig, accepted: int, invalid: int, sha: str, baseline: guard.Baseline
) -> None:
    if not lst.sync:  # an authority list is signed: its size is the authority's
        thresholds = guard.Thresholds(lst.min_entries, lst.max_invalid, lst.max_shrink)
        guard.check(lst.name, thresholds, accepted, invalid, sha, baseline)


def _rule(number: int, lst: ListConfig, kind: EntryKind) -> Rule:
    allow = kind.allow or lst.kind == "allow"
    return Rule(number, kind.scope, allow, kind.category or lst.category, kind.action)


def _source_info(lst: ListConfig, version: str, sha256: str, parsed: ParsedList) -> SourceInfo:
    """``version`` in EDE text and metrics: the authority's serial for a
    synced list, else the start of the file's SHA-256 (``sha256``, whole)."""
    return SourceInfo(
        name=lst.name,
        version=version,
        sha256=sha256,
        mandatory=lst.mandatory,
        ede=lst.ede_code,
        category=lst.category,
        action=lst.action.value if lst.action else None,
        path=str(lst.path),
        format=parsed.format.value,
        entries=parsed.entries,
        accepted=parsed.accepted,
        invalid=parsed.invalid,
        ignored=parsed.ignored,
        names=parsed.names,
        opt_in=lst.opt_in,
        https_only=lst.https_only,
        problems=[p.describe(str(lst.path)) for p in parsed.problems],
        reasons=dict(parsed.reasons),
    )


def _report_from(index: CompiledIndex, path: Path, digest: str, seconds: float) -> CompileReport:
    return CompileReport(path, digest, sources_of(index), index.count, seconds, True)


def remove_stale_indexes(config: Config, keep: set[Path]) -> None:
    """Delete compiled indexes no longer in use (safe while mapped: unlinking a
    mapped file keeps its pages until the last mapping goes)."""
    directory = index_dir(config)
    if not directory.is_dir():
        return
    for candidate in directory.glob("*.fidx"):
        if candidate not in keep:
            candidate.unlink(missing_ok=True)
    for leftover in directory.glob("*.tmp"):
        if time.time() - leftover.stat().st_mtime > 3600:
            leftover.unlink(missing_ok=True)
