"""``explain``: the group, profile, rule, schedule and action of one answer,
and the supervisor's entry point for the block page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from filterd.config import Config
from filterd.config.load import parse_config
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.matching.matcher import Matcher
from filterd.model.rules import Action
from filterd.model.sources import SourceInfo
from filterd.supervisor.blockpage import Explainer

CONFIG = """
upstream: {servers: ['192.0.2.1']}
blocking: {sinkhole: {ipv4: 192.0.2.80}}
lists:
  - {name: national, path: national.txt, mandatory: true, category: gambling}
  - {name: games, path: games.txt, category: games, opt_in: true, https_only: true}
groups:
  school: {networks: ["10.1.0.0/16"], profile: page}
profiles:
  page:
    scheduled: {games: school-hours}
    action: sinkhole
    https_action: nxdomain
    safe_search: true
state_dir: state
"""


@dataclass
class Served:
    """What ``Installs`` exposes of the served generation."""

    config: Config
    serving: Matcher | None = None
    sources: tuple[SourceInfo, ...] = ()


MONDAY_SCHOOL = datetime.fromisoformat("2026-09-07T08:00+07:00").timestamp()
MONDAY_EVENING = datetime.fromisoformat("2026-09-07T20:00+07:00").timestamp()


def test_the_supervisor_explains_on_the_index_it_serves(tmp_path: Path) -> None:
    (tmp_path / "national.txt").write_text("casino.example\n")
    (tmp_path / "games.txt").write_text("games.example\n")
    config = parse_config(CONFIG, "c.yaml", tmp_path)
    served = Served(config)
    supervisor = Explainer(served)
    assert supervisor.explain(b"games.example", "10.1.0.5", MONDAY_SCHOOL) is None  # nothing served
    served.serving, served.sources = open_matcher(compile_lists(config).index_path)
    try:
        found = supervisor.explain(b"www.games.example", "10.1.0.5", MONDAY_SCHOOL)
        assert found is not None
        assert (found.group, found.profile, found.blocked) == ("school", "page", True)
        assert found.decision.entry == b"games.example" and found.category == "games"
        assert found.action is Action.NXDOMAIN  # https_only: no block page, a DNS answer
        assert found.ede == 17 and not found.mandatory
        assert found.schedule == "school-hours (mon-fri 07:00-17:00)"
        assert found.at.isoformat() == "2026-09-07T08:00:00+07:00"

        evening = supervisor.explain(b"www.games.example", "10.1.0.5", MONDAY_EVENING)
        assert evening is not None and not evening.blocked
        assert evening.not_applied == (("games", "schedule school-hours not active"),)

        casino = supervisor.explain(b"casino.example", "10.1.0.5", MONDAY_EVENING)
        assert casino is not None and casino.blocked and casino.mandatory
        assert (casino.action, casino.ede, casino.source and casino.source.name) == (
            Action.SINKHOLE, 16, "national",
        )  # fmt: skip
        anyone = supervisor.explain(b"casino.example", None, MONDAY_EVENING)
        assert anyone is not None and (anyone.group, anyone.action) == ("default", Action.NXDOMAIN)

        google = supervisor.explain(b"www.google.com", "10.1.0.5", MONDAY_EVENING)
        assert google is not None and google.rewrite == "forcesafesearch.google.com"
    finally:
        assert served.serving is not None
        served.serving.index.close()
