"""A reload keeps what only a restart changes (``keep_restart_only_settings``)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from filterd.config import AdminConfig, AuditConfig, BlockPageConfig, Config, ServerConfig
from filterd.supervisor.settings import keep_restart_only_settings


def test_a_reload_keeps_restart_only_settings_and_says_so(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    running = Config(state_dir=tmp_path / "running")
    changed = replace(
        running,
        audit=AuditConfig(enabled=False),
        admin=AdminConfig(max_connections=8),
        block_page=BlockPageConfig(enabled=True),
        state_dir=tmp_path / "elsewhere",
        server=replace(running.server, workers=3, max_inflight=77),
    )
    with caplog.at_level(logging.WARNING):
        kept = keep_restart_only_settings(running, changed)
    assert kept.audit == running.audit and kept.admin == running.admin
    assert kept.block_page == running.block_page and kept.state_dir == running.state_dir
    assert kept.server.workers == running.server.workers
    assert kept.server.max_inflight == 77  # not restart-only: the reload takes it
    assert [r.getMessage() for r in caplog.records] == [
        "audit settings changed: take effect on restart",
        "admin settings changed: take effect on restart",
        "block_page settings changed: take effect on restart",
        "state_dir changed: takes effect on restart",
        "server.listen/udp/tcp/workers changed: takes effect on restart",
    ]


def test_an_unchanged_reload_warns_of_nothing(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    running = Config(state_dir=tmp_path, server=ServerConfig())
    with caplog.at_level(logging.WARNING):
        assert keep_restart_only_settings(running, running) == running
    assert not caplog.records
