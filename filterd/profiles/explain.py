"""Why a name gets the answer it gets, for one client at one time.

``explain`` is pure (no I/O): it takes the matcher and sources of the index
being served and the configuration, and walks the same decision as the
query path: the client's group and profile, the categories that profile
applies at that time (schedules evaluated in the configured zone), the one
index walk, the profile's mask over it, and the action the profile gives
the deciding rule. ``filterd lookup --client`` prints it; the block page
calls it with the supervisor's own mapping of the served index, so what it
says is what the workers do.

The client subnet of a forwarder is not considered: an explanation is for
a client address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from filterd.config import Config
from filterd.matching.matcher import EVERYONE, Choices, Decision, Matcher
from filterd.model.rules import Action
from filterd.model.sources import SourceInfo
from filterd.profiles.profileset import ProfileSet
from filterd.profiles.schedules import describe


@dataclass(frozen=True, slots=True)
class Explanation:
    """The answer for ``name`` asked by ``client`` at ``at``, and why."""

    name: str
    client: str
    """The client address as given ("" for none: the default group)."""
    at: datetime
    """The time considered, in the configured zone."""
    group: str
    profile: str
    decision: Decision
    """The deciding rule and entry (``rule`` None: no rule matched)."""
    source: SourceInfo | None
    """The list of the deciding rule."""
    blocked: bool
    action: Action | None
    """The answer a block gets (None when not blocked)."""
    ede: int | None
    """Extended DNS Error of a block (RFC 8914)."""
    category: str
    mandatory: bool
    """Decided by the authority's list (no profile or allowlist can change it)."""
    schedule: str
    """The schedules gating the deciding category ("" if it is not scheduled)."""
    not_applied: tuple[tuple[str, str], ...]
    """Opt-in categories that matched the name but this profile does not
    apply now: (category, why)."""
    rewrite: str
    """Safe search: the host the name is answered as ("" for none)."""


def explain(
    name: bytes,
    client: str | None,
    at: float,
    matcher: Matcher,
    sources: tuple[SourceInfo, ...],
    config: Config,
    profiles: ProfileSet | None = None,
) -> Explanation:
    """Explain canonical ``name`` for ``client`` (an IP address, or None)
    at Unix time ``at``. ``profiles`` may be passed to save compiling
    ``config``'s (it must be compiled from ``config``)."""
    profiles = profiles or ProfileSet(config)
    table = profiles.groups
    number = table.default
    if client:
        number = table.group_of(ipaddress.ip_address(client).packed)
    profile = profiles.group_profiles[number]
    local = profiles.local(at)
    applied = profile.categories_at(local)
    found = matcher.choices(name)
    decision = found.pick(matcher.mask_of(applied)) if isinstance(found, Choices) else found
    rule = decision.rule
    source = sources[rule.source] if rule is not None else None
    blocked = decision.blocked and rule is not None and source is not None
    not_applied = []
    if isinstance(found, Choices):
        for bits, option in found.options:
            if option is decision or bits == EVERYONE or option.rule is None:
                break
            category = option.rule.category
            if profile.applies(category):
                names = ", ".join(s.name for s in profile.schedules_of(category))
                not_applied.append((category, f"schedule {names} not active"))
            else:
                not_applied.append((category, f"not in profile {profile.name}"))
    schedules = profile.schedules_of(rule.category) if rule is not None else ()
    opt_in = source is not None and source.opt_in
    return Explanation(
        name=name.decode("ascii", "replace"),
        client=client or "",
        at=local,
        group=table.names[number],
        profile=profile.name,
        decision=decision,
        source=source,
        blocked=blocked,
        action=profile.action_for(rule, source, config.blocking)
        if blocked and rule and source
        else None,
        ede=source.ede if blocked and source else None,
        category=rule.category if rule is not None else "",
        mandatory=source is not None and source.mandatory,
        schedule="; ".join(describe(s) for s in schedules) if opt_in else "",
        not_applied=tuple(not_applied),
        rewrite="" if blocked else profile.rewrites.get(name, b"").decode("ascii", "replace"),
    )
