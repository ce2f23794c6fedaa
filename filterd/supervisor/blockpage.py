"""The block page, started beside the admin server and answered from what is served.

``Explainer`` answers the page's question (why is this name blocked for this
visitor?) with ``filterd.profiles.explain`` over the generation every
worker committed (``Installs.serving``), never over a list merely compiled
or downloaded, so the page says what the resolver does for that visitor's
group at that moment (schedules included).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from prometheus_client import CollectorRegistry

from filterd.blockpage.reason import BlockedBy, BlockReason, IPAddress
from filterd.blockpage.server import BlockPage
from filterd.config import Config
from filterd.errors import StartupError
from filterd.matching.matcher import Matcher
from filterd.model.sources import SourceInfo
from filterd.profiles.explain import Explanation, explain
from filterd.profiles.profileset import ProfileSet

log = logging.getLogger("filterd")


class Served(Protocol):
    """What the workers serve (``Installs``)."""

    @property
    def config(self) -> Config: ...
    @property
    def serving(self) -> Matcher | None: ...
    @property
    def sources(self) -> tuple[SourceInfo, ...]: ...


class Explainer:
    """Why a name gets its answer, from the served generation."""

    def __init__(self, served: Served) -> None:
        self._served = served
        self._profiles: tuple[Config, ProfileSet] | None = None

    def explain(self, name: bytes, client: str | None, at: float) -> Explanation | None:
        """Why canonical ``name`` gets its answer for ``client`` at Unix time
        ``at`` (docs/profiles.md); ``None`` before the first install."""
        served = self._served
        matcher, config = served.serving, served.config
        if matcher is None:
            return None
        if self._profiles is None or self._profiles[0] is not config:
            self._profiles = (config, ProfileSet(config))
        return explain(name, client, at, matcher, served.sources, config, self._profiles[1])

    def __call__(self, name: str, client: IPAddress) -> BlockReason | None:
        """The block page's question (``filterd.blockpage.reason.Explain``)."""
        found = self.explain(name.encode("ascii"), str(client), time.time())
        if found is None or not found.blocked or found.source is None:
            return None
        if found.mandatory:
            return BlockReason(found.category, BlockedBy.STATE, found.source.name)
        if found.source.opt_in:
            return BlockReason(found.category, BlockedBy.PROFILE, found.profile)
        return BlockReason(found.category, BlockedBy.OPERATOR, found.source.name)


async def start_block_page(
    config: Config, registry: CollectorRegistry, explainer: Explainer
) -> BlockPage:
    """The block page on ``block_page.listen``, for the clients ``access.allow`` admits."""
    page = BlockPage(config.block_page, explainer, registry, config.access.allow)
    try:
        await page.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on block page {', '.join(map(str, config.block_page.listen))}: "
            f"{exc.strerror}"
        ) from None
    log.info("block page on %s", ", ".join(f"http://{e}/" for e in config.block_page.listen))
    return page
