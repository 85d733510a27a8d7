"""Sending one webhook request, safely.

:class:`HttpSender` is what production uses.  For every request it

* resolves the host itself and refuses the request when any address is blocked
  (:func:`webhooks_core.targets.blocked_reason`, loopback etc. unless allowed by settings), then
  connects to the address it checked: the urllib3 pool is opened on that IP while the ``Host``
  header and TLS SNI/certificate checks keep the name, so DNS is never asked a second time;
* keeps one pool of keep-alive connections per (scheme, host, port, address);
* applies connect and read timeouts and a total deadline, which a reaper thread enforces by
  shutting the socket down (a server dripping one byte a second defeats a read timeout alone;
  :mod:`delivery.deadlines`);
* never follows redirects and never decompresses: it reads at most the first
  ``response_body_max_bytes`` (plus a small drain allowance to keep the connection reusable);
* counts a response whose status line or header block is cut off (the connection closed
  before the blank line that ends the headers) or malformed as a failed attempt: http.client
  alone would take the headers read so far, then read an empty body to the close, and the
  attempt would look delivered (:mod:`delivery.response_heads`);
* tells every failure in a short sentence for the attempt's error (:mod:`delivery.attempt_errors`).

:mod:`delivery.testing` holds a fake sender that answers 200 without any network, for tests
of the engine's bookkeeping.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
)

from delivery.attempt_errors import describe_dns_failure, describe_failure, describe_proxy_failure
from delivery.config import DeliverySettings
from delivery.deadlines import Watch, WatchedHTTPPool, WatchedHTTPSPool, start_watch, stop_watch
from delivery.tls import EndpointTLS
from webhooks_core.targets import IPAddress, blocked_reason

USER_AGENT = "webhooks-platform/1.0"
# Read past the stored excerpt up to this much, so a normal-sized response leaves its
# connection reusable; anything longer is cut off by closing the connection.
DRAIN_LIMIT = 64 * 1024
_CHUNK = 16 * 1024
_DNS_TTL_SECONDS = 10.0
# Idle connections kept per target address and process: as many as can be sending to one host
# at once (a worker's task threads plus the side-by-side sender threads of its batches, 16 +
# 32 by default).  With 16, a benchmark worker discarded and reopened a connection about 85
# times a run ("Connection pool is full").  Only connections in use are ever opened.
_POOL_MAXSIZE = 64

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class OutboundRequest:
    """One POST of a webhook: where, with which headers and body.

    ``tls`` is the endpoint's own TLS context (client certificate, CA bundle), None for the
    default one; ``body_limit`` reads more of the response than the stored excerpt (an
    OAuth token response).
    """

    url: str
    headers: Mapping[str, str]
    body: bytes
    tls: EndpointTLS | None = None
    body_limit: int | None = None


@dataclass(frozen=True)
class SendResult:
    """What came back.  ``outcome`` is the attempt's class (see docs/delivery.md)."""

    outcome: str
    latency_ms: float
    status_code: int | None = None
    retry_after: str | None = None
    body_excerpt: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """True for any 2xx."""
        return self.outcome == "success"


class Sender(Protocol):
    """Sends one webhook request and reports what happened; never raises for I/O problems."""

    def send(self, request: OutboundRequest) -> SendResult:
        """POST ``request`` and classify the result."""
        ...


def outcome_of_status(status: int) -> str:
    """``success`` for 2xx, else ``http_3xx``/``http_4xx``/``http_5xx`` (bounded labels)."""
    if 200 <= status < 300:
        return "success"
    return f"http_{min(max(status // 100, 1), 5)}xx"


def url_problem(url: str) -> str | None:
    """Why no request can be sent to ``url`` whatever the network does, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "needs http(s) and a host"
    if port == 0:
        return "port 0"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in resolver order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


# --- the real sender --------------------------------------------------------------------


class TargetBlocked(Exception):
    """The host resolves to an address that may not be contacted."""


@dataclass
class _Resolved:
    address: str
    refusal: str | None  # why no address of the name may be used
    expires: float


@dataclass(frozen=True, slots=True)
class _Target:
    """Where one request goes: the URL's parts and the checked address to connect to."""

    scheme: str
    host: str
    port: int
    address: str
    path: str  # with the query; absolute (with the checked address) through a proxy
    forwarded: bool = False  # a plain HTTP request forwarded by the egress proxy


def _shown(response: urllib3.BaseHTTPResponse, excerpt: bytes) -> str | None:
    """The response excerpt as stored: text, or a note when it is content-encoded."""
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity") and excerpt:
        return f"[{encoding}-encoded body, not decoded]"
    return excerpt.decode("utf-8", errors="replace") if excerpt else None


@dataclass
class HttpSender:
    """POSTs with pooled keep-alive connections to the checked address (see module doc)."""

    settings: DeliverySettings
    resolver: Resolver = system_resolver
    _pools: dict[tuple[str | int, ...], HTTPConnectionPool] = field(default_factory=dict)
    _dns: dict[tuple[str, int], _Resolved] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._timeout = urllib3.Timeout(
            connect=self.settings.connect_timeout_seconds,
            read=self.settings.read_timeout_seconds,
        )
        self._proxy: urllib3.util.Url | None = None
        self._proxy_headers: dict[str, str] = {}
        if self.settings.egress_proxy:
            self._proxy = urllib3.util.parse_url(self.settings.egress_proxy)
            if self._proxy.auth:
                user, _, password = self._proxy.auth.partition(":")
                basic = urllib3.make_headers(
                    proxy_basic_auth=f"{unquote(user)}:{unquote(password)}"
                )
                self._proxy_headers = {"Proxy-Authorization": basic["proxy-authorization"]}

    # Resolution and the SSRF check -------------------------------------------------

    def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        return self.resolver(host, 0)

    def checked_address(self, host: str, port: int) -> str:
        """The address to connect to; raises :class:`TargetBlocked` if any is refused.

        Refusing when *any* address is blocked (not just the first) keeps a name that mixes
        public and private addresses from reaching the private one on a later attempt.  The
        verdict is cached for a few seconds: resolving and checking on every request of a
        busy endpoint would cost more than the request.
        """
        key = (host.lower(), port)
        cached = self._dns.get(key)
        if cached is None or cached.expires <= time.monotonic():
            # A resolution failure raises OSError here and is not cached.
            addresses = self._addresses(host)
            if not addresses:
                raise OSError(f"{host} has no address")
            cached = _Resolved(addresses[0], None, time.monotonic() + _DNS_TTL_SECONDS)
            for address in addresses:
                ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
                reason = blocked_reason(ip, self.settings.allowed_networks)
                if reason:
                    cached.refusal = f"{host} resolves to {address}, a {reason}"
                    break
            self._dns[key] = cached
        if cached.refusal is not None:
            raise TargetBlocked(cached.refusal)
        return cached.address

    def _pool(
        self, scheme: str, host: str, port: int, address: str, tls: EndpointTLS | None = None
    ) -> HTTPConnectionPool:
        key: tuple[str | int, ...] = (
            (scheme, host, port, address) if tls is None else (scheme, host, port, address, tls.key)
        )
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._new_pool(scheme, host, port, address, tls)
                self._pools[key] = pool
        return pool

    def _new_pool(
        self, scheme: str, host: str, port: int, address: str, tls: EndpointTLS | None
    ) -> HTTPConnectionPool:
        """A pool to the checked address (through the proxy when there is one).

        Through the egress proxy, an HTTPS pool tunnels (HTTP CONNECT) to the checked
        address, TLS checking the name; a plain HTTP pool talks to the proxy itself, which
        is sent the absolute URL with the checked address (see :meth:`_target`).
        """
        common: dict[str, Any] = {
            "port": port,
            "timeout": self._timeout,
            "maxsize": _POOL_MAXSIZE,
            "block": False,
            "retries": False,
        }
        if scheme == "https":
            if tls is not None:
                common["ssl_context"] = tls.context
            if self._proxy is not None:
                common["_proxy"] = self._proxy
                common["_proxy_headers"] = self._proxy_headers
            return WatchedHTTPSPool(
                address,
                cert_reqs="CERT_REQUIRED",
                assert_hostname=host,
                server_hostname=host,
                **common,
            )
        if self._proxy is not None:
            common["port"] = self._proxy.port
            return WatchedHTTPPool(str(self._proxy.host), **common)
        return WatchedHTTPPool(address, **common)

    # Sending ------------------------------------------------------------------------

    def send(self, request: OutboundRequest) -> SendResult:
        """POST the request; every failure becomes a classified :class:`SendResult`."""
        started = time.perf_counter()

        def result(outcome: str, **values: Any) -> SendResult:
            return SendResult(outcome, (time.perf_counter() - started) * 1000, **values)

        target = self._target(request.url)
        if isinstance(target, tuple):
            outcome, error = target
            return result(outcome, error=error)
        pool = self._pool(target.scheme, target.host, target.port, target.address, request.tls)
        headers = self._headers(request, target)
        if target.forwarded:
            headers.update(self._proxy_headers)

        watch = start_watch(time.monotonic() + self.settings.total_timeout_seconds)
        status: int | None = None
        try:
            response = pool.urlopen(
                "POST",
                target.path,
                body=request.body,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
                assert_same_host=False,
            )
            status = response.status
            excerpt = self._excerpt_of(response, request.body_limit)
        except Exception as exc:  # noqa: BLE001 - any I/O failure is an attempt outcome
            outcome, error = self._failure(exc, watch, target)
            return result(outcome, status_code=status, error=error)
        finally:
            stop_watch(watch)

        if watch.fired:
            return result("timeout", status_code=response.status, error=self._deadline_error())
        return result(
            outcome_of_status(response.status),
            status_code=response.status,
            retry_after=response.headers.get("Retry-After"),
            body_excerpt=_shown(response, excerpt),
        )

    def _target(self, url: str) -> _Target | tuple[str, str]:
        """Where to send ``url``, or the outcome and error of a URL that may not be sent to."""
        problem = url_problem(url)
        if problem is not None:
            return "error", f"invalid URL: {problem}"
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            address = self.checked_address(host, port)
        except TargetBlocked as exc:
            return "blocked", f"refused: {exc}"
        except OSError as exc:
            return "connect_error", describe_dns_failure(host, exc)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self._proxy is not None and scheme == "http":
            # The proxy gets the address checked here, never the name to resolve again.
            authority = f"[{address}]" if ":" in address else address
            return _Target(scheme, host, port, address, f"http://{authority}:{port}{path}", True)
        return _Target(scheme, host, port, address, path)

    @staticmethod
    def _headers(request: OutboundRequest, target: _Target) -> dict[str, str]:
        default_port = target.port == (443 if target.scheme == "https" else 80)
        host = target.host
        host_header = host if ":" not in host else f"[{host}]"
        headers = dict(request.headers)
        headers.setdefault("User-Agent", USER_AGENT)
        headers["Host"] = host_header if default_port else f"{host_header}:{target.port}"
        return headers

    def _excerpt_of(self, response: urllib3.BaseHTTPResponse, limit: int | None) -> bytes:
        """The response's first bytes; the connection goes back to the pool when reusable."""
        complete = False
        try:
            excerpt, complete = self._read_excerpt(
                response, self.settings.response_body_max_bytes if limit is None else limit
            )
        finally:
            if not complete:
                # Unread bytes remain: the connection cannot carry another request.
                response.close()
            response.release_conn()
        return excerpt

    def _deadline_error(self) -> str:
        return f"total deadline of {self.settings.total_timeout_seconds:g} s exceeded"

    def _failure(self, exc: Exception, watch: Watch, target: _Target) -> tuple[str, str]:
        """The outcome and error of a request that raised."""
        if watch.fired:
            return "timeout", self._deadline_error()
        # Forwarded plain HTTP talks to the proxy; a ProxyError is the tunnel's setting up.
        proxied = self._proxy is not None and (target.forwarded or isinstance(exc, ProxyError))
        cause = exc
        if isinstance(exc, ProxyError) and isinstance(exc.original_error, Exception):
            cause = exc.original_error
        if proxied:
            assert self._proxy is not None
            where = f"the egress proxy {self._proxy.host}:{self._proxy.port}"
        else:
            address, port = target.address, target.port
            where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        if isinstance(cause, ConnectTimeoutError) and (
            not isinstance(cause, NewConnectionError) or "timed out" in str(cause)
        ):
            return "timeout", (
                f"no connection to {where} within the "
                f"{self.settings.connect_timeout_seconds:g} s connect timeout"
            )
        if isinstance(cause, ReadTimeoutError):
            return "timeout", (
                f"no answer from {where} within the "
                f"{self.settings.read_timeout_seconds:g} s read timeout"
            )
        if proxied:
            assert self._proxy is not None
            return "connect_error", describe_proxy_failure(
                exc, f"{self._proxy.host}:{self._proxy.port}"
            )
        return "connect_error", describe_failure(exc, where)

    @staticmethod
    def _read_excerpt(response: urllib3.BaseHTTPResponse, cap: int) -> tuple[bytes, bool]:
        """The first bytes of the body, and whether the body was read to its end."""
        kept = bytearray()
        read = 0
        while read <= cap + DRAIN_LIMIT:
            chunk = response.read(_CHUNK, decode_content=False)
            if not chunk:
                return bytes(kept), True
            read += len(chunk)
            if len(kept) < cap:
                kept += chunk[: cap - len(kept)]
        return bytes(kept), False

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
