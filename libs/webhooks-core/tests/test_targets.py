"""Which URLs and addresses may be sent to."""

from __future__ import annotations

import ipaddress

import pytest

from webhooks_core.targets import TargetRefused, blocked_reason, check_url


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "reserved"),  # noqa: S104 - an address under test, not a bind
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),
    ],
)
def test_blocked_addresses(address: str, reason: str) -> None:
    found = blocked_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


def test_public_addresses_pass() -> None:
    assert blocked_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert blocked_reason(ipaddress.ip_address("2606:4700::1111")) is None


def test_allowed_ranges_open_exactly_what_they_name() -> None:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    assert blocked_reason(ipaddress.ip_address("127.0.0.1"), loopback) is None
    assert blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1"), loopback) is None
    assert blocked_reason(ipaddress.ip_address("10.0.0.1"), loopback) == "private address"


def test_check_url() -> None:
    assert check_url("https://example.com/hook?x=1") == "https://example.com/hook?x=1"
    with pytest.raises(TargetRefused, match="loopback"):
        check_url("http://localhost:8000/")
    assert check_url("http://localhost:8000/", [ipaddress.ip_network("127.0.0.0/8")])
    with pytest.raises(TargetRefused, match="credentials"):
        check_url("https://a:b@example.com/")
    with pytest.raises(TargetRefused, match="2048"):
        check_url("https://example.com/" + "a" * 2048)


# IPv6 addresses that carry an IPv4 address, which the network may deliver to.
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:7f00:1::", "loopback address embedded in a 6to4 address"),
        ("2002:a00:1::1", "private address embedded in a 6to4 address"),
        ("2002:a9fe:a9fe::", "cloud metadata address embedded in a 6to4 address"),
        ("2002:a9fe:101::", "link-local address embedded in a 6to4 address"),
        # Teredo: server 127.0.0.1, and a client 10.0.0.1 stored obfuscated (bits inverted).
        ("2001:0:7f00:1:0:0:f5ff:fffe", "loopback address embedded in a Teredo address"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private address embedded in a Teredo address"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback address embedded in a Teredo address"),
        ("64:ff9b::7f00:1", "loopback address embedded in a NAT64 address"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata address embedded in a NAT64 address"),
        ("64:ff9b:1::c0a8:101", "private address embedded in a NAT64 address"),
        ("::ffff:10.1.2.3", "private address embedded in an IPv4-mapped IPv6 address"),
        ("::127.0.0.1", "loopback address embedded in an IPv4-compatible IPv6 address"),
        ("::8.8.8.8", "IPv4-compatible IPv6 address"),
    ],
)
def test_embedded_ipv4_addresses_are_judged(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_embedded_public_ipv4_in_6to4_passes() -> None:
    assert blocked_reason(ipaddress.ip_address("2002:5db8:d822::1")) is None  # 93.184.216.34


def test_allowed_range_opens_an_embedded_address_only_by_the_ipv4_it_names() -> None:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    for address in ("2002:7f00:1::", "64:ff9b::7f00:1", "2001:0:4136:e378:8000:63bf:80ff:fffe"):
        assert blocked_reason(ipaddress.ip_address(address), loopback) is None
    private = "private address embedded in a 6to4 address"
    assert blocked_reason(ipaddress.ip_address("2002:a00:1::1"), loopback) == private


@pytest.mark.parametrize(
    "host", ["[2002:7f00:1::]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "[64:ff9b::a9fe:a9fe]"]
)
def test_check_url_refuses_embedded_addresses(host: str) -> None:
    with pytest.raises(TargetRefused, match="embedded in a"):
        check_url(f"https://{host}:8443/hook")
