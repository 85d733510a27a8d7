"""The sentences an attempt's error is told in.

An operator reads ``connection refused by 127.0.0.1:8009`` on the attempt, not urllib3's
``_WatchedHTTPConnection(host=...): Failed to establish a new connection: [Errno 111]``.  Both
senders (:mod:`delivery.sender`, :mod:`delivery.aiohttp_sender`) describe their failures here,
so an attempt reads the same whichever HTTP client sent it; which failure is a timeout and
which a connection error stays with the sender that raised it.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl

import urllib3

from delivery.response_heads import IncompleteHead


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error a urllib3 error wraps: the socket's, TLS's or http.client's own."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        inner = inner or exc.__cause__
        if inner is None and not exc.__suppress_context__:
            inner = exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def describe_failure(exc: BaseException, where: str) -> str:
    """A short, plain sentence for a failed request to ``where`` (``host:port``).

    ``connection refused by 127.0.0.1:8009`` rather than urllib3's
    ``_WatchedHTTPConnection(host=...): Failed to establish a new connection: [Errno 111]``.
    """
    root = _root_cause(exc)
    if isinstance(root, IncompleteHead):
        return str(root)
    if isinstance(root, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(root, ConnectionResetError):
        return f"connection reset by {where}"
    if isinstance(root, http.client.RemoteDisconnected):
        return f"{where} closed the connection without answering"
    if isinstance(root, BrokenPipeError | ConnectionAbortedError):
        return f"{where} closed the connection while the request was sent"
    if isinstance(root, http.client.IncompleteRead | urllib3.exceptions.IncompleteRead):
        return f"{where} closed the connection before the end of the response body"
    if isinstance(root, http.client.LineTooLong):
        return f"{where} answered a status or header line that is too long"
    if isinstance(root, http.client.BadStatusLine):
        return f"{where} answered something that is not HTTP ({_first_line(root)!r})"
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not trusted: {root.verify_message}"
    if isinstance(root, ssl.SSLError):
        reason = (root.reason or _first_line(root)).replace("_", " ").lower()
        return f"TLS handshake with {where} failed ({reason})"
    if isinstance(root, OSError) and root.errno in _SOCKET_ERRORS:
        return f"{_SOCKET_ERRORS[root.errno]} {where}"
    if isinstance(root, OSError) and root.strerror:
        return f"{root.strerror[:1].lower()}{root.strerror[1:]} ({where})"
    return f"request to {where} failed: {type(root).__name__}: {_first_line(root)}"


def describe_proxy_failure(exc: BaseException, proxy: str) -> str:
    """A failure reaching the target through the egress proxy at ``proxy``, named as the proxy's."""
    root = _root_cause(exc)
    if isinstance(root, OSError) and str(root).startswith("Tunnel connection failed"):
        return f"the egress proxy {proxy} refused the tunnel ({_first_line(root)})"
    return f"egress proxy: {describe_failure(exc, proxy)}"


_SOCKET_ERRORS = {
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable for",
    errno.ETIMEDOUT: "connection timed out to",
    errno.ECONNREFUSED: "connection refused by",
    errno.ECONNRESET: "connection reset by",
}


def refused_in_tls(error: str | None) -> bool:
    """Whether a failure's sentence (of :func:`describe_failure`, either client's) is a
    failed TLS handshake or the server dropping the connection: after a TLS 1.3 handshake,
    a server that refuses the client's certificate (or its absence) often just resets or
    closes the connection, and which of those the client reads first is a race."""
    return error is not None and (
        "TLS" in error or "connection reset by" in error or "closed the connection" in error
    )


def describe_dns_failure(host: str, exc: OSError) -> str:
    """A short sentence for a failed resolution of ``host``."""
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
            return f"DNS: {host} does not exist"
        if exc.errno == socket.EAI_AGAIN:
            return f"DNS: temporary failure resolving {host}"
    reason = exc.strerror or _first_line(exc)
    return f"DNS lookup of {host} failed ({reason})"


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__
