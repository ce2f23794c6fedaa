"""Real-socket DNS peers for end-to-end tests, all on loopback.

authoritative.FakeUpstream -- scriptable in-process authoritative server (dnslib).
unbound.UnboundPeer        -- a real Unbound child process serving local data / RPZ.
ports                      -- free-port and endpoint helpers shared by both.
"""
