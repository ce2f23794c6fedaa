"""The ``audit`` configuration section, the recorder's thread, and event fields."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from filterd.audit.chain import decode_record
from filterd.audit.events import next_boundary, privacy_floor, stats_fields
from filterd.audit.recorder import AuditRecorder
from filterd.audit.verify import verify
from filterd.config import AuditConfig
from filterd.config.load import parse_config
from filterd.errors import ConfigError
from filterd.stats import CacheStats, WorkerStats

UPSTREAM = "upstream: {servers: ['192.0.2.1']}\n"


def test_defaults_and_paths() -> None:
    config = parse_config(UPSTREAM + "state_dir: /var/lib/filterd\n", "f.yaml", Path("/etc"))
    audit = config.audit
    assert audit == AuditConfig()
    assert (audit.enabled, audit.max_bytes, audit.keep, audit.stats_interval) == (
        True, 64 * 1024 * 1024, 12, 3600.0,
    )  # fmt: skip
    assert audit.resolve(config.state_dir) == Path("/var/lib/filterd/audit/audit.jsonl")
    moved = parse_config(UPSTREAM + "audit: {path: trail/a.jsonl}\n", "f.yaml", Path("/etc/fd"))
    assert moved.audit.resolve(moved.state_dir) == Path("/etc/fd/trail/a.jsonl")


def test_strict_keys_with_their_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            UPSTREAM + "audit:\n  max_bytes: 100\n  keep: many\n  stats_interval: 0.5\n"
            "  enable: false\n",
            "f.yaml",
        )
    assert caught.value.problems == [
        "f.yaml:3: audit.max_bytes: must be between 4096 and 1099511627776, got 100",
        "f.yaml:4: audit.keep: must be a whole number, got str 'many'",
        "f.yaml:5: audit.stats_interval: must be at least 1 second",
        "f.yaml:6: audit.enable: unknown key",
    ]


def test_records_are_written_in_order_off_the_loop(tmp_path: Path) -> None:
    recorder = AuditRecorder(AuditConfig(path=tmp_path / "a" / "audit.jsonl"), tmp_path)

    async def scenario() -> None:
        recorder.open()
        recorder.emit("start", {"version": "x"})
        for generation in range(50):
            recorder.emit("reload", {"result": "success", "generation": generation})
        await recorder.close()

    asyncio.run(scenario())
    lines = recorder.path.read_bytes().splitlines()
    assert [decode_record(line).get("generation") for line in lines] == [None, *range(50)]
    assert recorder.records_written == 51 and recorder.write_failures == 0
    assert verify(recorder.path).ok


def test_a_write_failure_is_counted_and_filtering_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    recorder = AuditRecorder(AuditConfig(path=blocker / "audit.jsonl"), tmp_path)

    async def scenario() -> None:
        recorder.open()
        recorder.emit("start", {"version": "x"})
        recorder.emit("stop", {"clean": True})
        await recorder.flush()
        await recorder.close()
        recorder.emit("stop", {"clean": True})  # after close: counted, not raised

    asyncio.run(scenario())
    assert recorder.write_failures == 3 and recorder.records_written == 0


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    recorder = AuditRecorder(AuditConfig(enabled=False), tmp_path)

    async def scenario() -> None:
        recorder.open()
        recorder.emit("start", {})
        await recorder.close()

    asyncio.run(scenario())
    assert not (tmp_path / "audit").exists()


def test_stats_fields_from_merged_worker_stats() -> None:
    merged = WorkerStats(
        queries={
            ("udp", "A", "blocked"): 2,
            ("udp", "A", "forwarded"): 5,
            ("udp", "A", "servfail"): 0,
            ("udp", "MX", "cached"): 0,
            ("tcp", "AAAA", "blocked"): 1,
        },
        blocked={("national", "gambling", "nxdomain"): 3},
        cache=CacheStats(hits=9),
    )
    top = [{"name": "casino.example", "category": "gambling", "count": 3}]
    fields = stats_fields(merged, top, 3600.0)
    assert fields == {
        "boundary": "1970-01-01T01:00:00.000Z",
        "queries": {"tcp": {"AAAA": {"blocked": 1}}, "udp": {"A": {"blocked": 2, "forwarded": 5}}},
        "blocked": [{"list": "national", "category": "gambling", "action": "nxdomain", "count": 3}],
        "blocked_top": [{"name": "casino.example", "category": "gambling", "count": 3}],
    }
    assert stats_fields(WorkerStats(), [], None) == {"boundary": None, "queries": {}, "blocked": []}


def test_statistics_land_on_wall_clock_boundaries() -> None:
    assert next_boundary(7199.5, 3600) == 7200
    assert next_boundary(7200.0, 3600) == 10800  # strictly after: never the same one twice
    assert next_boundary(61.0, 60) == 120


def test_blocked_names_are_kept_only_in_records_covering_an_hour() -> None:
    """The privacy floor: whatever ``stats_interval`` is, a record names
    blocked list entries only on the hour, a full hour or more into its run."""
    top = [{"name": "casino.example", "category": "gambling", "count": 3}]
    hour = 1_795_000_000 - 1_795_000_000 % 3600  # a whole UTC hour

    def kept(boundary: float | None, started: float | None) -> bool:
        fields = stats_fields(WorkerStats(), top, boundary)
        return "blocked_top" in privacy_floor(fields, started)

    assert kept(hour, hour - 3600) and kept(hour, hour - 7201)
    assert not kept(hour, hour - 3599)  # the first hour of a run: less than an hour of queries
    assert not kept(hour + 1, hour - 7200)  # stats_interval: 1, between hours
    assert not kept(hour + 1800, hour - 7200)  # half-hourly
    assert not kept(None, hour - 7200)  # the record at stop: the last, partial interval
    assert not kept(hour, None)
    assert privacy_floor({"boundary": None, "queries": {}}, None) == {
        "boundary": None,
        "queries": {},
    }


def test_the_recorder_applies_the_privacy_floor(tmp_path: Path) -> None:
    recorder = AuditRecorder(AuditConfig(path=tmp_path / "a" / "audit.jsonl"), tmp_path)
    top = [{"name": "casino.example", "category": "gambling", "count": 3}]

    async def scenario() -> None:
        recorder.open()
        recorder.emit("start", {"version": "x"})
        now = time.time()
        recorder.emit("stats", stats_fields(WorkerStats(), top, next_boundary(now, 1)))
        recorder.emit("stats", stats_fields(WorkerStats(), top, None))
        await recorder.close()

    asyncio.run(scenario())
    records = [decode_record(line) for line in recorder.path.read_bytes().splitlines()]
    assert [r["event"] for r in records] == ["start", "stats", "stats"]
    assert all("blocked_top" not in r for r in records)
