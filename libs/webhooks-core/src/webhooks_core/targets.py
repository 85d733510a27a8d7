"""Which URLs the platform may send to.

Registration checks the URL's shape and any literal address (DNS may not answer at that
time); the delivery engine resolves the host and checks every address again before it
connects, to the address it checked.  Loopback, private, link-local, CGNAT, multicast,
reserved, IPv4-mapped IPv6 and cloud metadata addresses are refused unless a range in
``EndpointSettings.allowed_target_networks`` contains them.

An IPv6 address that carries an IPv4 address (IPv4-mapped ``::ffff:0:0/96``, IPv4-compatible
``::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32`` with its server and its obfuscated client,
NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``) is judged by that IPv4 address too: the
network may deliver it there (a 6to4 relay, a NAT64 gateway), so ``2002:7f00:1::`` is as
much loopback as ``127.0.0.1``.  It is refused when an embedded address is, unless an allowed
range contains that IPv4 address.
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
# NAT64 (RFC 6052 well-known prefix, RFC 8215 local-use prefix); the IPv4 address is the
# low 32 bits of a /96 translation prefix.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class TargetRefused(ValueError):
    """The URL may not be sent to; the message says why, for the user."""


def embedded_ipv4(address: IPAddress) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The IPv4 addresses an IPv6 address carries, with the kind of address (for messages)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address", [address.ipv4_mapped]
    if address.sixtofour is not None:
        return "a 6to4 address", [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return "a Teredo address", [server, client]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in prefix for prefix in _NAT64):
        return "a NAT64 address", [low32]
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: nor ::1
        return "an IPv4-compatible IPv6 address", [low32]
    return None


def blocked_reason(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why ``address`` is refused, or None when it may be contacted."""
    allowed = tuple(allowed)
    if any(address in network for network in allowed):
        return None
    embedded = embedded_ipv4(address)
    if embedded is not None:
        kind, carried = embedded
        for ipv4 in carried:
            reason = blocked_reason(ipv4, allowed)
            if reason:
                return f"{reason} embedded in {kind}"
        if any(ipv4 in network for ipv4 in carried for network in allowed):
            return None
        if kind.startswith("an IPv4-"):
            # Mapped and compatible addresses are never a route of their own.
            return kind.removeprefix("an ")
    if address in _METADATA:
        return "cloud metadata address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.version == 4 and address in _CGNAT:
        return "shared (CGNAT) address"
    if address.is_multicast:
        return "multicast address"
    if address.is_reserved or address.is_unspecified:
        return "reserved address"
    if address.is_private:
        return "private address"
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
