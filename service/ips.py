"""IP addresses and networks in one spelling, so that a rule, a stored comment and a stream key compare equal.

A dual-stack server sees an IPv4 client as ``::ffff:203.0.113.7``; written as that, it would escape a rule for
``203.0.113.7`` and count apart from the same client seen over IPv4. IPv6 is written compressed, in lower case.
A zone ID (``fe80::1%eth0``) names an interface of the machine that saw the address, so it says nothing about a
commenter: it is refused here.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# ::ffff:0:0/96: IPv4 addresses as an IPv6 socket shows them (RFC 4291, 2.5.5.2).
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class ZoneIdError(ValueError):
    """An IPv6 address with a zone ID (``%eth0``)."""


def _no_zone(address: ipaddress.IPv6Address, value: str) -> None:
    if address.scope_id is not None:
        raise ZoneIdError(f"'{value.strip()}' has a zone ID (%{address.scope_id}); a client's address has none")


def canonical_address(value: str) -> Address:
    """The address a value names, an IPv4-mapped one as IPv4; surrounding space ignored.

    Raises ValueError when the value is not an IP address, ZoneIdError (a ValueError) when it carries a zone ID.
    """
    address = ipaddress.ip_address(value.strip())
    if isinstance(address, ipaddress.IPv6Address):
        _no_zone(address, value)
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def canonical_ip(value: str) -> str:
    """``'::ffff:1.2.3.4'`` → ``'1.2.3.4'``, ``'2001:DB8:0::1'`` → ``'2001:db8::1'`` (``canonical_address``)."""
    return str(canonical_address(value))


@lru_cache(maxsize=4096)  # the rules match every comment against every IP entry of its site
def canonical_network(value: str) -> Network:
    """An address or network (host bits ignored: ``10.1.2.3/16`` is ``10.1.0.0/16``), IPv4-mapped ranges as IPv4.

    ``'::ffff:1.2.3.0/120'`` is ``1.2.3.0/24`` and a single address is a /32 or /128. Raises ValueError when the value
    is not an address or network, ZoneIdError (a ValueError) when it carries a zone ID.
    """
    network = ipaddress.ip_network(value.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network):
        _no_zone(network.network_address, value)
        if network.subnet_of(_IPV4_MAPPED):
            mapped = network.network_address.ipv4_mapped
            assert mapped is not None  # every address of ::ffff:0:0/96 is a mapped one
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def canonical_entry(value: str) -> str:
    """An IP list entry as stored: a single address written without a prefix stays an address, anything else is a
    network in CIDR (``canonical_network``; same errors)."""
    network = canonical_network(value)
    single = network.num_addresses == 1 and "/" not in value
    return str(network.network_address) if single else str(network)
