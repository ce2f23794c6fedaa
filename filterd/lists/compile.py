"""Compiling the configured lists into one index file.

``compile_lists`` is the whole job of the compiler process: read every list,
parse it, merge all entries into one ``IndexBuilder`` and write the index
into the state directory. It runs in a child process (see
``filterd.lists.compiler``) so that neither the parse's CPU nor its memory
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
import pickle
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from filterd.config import Config, ListConfig
from filterd.errors import ListError
from filterd.lists.parsers import (
    FORMAT_HEAD,
    EntryKind,
    ParsedList,
    ParseOptions,
    detect_format,
    parse,
)
from filterd.lists.sources import SourceInfo, sources_of
from filterd.matching.build import IndexBuilder
from filterd.matching.index import CompiledIndex, IndexFormatError
from filterd.matching.rules import Action, Rule, Scope
from filterd.sync.store import load_state
from filterd.wire.codes import EDE_BLOCKED

COMPILER_VERSION: Final = "5"
MAX_LIST_BYTES: Final = 1 << 30
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


async def compile_in_child(config: Config) -> CompileReport:
    """Run ``compile_lists(config)`` in a fresh ``filterd.lists.compiler``
    process; raise ``ListError`` on failure. It runs in its own session, so
    signals meant for the daemon (SIGHUP, a terminal's SIGINT) do not reach
    it, and so that it has a scheduler group of its own to lower
    (``filterd.lists.compiler.run_idle``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "filterd.lists.compiler",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        output, _ = await process.communicate(pickle.dumps(config))
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0 or not output:
        raise ListError(f"list compiler exited with status {process.returncode}")
    result = pickle.loads(output)
    if isinstance(result, CompileReport):
        return result
    raise ListError(str(result))


@contextmanager
def _open_list(lst: ListConfig) -> Iterator[BinaryIO]:
    """A list file open for reading, within the size limit; a read error
    while it is open (here or in the caller) becomes a ``ListError``."""
    try:
        if lst.path.stat().st_size > MAX_LIST_BYTES:
            raise ListError(f"{lst.path}: list larger than {MAX_LIST_BYTES} bytes")
        with lst.path.open("rb") as handle:
            yield handle
    except OSError as exc:
        raise ListError(f"{lst.path}: cannot read list {lst.name!r}: {exc.strerror}") from None


def _hash_file(lst: ListConfig) -> str:
    """SHA-256 of a list file, read in chunks (the content is not kept)."""
    digest = hashlib.sha256()
    with _open_list(lst) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(config: Config, hashes: list[str]) -> str:
    shaping = {
        "compiler": COMPILER_VERSION,
        "canaries": config.blocking.bypass_canaries,
        "lists": [
            [lst.name, lst.format, lst.kind, int(lst.mode), lst.mandatory, lst.category,
             lst.action, lst.ede_code, lst.allow_tld, sha, _version(config, lst, sha)]
            for lst, sha in zip(config.lists, hashes, strict=True)
        ],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(shaping, default=str).encode()).hexdigest()[:32]


def index_dir(config: Config) -> Path:
    return config.state_dir / "index"


def compile_lists(config: Config, *, reuse: bool = True) -> CompileReport:
    """Parse every configured list and write (or reuse) the compiled index."""
    started = time.monotonic()
    hashes = [_hash_file(lst) for lst in config.lists]
    digest = _digest(config, hashes)
    path = index_dir(config) / f"{digest}.fidx"
    if reuse and path.exists():
        try:
            index = CompiledIndex(path)
        except IndexFormatError:
            pass
        else:
            try:
                return _report_from(index, path, digest, time.monotonic() - started)
            finally:
                index.close()
    builder = IndexBuilder()
    sources = []
    for number, (lst, sha) in enumerate(zip(config.lists, hashes, strict=True)):
        # One list in memory at a time; the builder keeps only the names.
        parsed = _parse_list(lst)
        sources.append(_source_info(lst, _version(config, lst, sha), parsed, sha))
        for kind, names in parsed.groups.items():
            builder.add(names, _rule(number, lst, kind), kind.ref)
        del parsed
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
            )
        )
        for name, action in CANARIES:
            builder.add([name], Rule(number, Scope.EXACT, False, "bypass-canary", action))
    meta = {"digest": digest, "sources": [asdict(s) for s in sources]}
    distinct = builder.write(path, meta)
    return CompileReport(path, digest, tuple(sources), distinct, time.monotonic() - started, False)


def _parse_list(lst: ListConfig) -> ParsedList:
    """Parse a list file streamed a chunk at a time: a large list is never in
    memory whole (20 MB of text for a million names), only its packed names."""
    options = ParseOptions(
        str(lst.path), plain_scope=lst.mode, allow_tld=lst.allow_tld, join_rpz_pairs=True
    )
    with _open_list(lst) as handle:
        fmt = lst.format
        if fmt is None:
            fmt = detect_format(handle.read(FORMAT_HEAD))
            handle.seek(0)
        return parse(handle, fmt, options)


def _rule(number: int, lst: ListConfig, kind: EntryKind) -> Rule:
    allow = kind.allow or lst.kind == "allow"
    return Rule(number, kind.scope, allow, kind.category or lst.category, kind.action)


def _version(config: Config, lst: ListConfig, sha256: str) -> str:
    """A list's version in EDE text and metrics: the authority's serial for a
    synced list, else the start of the file's SHA-256."""
    if lst.sync:
        state = load_state(config.state_dir, lst.sync)
        if state is not None:
            return str(state.serial)
    return sha256[:12]


def _source_info(lst: ListConfig, version: str, parsed: ParsedList, sha256: str) -> SourceInfo:
    return SourceInfo(
        name=lst.name,
        version=version,
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
        problems=[p.describe(str(lst.path)) for p in parsed.problems],
        reasons=dict(parsed.reasons),
        sha256=sha256,
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
