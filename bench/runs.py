"""What every scenario script shares: its dataset and where its results go.

Why its own module: ``bench/swap`` and ``bench/sync`` run on the same 100k/1M
lists that ``bench/run`` builds (cached under ``bench/results/work/data``),
and write their tables the same way, so that a result is always a ``.md``
table beside a ``.json`` with every figure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from bench import data as bdata
from bench.targets import REPO, die_with_parent

RESULTS: Final = REPO / "bench" / "results"


def timestamp() -> str:
    """UTC stamp naming a run's scratch directory and result files."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def dataset() -> bdata.Dataset:
    """The 100k and 1M lists, query files and zone, built once from ../shared/data."""
    return bdata.prepare(
        REPO.parent / "shared" / "data",
        RESULTS / "work" / "data",
        bdata.DataParams(sizes=(100_000, 1_000_000)),
    )


def save(kind: str, stamp: str, table: str, result: Any) -> None:
    """Write ``<kind>-<stamp>.md`` (the table) and ``.json`` (the dataclass ``result``)."""
    (RESULTS / f"{kind}-{stamp}.md").write_text(table + "\n")
    (RESULTS / f"{kind}-{stamp}.json").write_text(json.dumps(asdict(result), indent=2))
    print(f"results: {RESULTS / f'{kind}-{stamp}.md'}")


@contextmanager
def background_load(cmd: list[str], output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the open-loop ``dnsperf -v`` command ``cmd`` while the block runs.

    On the way out dnsperf gets SIGINT, on which it stops sending and prints its
    summary (its per-query lines are already in ``output``), and is waited for.
    """
    with output.open("wb") as out:
        load = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - the harness runs no threads
        )
        try:
            yield load
        finally:
            if load.poll() is None:
                load.send_signal(signal.SIGINT)
            try:
                load.wait(60)
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait()
