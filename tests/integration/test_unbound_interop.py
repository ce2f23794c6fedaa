"""Interop with a real Unbound (Debian's package), on loopback.

filterd forwards to Unbound serving local data, exactly as an operator puts
filterd in front of its existing resolvers; and Unbound, forwarding to
filterd, sees filterd's blocked answers as a downstream resolver would.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.conftest import DaemonFactory, standard_config
from tests.integration.daemon import Daemon
from tests.peers.unbound import UNBOUND_MISSING, UnboundPeer, unbound_available

pytestmark = pytest.mark.skipif(not unbound_available(), reason=UNBOUND_MISSING)

LOCAL_DATA = [
    "www.example.com. 300 IN A 192.0.2.10",
    "www.example.com. 300 IN AAAA 2001:db8::10",
    "www.example.com. 300 IN MX 10 mail.example.com.",
    "www.gambling.example. 300 IN A 192.0.2.99",
    "login.phishing.example.com. 300 IN A 192.0.2.20",
]


@pytest.fixture
def unbound_upstream() -> Iterator[UnboundPeer]:
    with UnboundPeer(local_data=LOCAL_DATA, zones=["example.com", "gambling.example"]) as peer:
        yield peer


def test_filterd_in_front_of_unbound(
    make_daemon: DaemonFactory, unbound_upstream: UnboundPeer
) -> None:
    daemon = make_daemon(standard_config(unbound_upstream.endpoint)).start()
    assert [str(r) for r in daemon.query("www.example.com").answer[0]] == ["192.0.2.10"]
    assert [str(r) for r in daemon.query("www.example.com", "MX").answer[0]] == [
        "10 mail.example.com."
    ]
    # Unbound would answer it, but the authority's list says no.
    assert daemon.query("www.gambling.example").rcode() == dns.rcode.NXDOMAIN
    assert daemon.query("login.phishing.example.com").answer
    assert daemon.dig("www.example.com", "AAAA", "+short").split() == ["2001:db8::10"]


def test_unbound_behind_filterd_gets_the_blocks(
    make_daemon: DaemonFactory, unbound_upstream: UnboundPeer
) -> None:
    daemon: Daemon = make_daemon(standard_config(unbound_upstream.endpoint)).start()
    with UnboundPeer(forward_to=daemon.dns) as downstream:
        query = dns.message.make_query("www.gambling.example", "A")
        answer = dns.query.udp(query, "127.0.0.1", port=downstream.port, timeout=5)
        assert answer.rcode() == dns.rcode.NXDOMAIN
        good = dns.message.make_query("www.example.com", "A")
        answer = dns.query.udp(good, "127.0.0.1", port=downstream.port, timeout=5)
        assert [str(r) for r in answer.answer[0]] == ["192.0.2.10"]
