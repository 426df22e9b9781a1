"""The SSRF guard's address policy (imagesearch/addresses.py) over whole ranges: both ends of every
denied network, in each IPv6 form that carries an IPv4 address. The fetches through it: test_fetch.py."""

from __future__ import annotations

import ipaddress

import pytest

from imagesearch.addresses import DENIED_V4, DENIED_V6, denied, embedded_ipv4, ip_literal


def ends(net) -> list:
    return [net.network_address, net.broadcast_address]


def carriers(v4: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """The IPv6 addresses that deliver to ``v4``: IPv4-mapped, NAT64's well-known prefix, 6to4."""
    return [ipaddress.IPv6Address(f"::ffff:{v4}"), ipaddress.IPv6Address(f"64:ff9b::{v4}"),
            ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)]


@pytest.mark.parametrize("net", DENIED_V4, ids=str)
def test_every_denied_ipv4_network_is_denied_itself_and_through_ipv6(net):
    for ip in ends(net):
        assert denied(ip), ip
        for carrier in carriers(ip):
            assert embedded_ipv4(carrier) == ip and denied(carrier), carrier
        assert not denied(ip, [net]) and not denied(carriers(ip)[0], [net])  # the allow-list opens it


@pytest.mark.parametrize("net", DENIED_V6, ids=str)
def test_every_denied_ipv6_network_is_denied(net):
    for ip in ends(net):
        assert denied(ip), ip
        assert not denied(ip, [net])


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700::6810:85e5", "2a00:1450::1",
                                     "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1", "2c0f:fff0::1"])
def test_public_addresses_pass(address):
    assert not denied(ipaddress.ip_address(address))


@pytest.mark.parametrize("host, address", [
    ("127.0.0.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"), ("0x7F000001", "127.0.0.1"), ("10.1", "10.0.0.1"), ("fe80::1%eth0", "fe80::1"),
    ("::1", "::1"), ("example.com", None), ("cafe", None), ("1.2.3.4.5", None), ("dead.beef", None),
])
def test_ip_literal_reads_a_host_as_the_system_resolver_would(host, address):
    assert ip_literal(host) == (None if address is None else ipaddress.ip_address(address))
