"""A down upstream is probed with ". IN NS" and is up again on its answer.

The resolver is a real one on a loopback port (tests/peers/authoritative.py);
the pool marks it down as a run of timeouts would.
"""

from __future__ import annotations

import asyncio
import time

from filterd.config import Endpoint, UpstreamConfig
from filterd.upstream.exchange import UpstreamIO
from filterd.upstream.pool import UpstreamPool
from filterd.upstream.probes import UpstreamProbes
from tests.peers.authoritative import FakeUpstream


def test_a_down_upstream_is_probed_and_comes_back() -> None:
    with FakeUpstream() as server:
        config = UpstreamConfig(
            servers=(Endpoint("127.0.0.1", server.port),),
            timeout=0.5,
            deadline=2.0,
            down_after=1,
            probe_interval=0.05,
        )

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            io = UpstreamIO(loop)
            pool = UpstreamPool(config)
            (upstream,) = pool.upstreams
            pool.failed(upstream, "timeout", time.monotonic())
            assert not upstream.up
            probes = UpstreamProbes(loop, io, pool, config, tick=0.01)
            probes.start()
            try:
                async with asyncio.timeout(10):
                    while not upstream.up:  # noqa: ASYNC110 - the pool has no event to wait on
                        await asyncio.sleep(0.01)
            finally:
                probes.stop()
                io.close()
            assert upstream.answers >= 1

        asyncio.run(scenario())
        probe = server.log[0]
        assert (probe.qname, probe.qtype, probe.transport) == (".", "NS", "udp")
