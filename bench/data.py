"""Generate every input of a benchmark run from ../shared/data into a scratch directory.

Why generated and not committed: the inputs are derived from third-party data
(see shared/data/SOURCES.md) and are tens of MB; keeping only the recipe here
makes a run reproducible from the shared copy with a fixed seed. Outputs go to
a git-ignored scratch directory and are reused while the recipe is unchanged.

What is built:

* the blocklist of each size, as a plain domains file (filterd) and as an RPZ
  zone (Unbound) with ``name CNAME .`` and ``*.name CNAME .`` so the two
  targets enforce exactly the same set of names and subdomains;
* one zone for the root ``.`` served by NSD as the upstream: A, AAAA, MX, TXT
  and HTTPS for the ranked names, A/AAAA for the blocked names the queries use
  (so an unfiltered resolver would answer NOERROR, which makes a block
  observable), and the probe names used to time list enforcement;
* per size a "hit-heavy" dnsperf file (Zipf by rank, a share of blocked names,
  a share of non-existent names, a qtype mix) and its de-duplicated "warm"
  file; one "miss" file where every query is unique.

The hit-heavy file is the default traffic of ``bench/run`` and is meant to
look like a few minutes of a small ISP's queries: 2,000,000 queries whose
allowed part (93 %) holds about 171,000 distinct questions drawn Zipf-like
(s = 1) from the ranking, so that a server's cache has a realistic working
set to hold (``distinct_ranked``, at least ``MIN_DISTINCT_RANKED``), not
only the head of the distribution. A million draws gave about 124,000.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

UNION: Final = Path("scale/union-permissive.domains.gz")
RANKING: Final = Path("ranking/cisco-umbrella-top-100k_2026-07-24.txt.gz")
RPZ_ORIGIN: Final = "rpz"
# "*." + name + "." + RPZ_ORIGIN must fit the 255-octet wire limit: n + 8 <= 255.
MAX_NAME_CHARS: Final = 255 - 8
_NAME_RE: Final = re.compile(
    r"(?:[a-z0-9_-]{1,63}\.)+(?=[a-z0-9_-]*[a-z_-])[a-z0-9_-]{1,63}",
)
QTYPE_MIX: Final = (("A", 0.60), ("AAAA", 0.25), ("HTTPS", 0.08), ("MX", 0.04), ("TXT", 0.03))
TTLS: Final = (300, 600, 900, 1800, 3600)
RECIPE_VERSION: Final = 6
MIN_DISTINCT_RANKED: Final = 150_000
"""Distinct allowed questions (ranked names x qtypes) the full hit-heavy file must hold."""
DEFAULT_SEED: Final = 20260724


@dataclass(frozen=True, slots=True)
class DataParams:
    """Everything that shapes the generated data; a change regenerates it."""

    sizes: tuple[int, ...]
    top_n: int = 100_000
    hit_queries: int = 2_000_000
    miss_queries: int = 3_000_000
    blocked_share: float = 0.05
    nx_share: float = 0.02
    nx_pool: int = 5_000
    zipf_s: float = 1.0
    seed: int = DEFAULT_SEED


@dataclass(frozen=True, slots=True)
class SizeData:
    """The files and facts for one blocklist size."""

    size: int
    domains_path: Path
    rpz_path: Path
    hit_path: Path
    warm_path: Path
    warm_queries: int
    distinct_ranked: int  # distinct questions under allowed ranked names (the cacheable set)
    probes: tuple[str, str]
    blocked_share: float  # share of hit-heavy queries that the list blocks (incl. ranked names)
    expected_nxdomain: float  # blocked + non-existent share of the hit-heavy file


@dataclass(frozen=True, slots=True)
class Dataset:
    """All generated inputs of a run."""

    zone_path: Path
    zone_records: int
    miss_path: Path
    miss_queries: int
    sizes: dict[int, SizeData] = field(default_factory=dict)


def is_valid_name(name: str) -> bool:
    """A multi-label DNS name in lowercase LDH+underscore whose TLD is not numeric (no IPs)."""
    return len(name) <= MAX_NAME_CHARS and _NAME_RE.fullmatch(name) is not None


def _read_gz_lines(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            yield line.strip().rstrip(".").lower()


def _first_valid(path: Path, count: int) -> list[str]:
    """The first ``count`` valid, de-duplicated names of a gzipped list, in file order."""
    seen: set[str] = set()
    out: list[str] = []
    for name in _read_gz_lines(path):
        if name in seen or not is_valid_name(name):
            continue
        seen.add(name)
        out.append(name)
        if len(out) == count:
            break
    return out


def load_blocklist(shared: Path, count: int) -> list[str]:
    """The first ``count`` valid, de-duplicated names of the scale union, in file order."""
    out = _first_valid(shared / UNION, count)
    if len(out) < count:
        raise ValueError(f"{UNION} has only {len(out)} valid names, {count} requested")
    return out


def load_ranking(shared: Path, top_n: int) -> list[str]:
    """The top ``top_n`` valid ranked names (rank = line number; invalid lines are skipped)."""
    return _first_valid(shared / RANKING, top_n)


def is_blocked(name: str, blocked: set[str] | frozenset[str]) -> bool:
    """Suffix semantics of a domains list: the name or any parent is listed."""
    labels = name.split(".")
    return any(".".join(labels[i:]) in blocked for i in range(len(labels)))


def zipf_weights(ranks: Sequence[int], s: float) -> list[float]:
    """Cumulative Zipf weights (rank ** -s) for ``random.choices(cum_weights=...)``."""
    return list(itertools.accumulate(r**-s for r in ranks))


def _draw(rng: random.Random, cum_weights: Sequence[float], k: int) -> list[int]:
    """``k`` indices drawn with the given cumulative weights."""
    return rng.choices(range(len(cum_weights)), cum_weights=cum_weights, k=k)


def _qtypes(rng: random.Random, count: int) -> list[str]:
    names = [q for q, _ in QTYPE_MIX]
    return rng.choices(names, weights=[p for _, p in QTYPE_MIX], k=count)


def _random_label(rng: random.Random, bits: int) -> str:
    """A random lowercase hex label of ``bits`` random bits (zero-padded)."""
    return f"{rng.getrandbits(bits):0{(bits + 3) // 4}x}"


def _write_lines(path: Path, lines: Iterable[str]) -> int:
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="ascii") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
            n += 1
    tmp.replace(path)
    return n


def write_rpz(path: Path, names: Sequence[str]) -> None:
    """An RPZ zone: ``CNAME .`` (NXDOMAIN) for each name and for ``*.name``."""
    head = [
        "$TTL 300",
        f"$ORIGIN {RPZ_ORIGIN}.",
        "@ IN SOA localhost. root.localhost. 1 3600 600 86400 300",
        "  IN NS localhost.",
    ]

    def body() -> Iterator[str]:
        yield from head
        for name in names:
            yield f"{name} CNAME ."
            yield f"*.{name} CNAME ."

    _write_lines(path, body())


@dataclass(slots=True)
class _Zone:
    """Accumulates the upstream root zone; one owner name gets records once."""

    rng: random.Random
    owners: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)

    def _ttl(self) -> int:
        return self.rng.choice(TTLS)

    def _addr(self) -> tuple[str, str]:
        a, b, c = self.rng.randrange(256), self.rng.randrange(256), self.rng.randrange(1, 255)
        return f"198.{18 + (a & 1)}.{b}.{c}", f"2001:db8:{a:x}:{b:x}::{c:x}"

    def add(self, name: str, *, full: bool) -> None:
        if name in self.owners:
            return
        self.owners.add(name)
        v4, v6 = self._addr()
        ttl = self._ttl()
        self.lines.append(f"{name}. {ttl} IN A {v4}")
        self.lines.append(f"{name}. {ttl} IN AAAA {v6}")
        if full:
            self.lines.append(f"{name}. {ttl} IN MX 10 {name}.")
            self.lines.append(f'{name}. {ttl} IN TXT "v=spf1 -all"')
            self.lines.append(f'{name}. {ttl} IN HTTPS 1 . alpn="h2,h3"')

    def write(self, path: Path) -> int:
        head = [
            "$TTL 3600",
            ". 86400 IN SOA ns.nsd-bench. hostmaster.nsd-bench. 1 1800 900 604800 300",
            ". 86400 IN NS ns.nsd-bench.",
            "ns.nsd-bench. 86400 IN A 127.0.0.1",
        ]
        _write_lines(path, [*head, *self.lines])
        return len(self.lines) + 3


def _hit_heavy(
    *,
    rng: random.Random,
    params: DataParams,
    ranking: Sequence[str],
    rank_cum: Sequence[float],
    nx_pool: Sequence[str],
    blocklist: Sequence[str],
) -> list[str]:
    """Names of the hit-heavy file (qtypes are added by the caller)."""
    n = params.hit_queries
    ranked = _draw(rng, rank_cum, n)
    nx = _draw(rng, zipf_weights(range(1, len(nx_pool) + 1), params.zipf_s), n)
    names: list[str] = []
    for i in range(n):
        kind = rng.random()
        if kind < params.blocked_share:
            name = blocklist[rng.randrange(len(blocklist))]
            if rng.random() < 0.5 and len(name) + 4 <= MAX_NAME_CHARS:
                name = "www." + name
        elif kind < params.blocked_share + params.nx_share:
            name = nx_pool[nx[i]]
        else:
            name = ranking[ranked[i]]
        names.append(name)
    return names


def _fingerprint(shared: Path, params: DataParams) -> str:
    src = {str(p): (shared / p).stat().st_size for p in (UNION, RANKING)}
    blob = json.dumps([RECIPE_VERSION, asdict(params), src], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _manifest_to_dataset(raw: dict[str, object]) -> Dataset:
    sizes_raw = raw["sizes"]
    assert isinstance(sizes_raw, dict)
    sizes: dict[int, SizeData] = {}
    for key, s in sizes_raw.items():
        sizes[int(key)] = SizeData(
            size=int(s["size"]),
            domains_path=Path(s["domains_path"]),
            rpz_path=Path(s["rpz_path"]),
            hit_path=Path(s["hit_path"]),
            warm_path=Path(s["warm_path"]),
            warm_queries=int(s["warm_queries"]),
            distinct_ranked=int(s["distinct_ranked"]),
            probes=(str(s["probes"][0]), str(s["probes"][1])),
            blocked_share=float(s["blocked_share"]),
            expected_nxdomain=float(s["expected_nxdomain"]),
        )
    return Dataset(
        zone_path=Path(str(raw["zone_path"])),
        zone_records=int(str(raw["zone_records"])),
        miss_path=Path(str(raw["miss_path"])),
        miss_queries=int(str(raw["miss_queries"])),
        sizes=sizes,
    )


def _paths(ds: Dataset) -> list[Path]:
    out = [ds.zone_path, ds.miss_path]
    for s in ds.sizes.values():
        out += [s.domains_path, s.rpz_path, s.hit_path, s.warm_path]
    return out


def _dataset_to_manifest(ds: Dataset, fingerprint: str) -> dict[str, object]:
    return {
        "fingerprint": fingerprint,
        "zone_path": str(ds.zone_path),
        "zone_records": ds.zone_records,
        "miss_path": str(ds.miss_path),
        "miss_queries": ds.miss_queries,
        "sizes": {
            str(k): {
                **{f: str(v) for f, v in asdict(s).items() if f.endswith("_path")},
                "size": s.size,
                "warm_queries": s.warm_queries,
                "distinct_ranked": s.distinct_ranked,
                "probes": list(s.probes),
                "blocked_share": s.blocked_share,
                "expected_nxdomain": s.expected_nxdomain,
            }
            for k, s in ds.sizes.items()
        },
    }


def prepare(shared: Path, work: Path, params: DataParams, log: bool = True) -> Dataset:
    """Build (or reuse, if the recipe is unchanged) all inputs under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(shared, params)
    manifest = work / "data.json"
    if manifest.exists():
        raw = json.loads(manifest.read_text())
        if raw.get("fingerprint") == fingerprint:
            ds = _manifest_to_dataset(raw)
            if all(p.exists() for p in _paths(ds)):
                if log:
                    print(f"data: reusing {work} (fingerprint {fingerprint})", flush=True)
                return ds
        manifest.unlink()

    rng = random.Random(params.seed)
    if log:
        print(f"data: building into {work} ...", flush=True)
    biggest = max(params.sizes)
    full_list = load_blocklist(shared, biggest)
    ranking = load_ranking(shared, params.top_n)
    full_set = frozenset(full_list)
    zone = _Zone(rng)
    for name in ranking:
        zone.add(name, full=True)
    # The union is permissive (it lists facebook.com, bing.com, skype.com, ...):
    # ranked names that the biggest list blocks would make ~40 % of Zipf traffic
    # blocked at 1M and ~8 % at 100k. They are left out of the "allowed" traffic,
    # keeping their original rank weights for the rest, so the blocked share is
    # the configured one and the same for every size.
    allowed_idx = [i for i, name in enumerate(ranking) if not is_blocked(name, full_set)]
    allowed = [ranking[i] for i in allowed_idx]
    rank_cum = zipf_weights([i + 1 for i in allowed_idx], params.zipf_s)
    if log:
        print(
            f"data: ranking top {len(ranking)}: {len(ranking) - len(allowed)} names blocked by "
            f"the {size_tag(biggest)} list are kept out of the allowed traffic",
            flush=True,
        )

    # Non-existent names: a random label under a ranked name; a small pool drawn
    # Zipf-like, because real NXDOMAIN traffic repeats (typos, search-list junk).
    nx_pool = [
        f"nx-{_random_label(rng, 40)}.{allowed[p]}" for p in _draw(rng, rank_cum, params.nx_pool)
    ]

    sizes: dict[int, SizeData] = {}
    for size in sorted(params.sizes):
        blocklist = full_list[:size]
        tag = size_tag(size)
        domains_path = work / f"list-{tag}.domains"
        rpz_path = work / f"list-{tag}.rpz"
        _write_lines(domains_path, blocklist)
        write_rpz(rpz_path, blocklist)
        probes = (blocklist[-1], "www." + blocklist[-1])
        for p in probes:
            zone.add(p, full=False)

        names = _hit_heavy(
            rng=rng,
            params=params,
            ranking=allowed,
            rank_cum=rank_cum,
            nx_pool=nx_pool,
            blocklist=blocklist,
        )
        qtypes = _qtypes(rng, len(names))
        lines = [f"{n} {q}" for n, q in zip(names, qtypes, strict=True)]
        hit_path = work / f"hit-{tag}.txt"
        _write_lines(hit_path, lines)
        warm_path = work / f"warm-{tag}.txt"
        warm_n = _write_lines(warm_path, dict.fromkeys(lines))

        listed = set(blocklist)
        nx_set = set(nx_pool)
        verdict: dict[str, tuple[bool, bool]] = {}
        for name in dict.fromkeys(names):
            blocked = is_blocked(name, listed)
            verdict[name] = (blocked, name in nx_set)
            if blocked and name not in nx_set:
                zone.add(name, full=False)  # resolvable upstream, so a block is observable
        # Neither blocked nor non-existent: the questions a cache must hold.
        distinct_ranked = sum(
            1 for line in dict.fromkeys(lines) if verdict[line.split(" ", 1)[0]] == (False, False)
        )
        n_blocked = sum(1 for n in names if verdict[n][0])
        n_nx = sum(1 for n in names if verdict[n][0] or verdict[n][1])
        sizes[size] = SizeData(
            size=size,
            domains_path=domains_path,
            rpz_path=rpz_path,
            hit_path=hit_path,
            warm_path=warm_path,
            warm_queries=warm_n,
            distinct_ranked=distinct_ranked,
            probes=probes,
            blocked_share=n_blocked / len(names),
            expected_nxdomain=n_nx / len(names),
        )
        if log:
            print(
                f"data: {tag}: list {len(blocklist)} names, hit-heavy {len(names)} queries "
                f"({warm_n} distinct, {distinct_ranked} allowed ranked), "
                f"blocked {n_blocked / len(names):.2%}, "
                f"expected NXDOMAIN {n_nx / len(names):.2%}, probe {probes[0]}",
                flush=True,
            )

    # Miss file: every query unique, under allowed names only (a blocked parent
    # would be answered by the filter without going upstream).
    picks = _draw(rng, rank_cum, params.miss_queries)
    qtypes = _qtypes(rng, params.miss_queries)
    miss_path = work / "miss.txt"
    miss_n = _write_lines(
        miss_path,
        (
            f"m{i:x}-{_random_label(rng, 24)}.{allowed[picks[i]]} {qtypes[i]}"
            for i in range(params.miss_queries)
        ),
    )
    zone_path = work / "root.zone"
    records = zone.write(zone_path)
    ds = Dataset(
        zone_path=zone_path,
        zone_records=records,
        miss_path=miss_path,
        miss_queries=miss_n,
        sizes=sizes,
    )
    manifest.write_text(json.dumps(_dataset_to_manifest(ds, fingerprint), indent=1))
    if log:
        print(f"data: zone {records} records, miss file {miss_n} queries", flush=True)
    return ds


def size_tag(size: int) -> str:
    """``100000`` -> ``100k``, ``1000000`` -> ``1m``."""
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}m"
    if size % 1000 == 0:
        return f"{size // 1000}k"
    return str(size)


def parse_size(text: str) -> int:
    """``100k`` -> 100000, ``1m`` -> 1000000, ``2500`` -> 2500."""
    t = text.strip().lower()
    mult = 1
    if t.endswith("k"):
        mult, t = 1000, t[:-1]
    elif t.endswith("m"):
        mult, t = 1_000_000, t[:-1]
    value = int(float(t) * mult)
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value
