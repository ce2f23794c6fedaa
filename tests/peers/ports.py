"""Loopback port helpers for the test peers.

Contract: every helper binds only to the host it is given (a loopback address in
practice), never to a wildcard address, and returns a port that is usable for
*both* UDP and TCP, because DNS peers serve both transports on one port.

`bind_udp_tcp` keeps the sockets (no race: use it when the peer is in-process).
`free_port` releases them (a small race window remains: use it only for external
programs such as Unbound that cannot be handed a socket or take port 0).
"""

from __future__ import annotations

import socket

_ATTEMPTS = 64


def family_of(host: str) -> socket.AddressFamily:
    """The address family of a literal IP address (IPv6 literals contain ':')."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def format_endpoint(host: str, port: int) -> str:
    """'127.0.0.1:53' or '[::1]:53': the form filterd's upstream settings use."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Inverse of `format_endpoint`; raises ValueError on anything else."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT or [V6]:PORT, got {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 endpoints need brackets: {endpoint!r}")
    return host, int(port_text)


def bind_udp_tcp(host: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, socket.socket]:
    """Bound (UDP, TCP) sockets sharing one port; port 0 picks a free ephemeral one.

    The TCP socket is bound but not listening yet, so the caller decides the
    backlog. With port 0 the kernel picks the TCP port and the UDP socket then
    tries the same number; on a clash we simply try another port.
    """
    family = family_of(host)
    attempts = _ATTEMPTS if port == 0 else 1
    last_error: OSError | None = None
    for _ in range(attempts):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # SO_REUSEADDR only lets a listener reuse a port whose old connections
            # sit in TIME_WAIT; it never lets two live listeners share a port.
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            chosen = int(tcp.getsockname()[1])
            udp.bind((host, chosen))
        except OSError as exc:
            tcp.close()
            udp.close()
            last_error = exc
            continue
        return udp, tcp
    raise OSError(f"no port free for both UDP and TCP on {host}: {last_error}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port currently free on `host` for both UDP and TCP (released before return)."""
    udp, tcp = bind_udp_tcp(host, 0)
    try:
        return int(tcp.getsockname()[1])
    finally:
        udp.close()
        tcp.close()


def ipv6_loopback_available() -> bool:
    """Whether ::1 can be bound here (some containers have IPv6 disabled)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
