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
