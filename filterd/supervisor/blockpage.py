"""The block page, started beside the admin server and answered from what is served.

``explain`` answers the page's question (why is this name blocked?) from the
generation every worker committed (``Installs.serving``), never from a list
merely compiled or downloaded, so the page says what the resolver does.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from filterd.blockpage.reason import BlockedBy, BlockReason, IPAddress
from filterd.blockpage.server import BlockPage
from filterd.config import Config
from filterd.errors import StartupError
from filterd.supervisor.installs import Installs

log = logging.getLogger("filterd")


class Explainer:
    """Why a name is blocked, from the served generation."""

    def __init__(self, installs: Installs) -> None:
        self._installs = installs

    def __call__(self, name: str, client: IPAddress) -> BlockReason | None:
        serving = self._installs.serving
        if serving is None:
            return None
        decision = serving.decide(name.encode("ascii"))
        if not decision.blocked or decision.rule is None:
            return None
        source = self._installs.sources[decision.rule.source]
        by = BlockedBy.STATE if source.mandatory else BlockedBy.OPERATOR
        return BlockReason(decision.rule.category or source.category, by, source.name)


async def start_block_page(
    config: Config, registry: CollectorRegistry, installs: Installs
) -> BlockPage:
    """The block page on ``block_page.listen``, for the clients ``access.allow`` admits."""
    page = BlockPage(config.block_page, Explainer(installs), registry, config.access.allow)
    try:
        await page.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on block page {', '.join(map(str, config.block_page.listen))}: "
            f"{exc.strerror}"
        ) from None
    log.info("block page on %s", ", ".join(f"http://{e}/" for e in config.block_page.listen))
    return page
