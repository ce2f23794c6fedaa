"""The example profiles configuration over the real category lists.

``config/profiles.example.yaml`` names each category list where an
operator installs it (``/var/lib/filterd/categories/...``); here those
paths point at the same files in ``../shared/data/categories`` (never
copied into the repository). The configuration must load, every list must
parse within its guards, and real names must get what the profiles say:
a UT1 gambling domain blocked for every child profile but not for the
default group, a UT1 game blocked in school hours only for a secondary
school, and the authority's sample list blocked for everyone.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from filterd.config.load import parse_config
from filterd.lists.compile import compile_lists
from filterd.lists.sources import open_matcher
from filterd.profiles.explain import explain
from filterd.profiles.profileset import ProfileSet

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "profiles.example.yaml"
INSTALLED = "/var/lib/filterd/categories/"


def first_name(path: Path) -> bytes:
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            return line.split()[-1].encode()
    raise AssertionError(f"{path} has no name")


@pytest.mark.slow
def test_the_example_profiles_over_the_real_category_lists(
    shared_data: Path, tmp_path: Path
) -> None:
    text = EXAMPLE.read_text().replace(INSTALLED, f"{shared_data}/categories/")
    text = text.replace("state_dir: ../state", f"state_dir: {tmp_path}")
    config = parse_config(text, str(EXAMPLE), EXAMPLE.parent)
    report = compile_lists(config)
    assert all(source.accepted for source in report.sources), report.sources
    matcher, sources = open_matcher(report.index_path)
    profiles = ProfileSet(config)
    try:
        assert set(matcher.categories) >= {"adult", "gambling", "games", "proxy", "doh"}
        gambling = first_name(shared_data / "categories" / "ut1" / "gambling.domains")
        game = b"007arcadegames.com"
        monday_school = datetime.fromisoformat("2026-09-07T09:00+07:00").timestamp()
        monday_evening = datetime.fromisoformat("2026-09-07T19:00+07:00").timestamp()

        def answer(name: bytes, client: str | None, at: float) -> tuple[bool, int | None]:
            found = explain(name, client, at, matcher, sources, config, profiles)
            return found.blocked, found.ede

        for child in ("10.20.0.5", "10.21.0.5", "100.64.0.9"):
            assert answer(gambling, child, monday_school) == (True, 17)
        assert answer(gambling, None, monday_school) == (False, None)
        assert answer(game, "10.21.0.5", monday_school) == (True, 17)
        assert answer(game, "10.21.0.5", monday_evening) == (False, None)
        assert answer(game, "10.20.0.5", monday_evening) == (True, 17)
        for anyone in (None, "10.20.0.5", "100.64.0.9"):
            assert answer(b"www.casino.example.net", anyone, monday_school) == (True, 16)
    finally:
        matcher.index.close()
