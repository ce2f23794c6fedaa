"""Push notifications: delivery, bounded retries, final answers, URL forms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from filterd.authority.notify import Target, notification, notify_url, push
from filterd.sync.model import open_envelope, parse_notify

KEY = Ed25519PrivateKey.generate()


def test_notify_url_forms() -> None:
    assert notify_url("http://192.0.2.1:9553") == "http://192.0.2.1:9553/v1/notify"
    assert notify_url("http://192.0.2.1:9553/") == "http://192.0.2.1:9553/v1/notify"
    assert notify_url("https://n.example/filterd/") == "https://n.example/filterd/v1/notify"
    assert notify_url("http://n.example/v1/notify") == "http://n.example/v1/notify"


@contextlib.asynccontextmanager
async def receiver(answers: Callable[[int], int], bodies: list[bytes]) -> AsyncIterator[str]:
    """A node on 127.0.0.1 (port 0) that answers the n-th POST with ``answers(n)``."""

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=answers(len(bodies)))

    app = web.Application()
    app.router.add_post("/v1/notify", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def run_push(answers: Callable[[int], int], extra: list[Target]) -> tuple[list[bytes], list[str]]:
    bodies: list[bytes] = []

    async def scenario() -> list[str]:
        async with receiver(answers, bodies) as base:
            envelope = notification("national", 42, KEY)
            targets = [Target("vnpt", base), *extra]
            outcomes = await push(envelope, targets, timeout=2.0, backoff=0.01)
            return [o.describe() for o in outcomes]

    return bodies, asyncio.run(scenario())


def test_delivered_envelope_verifies() -> None:
    bodies, outcomes = run_push(lambda n: 202, [])
    assert outcomes[0].startswith("accepted: vnpt http://127.0.0.1:")
    notify = parse_notify(open_envelope(bodies[0], KEY.public_key()))
    assert (notify.list_id, notify.serial) == ("national", 42)


@pytest.mark.parametrize(
    ("answers", "posts", "outcome"),
    [
        (lambda n: 503 if n < 3 else 202, 3, "accepted"),  # retried, then accepted
        (lambda n: 503, 3, "FAILED"),  # bounded retries
        (lambda n: 403, 1, "FAILED"),  # a refusal is final
    ],
)
def test_retries(answers: Callable[[int], int], posts: int, outcome: str) -> None:
    bodies, outcomes = run_push(answers, [])
    assert len(bodies) == posts
    assert outcomes[0].startswith(outcome)


def test_unreachable_node_fails_without_holding_up_the_others() -> None:
    _, outcomes = run_push(lambda n: 204, [Target("fpt", "http://127.0.0.1:1")])
    assert outcomes[0].startswith("accepted")
    assert outcomes[1].startswith("FAILED: fpt http://127.0.0.1:1/v1/notify")
    assert outcomes[1].endswith("after 3 attempt(s)")
