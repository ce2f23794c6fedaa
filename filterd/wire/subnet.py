"""The EDNS Client Subnet option of a query (RFC 7871), read from its bytes.

Used only for queries from a forwarder the configuration trusts
(``client_subnet.trust``): the option names the client behind the
forwarder, so that its group, not the forwarder's, decides. From anyone
else the option is ignored, since any client can write any subnet into it
(docs/profiles.md). A malformed option is ignored too (the forwarder's own
group decides); it is never an error for the client.
"""

from __future__ import annotations

from typing import Final

OPTION_CLIENT_SUBNET: Final = 8
_FAMILY_BYTES: Final = {1: 4, 2: 16}  # RFC 7871 §6: 1 IPv4, 2 IPv6 (IANA address family numbers)


def client_subnet(data: bytes, qend: int) -> tuple[bytes, int] | None:
    """(address, source prefix length) of the ECS option in the OPT record
    that follows the question at ``qend``, or ``None``. The address is
    padded to 4 or 16 bytes and its bits past the prefix are cleared, as
    RFC 7871 §6 requires of the sender (not trusted to have done it).

    The OPT record's layout was checked when the query was parsed
    (``filterd.wire.query``): options are walked without re-checking it."""
    end = len(data)
    position = qend + 11  # owner (1), type, class, TTL (4), RDLENGTH
    while position + 4 <= end:
        code = data[position] << 8 | data[position + 1]
        length = data[position + 2] << 8 | data[position + 3]
        body = position + 4
        if code == OPTION_CLIENT_SUBNET:
            return _parse(data[body : body + length])
        position = body + length
    return None


def _parse(option: bytes) -> tuple[bytes, int] | None:
    if len(option) < 4:
        return None
    size = _FAMILY_BYTES.get(option[0] << 8 | option[1])
    prefix = option[2]
    address = option[4:]
    if size is None or prefix > size * 8 or len(address) != (prefix + 7) // 8:
        return None
    number = int.from_bytes(address.ljust(size, b"\0"), "big")
    bits = size * 8
    number &= ((1 << prefix) - 1) << (bits - prefix) if prefix else 0
    return number.to_bytes(size, "big"), prefix
