"""The sender judges IPv6 addresses that carry an IPv4 address by that IPv4 address.

A 6to4, Teredo or NAT64 address can reach the IPv4 address it embeds (through a relay or a
gateway), so one that embeds a loopback or private address is refused before any connection,
whether the URL names it or a host name resolves to it.
"""

from __future__ import annotations

from typing import Any

import pytest

from delivery.config import DeliverySettings
from delivery.runtime import http_sender
from delivery.sender import HttpSender, OutboundRequest


@pytest.fixture(params=["urllib3", "aiohttp"])
def settings(settings: DeliverySettings, request: pytest.FixtureRequest) -> DeliverySettings:
    """Each test here runs with both HTTP clients of the sender (WEBHOOKS_HTTP_CLIENT)."""
    return settings.model_copy(update={"http_client": request.param})


def make_sender(settings: DeliverySettings, **resolver: Any) -> HttpSender:
    values = settings.model_dump()
    values.update(
        allowed_target_networks=["127.0.0.1/32"],
        connect_timeout_seconds=0.5,
        read_timeout_seconds=0.6,
        total_timeout_seconds=1.0,
    )
    return http_sender(DeliverySettings.from_env(**values), **resolver)


def post(sender: HttpSender, url: str) -> Any:
    return sender.send(OutboundRequest(url, {"webhook-id": "msg_1"}, b'{"type":"t"}'))


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("2002:7f00:2::", "6to4"),  # 127.0.0.2
        ("2001:0:7f00:2::ffff", "Teredo"),  # server 127.0.0.2
        ("2001:0:4136:e378:8000:63bf:80ff:fffd", "Teredo"),  # client 127.0.0.2, obfuscated
        ("64:ff9b::7f00:2", "NAT64"),
        ("::127.0.0.2", "IPv4-compatible"),
    ],
)
def test_a_name_resolving_to_an_embedded_loopback_is_refused(
    settings: DeliverySettings, receiver: Any, address: str, kind: str
) -> None:
    server = receiver(host="127.0.0.2")
    port = server.server.server_address[1]
    sender = make_sender(settings, resolver=lambda _host, _port: [address])
    result = post(sender, f"http://hooks.example.test:{port}/hook")
    assert result.outcome == "blocked"
    assert f"loopback address embedded in a{'n' if kind[0] == 'I' else ''} {kind}" in (
        result.error or ""
    )
    assert server.received == []


def test_a_literal_6to4_url_of_a_private_address_is_refused(settings: DeliverySettings) -> None:
    result = post(make_sender(settings), "http://[2002:a00:1::1]:8080/hook")
    assert result.outcome == "blocked"
    assert "private address embedded in a 6to4 address" in (result.error or "")
