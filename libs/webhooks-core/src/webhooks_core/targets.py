"""Which URLs the platform may send to.

Registration checks the URL's shape and any literal address (DNS may not answer at that
time); the delivery engine resolves the host and checks every address again before it
connects, to the address it checked.  Loopback, private, link-local, CGNAT, multicast,
reserved, IPv4-mapped IPv6 and cloud metadata addresses are refused unless a range in
``Settings.allowed_target_networks`` contains them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = (
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
)
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class TargetRefused(ValueError):
    """The URL may not be sent to; the message says why, for the user."""


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def blocked_reason(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why ``address`` is refused, or None when it may be contacted."""
    plain = _unmapped(address)
    if any(plain in network or address in network for network in allowed):
        return None
    if plain in _METADATA:
        return "cloud metadata address"
    if plain.is_loopback:
        return "loopback address"
    if plain.is_link_local:
        return "link-local address"
    if plain.version == 4 and plain in _CGNAT:
        return "shared (CGNAT) address"
    if plain.is_multicast:
        return "multicast address"
    if plain.is_reserved or plain.is_unspecified:
        return "reserved address"
    if plain.is_private:
        return "private address"
    if plain is not address:
        return "IPv4-mapped IPv6 address"
    return None


def check_url(url: str, allowed: Iterable[IPNetwork] = ()) -> str:
    """Validate an endpoint URL's shape and literal host; return it or raise TargetRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must use http or https")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not contain credentials; use custom headers instead")
    host = parts.hostname
    if not host:
        raise TargetRefused("must name a host")
    if port == 0:
        raise TargetRefused("must not use port 0")
    allowed = tuple(allowed)
    try:
        address: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None and host.rstrip(".").lower() in _LOCAL_NAMES:
        address = ipaddress.ip_address("127.0.0.1")
    if address is not None:
        reason = blocked_reason(address, allowed)
        if reason:
            raise TargetRefused(
                f"points at a {reason}; allow it with WEBHOOKS_ALLOWED_TARGET_NETWORKS"
            )
    return url
