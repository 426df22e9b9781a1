"""Which addresses a fetch may connect to: the SSRF guard's address policy, as an explicit list.

The lists are IANA's special-purpose address registries (RFC 6890 and its successors), written out
here rather than read from ``ipaddress``'s ``is_private``/``is_global``, whose tables differ between
Python versions (3.11 calls 6to4 of 127.0.0.1 and site-local ``fec0::/10`` global). An IPv6 address
that carries an IPv4 address the network will deliver to (IPv4-mapped, 6to4, NAT64's well-known
prefix) is judged by that IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


DENIED_V4 = _networks(
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private use
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata services live here)
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # the deprecated 6to4 relay anycast
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the limited broadcast 255.255.255.255
)

DENIED_V6 = _networks(
    "::/128", "::1/128",  # unspecified, loopback
    "::/96",  # IPv4-compatible (deprecated: no host has such an address)
    "64:ff9b:1::/48",  # NAT64 for local use (the well-known prefix 64:ff9b::/96 is judged by its IPv4 address)
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments: Teredo 2001::/32 (its client address is obfuscated, so the
    #               whole prefix goes), benchmarking 2001:2::/48, ORCHID 2001:10::/28 and 2001:20::/28
    "2001:db8::/32", "3fff::/20",  # documentation
    "5f00::/16",  # segment routing (SRv6) SIDs
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # everything outside it is reserved or special-purpose

_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_NUMERIC_V4 = re.compile(r"[0-9a-fA-FxX.]+")


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address delivers to (IPv4-mapped, NAT64 well-known prefix, 6to4),
    else ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    value = int(ip)
    if ip in _IPV4_MAPPED or ip in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:  # 2002:AABB:CCDD::/48 is the 6to4 site of AA.BB.CC.DD
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    return ip


def denied(ip: IPAddress, allowed: Iterable[Network] = ()) -> bool:
    """True for an address a fetch must not connect to: special-purpose by IANA's registries, itself
    or through the IPv4 address it carries, and in none of the ``allowed`` networks."""
    effective = embedded_ipv4(ip)
    if any(ip in net or effective in net for net in allowed):
        return False
    if isinstance(effective, ipaddress.IPv4Address):
        return any(effective in net for net in DENIED_V4)
    return effective not in GLOBAL_UNICAST_V6 or any(effective in net for net in DENIED_V6)


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL's host spells out, None for a name. IPv4 in every form the system resolver
    accepts (``inet_aton``: ``2130706433``, ``0x7f000001``, octal ``0177.0.0.1``, short ``127.1``,
    ``0x7f.1``), so the guard judges the address that would be connected to."""
    if _NUMERIC_V4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    try:
        return ipaddress.ip_address(host.split("%")[0])  # an IPv6 literal, with or without a zone
    except ValueError:
        return None
