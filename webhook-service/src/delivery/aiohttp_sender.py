"""Sending webhook requests with aiohttp on one event-loop thread per worker process.

:class:`AioHttpSender` is the default (``WEBHOOKS_HTTP_CLIENT=aiohttp``).  It keeps every rule of
:class:`delivery.sender.HttpSender` (it inherits the resolution, the SSRF check, the URL and
header rules and the error sentences) and replaces only the HTTP client: Celery's task
threads hand their requests to an event loop (uvloop when installed) that drives every
connection of the process, and aiohttp's C parser reads the responses.  The sending path
costs about a third less CPU than with urllib3 and http.client, and in ``make bench`` the
worker's CPU per delivery and the latency's spread are lower (docs/benchmarks.md, *aiohttp
by default*); ``WEBHOOKS_HTTP_CLIENT=urllib3`` keeps the thread-per-request client.

* The request goes to the checked address: the URL holds the address, the ``Host`` header
  and TLS (``server_hostname``: SNI and the certificate check) keep the name.  aiohttp pools
  keep-alive connections per address, port, TLS context and name.
* Connect and read timeouts are aiohttp's socket timeouts; the total deadline cancels the
  request (a dripping server cannot outlast it).
* Never a redirect, never decompression, at most ``response_body_max_bytes`` kept and the
  same 64 KiB drain allowance; a response cut off in its head or body is a failed attempt
  (llhttp refuses an incomplete head).
* :meth:`AioHttpSender.send_sequence` sends an endpoint's run on the loop in one handoff: the
  steps (build a request, record its result) run on the loop thread between requests.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import ClientResponse
from aiohttp.http_parser import RawResponseMessage
from yarl import URL

from delivery.attempt_errors import describe_failure
from delivery.sender import (
    DRAIN_LIMIT,
    HttpSender,
    OutboundRequest,
    SendResult,
    _Target,
    outcome_of_status,
)

logger = logging.getLogger("delivery.attempt")

_CHUNK = 16 * 1024
_MAX_LINE = 65536
# Idle keep-alive connections are closed after this long (a server usually closes sooner).
_KEEPALIVE_SECONDS = 30.0
# Headers aiohttp would add on its own: no Accept-Encoding (nothing is decompressed), and
# no Content-Type or Accept the request did not ask for.
_SKIPPED_HEADERS = ("Accept", "Accept-Encoding", "Content-Type")

T = TypeVar("T")

Steps = Generator[OutboundRequest, SendResult, None]


class EventLoopThread:
    """One event loop on a daemon thread, started on first use (again in a forked child)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop of this process."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = _new_loop()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._loop.run_forever, name="webhook-send-loop", daemon=True
                ).start()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the loop and wait for its result from this thread.

        ``timeout`` only guards against a loop that stopped answering (the requests have
        their own deadlines): the coroutine is cancelled and TimeoutError raised.
        """
        loop = self.loop()
        if threading.current_thread().name == "webhook-send-loop":
            coroutine.close()
            raise RuntimeError("a blocking send from the event loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


LOOP = EventLoopThread()


@dataclass
class AioHttpSender(HttpSender):
    """POSTs through aiohttp on the process's event loop (see module doc)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._session: aiohttp.ClientSession | None = None
        self._client_timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.connect_timeout_seconds,
            sock_read=self.settings.read_timeout_seconds,
        )
        self._stuck_after = self.settings.total_timeout_seconds + 30
        self._proxy_url: URL | None = None
        if self._proxy is not None:
            self._proxy_url = URL.build(
                scheme=self._proxy.scheme or "http",
                host=str(self._proxy.host),
                port=self._proxy.port,
            )

    # The blocking interface of the task threads ------------------------------------

    def send(self, request: OutboundRequest) -> SendResult:
        """POST the request from a task thread; the loop sends it."""
        return LOOP.run(self.send_async(request), self._stuck_after)

    def send_sequences(self, runs: list[Steps]) -> None:
        """Drive each of ``runs`` on the loop: send each request it yields, give it the result.

        One handoff for an endpoint's whole run (or a fan-out batch's runs, side by side);
        each run's requests go one after another.  What the steps raise comes out here, in
        the calling thread.
        """
        # A run stops sending when its lease is about to end.
        stuck_after = self.settings.lease_seconds + self._stuck_after
        if len(runs) == 1:
            LOOP.run(self._drive(runs[0]), stuck_after)
        else:
            LOOP.run(self._drive_all(runs), stuck_after)

    async def _drive_all(self, runs: list[Steps]) -> None:
        await asyncio.gather(*(self._drive(steps) for steps in runs))

    def close(self) -> None:
        """Close every pooled connection."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            LOOP.run(session.close(), self._stuck_after)
        super().close()

    async def _drive(self, steps: Steps) -> None:
        try:
            request = next(steps)
            while True:
                request = steps.send(await self._send_safely(request))
        except StopIteration:
            return

    async def _send_safely(self, request: OutboundRequest) -> SendResult:
        started = time.perf_counter()
        try:
            return await self.send_async(request)
        except Exception as exc:  # as delivery.sending._send does
            logger.exception("the sender raised for %s", request.url)
            return SendResult(
                "error",
                (time.perf_counter() - started) * 1000,
                error=f"the sender failed: {type(exc).__name__}: {exc}",
            )

    # Sending on the loop ----------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                use_dns_cache=False,
                keepalive_timeout=_KEEPALIVE_SECONDS,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=_SKIPPED_HEADERS,
                timeout=self._client_timeout,
                trust_env=False,
                # http.client's limits (aiohttp's own are 8190 bytes).
                max_line_size=_MAX_LINE,
                max_field_size=_MAX_LINE,
            )
            self._session = session
            # A sender dropped without close() (tests make many) closes its connections.
            weakref.finalize(self, _close_soon, session, asyncio.get_running_loop())
        return session

    async def _target_async(self, url: str) -> _Target | tuple[str, str]:
        """:meth:`_target`, resolving off the loop when the name is not cached."""
        if self._resolved_already(url):
            return self._target(url)
        return await asyncio.get_running_loop().run_in_executor(None, self._target, url)

    def _resolved_already(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return True  # _target says why, without any lookup
        host = (parts.hostname or "").lower()
        cached = self._dns.get((host, port))
        return cached is not None and cached.expires > time.monotonic()

    async def send_async(self, request: OutboundRequest) -> SendResult:
        """POST the request on the loop; every failure becomes a classified result."""
        started = time.perf_counter()

        def result(outcome: str, **values: Any) -> SendResult:
            return SendResult(outcome, (time.perf_counter() - started) * 1000, **values)

        target = await self._target_async(request.url)
        if isinstance(target, tuple):
            outcome, error = target
            return result(outcome, error=error)
        options = self._options(request, target)
        cap = self.settings.response_body_max_bytes
        cap = cap if request.body_limit is None else request.body_limit
        status: int | None = None
        deadline = asyncio.timeout(self.settings.total_timeout_seconds)
        try:
            async with deadline:
                response = await self._client().request(
                    "POST", _url_of(target), data=request.body, **options
                )
                status = response.status
                excerpt = await _excerpt_of(response, cap)
        except Exception as exc:  # noqa: BLE001 - any I/O failure is an attempt outcome
            if deadline.expired():
                return result("timeout", status_code=status, error=self._deadline_error())
            outcome, error = self._aio_failure(exc, target, status)
            return result(outcome, status_code=status, error=error)
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        return result(
            outcome_of_status(response.status),
            status_code=response.status,
            retry_after=response.headers.get("Retry-After"),
            body_excerpt=_shown(encoding, excerpt),
        )

    def _options(self, request: OutboundRequest, target: _Target) -> dict[str, Any]:
        headers = self._headers(request, target)
        if target.forwarded:
            headers.update(self._proxy_headers)
        options: dict[str, Any] = {
            "headers": headers,
            "allow_redirects": False,
        }
        if target.scheme == "https":
            options["server_hostname"] = target.host
            options["ssl"] = request.tls.context if request.tls is not None else True
        if self._proxy_url is not None:
            options["proxy"] = self._proxy_url
            if self._proxy_headers and not target.forwarded:
                options["proxy_headers"] = self._proxy_headers
        return options

    def _aio_failure(self, exc: Exception, target: _Target, status: int | None) -> tuple[str, str]:
        """The outcome and error of a request that raised (the sentences of HttpSender)."""
        proxied = self._proxy is not None and (
            target.forwarded
            or isinstance(exc, aiohttp.ClientHttpProxyError | aiohttp.ClientProxyConnectionError)
        )
        if proxied:
            assert self._proxy is not None
            proxy_at = f"{self._proxy.host}:{self._proxy.port}"
            where = f"the egress proxy {proxy_at}"
        else:
            address, port = target.address, target.port
            where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return "timeout", (
                f"no connection to {where} within the "
                f"{self.settings.connect_timeout_seconds:g} s connect timeout"
            )
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return "timeout", (
                f"no answer from {where} within the "
                f"{self.settings.read_timeout_seconds:g} s read timeout"
            )
        if proxied:
            if isinstance(exc, aiohttp.ClientHttpProxyError):
                return "connect_error", (
                    f"the egress proxy {proxy_at} refused the tunnel "
                    f"(Tunnel connection failed: {exc.status} {exc.message})"
                )
            return "connect_error", f"egress proxy: {_described(exc, proxy_at, status)}"
        return "connect_error", _described(exc, where, status)


def _described(exc: Exception, where: str, status: int | None) -> str:
    """aiohttp's own failures in the words of :func:`delivery.attempt_errors.describe_failure`."""
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        status is not None and isinstance(exc, aiohttp.ServerDisconnectedError)
    ):
        return f"{where} closed the connection before the end of the response body"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        if isinstance(exc.message, RawResponseMessage):  # the head parsed so far
            return "the response was cut off in its status line or headers"
        return f"{where} closed the connection without answering"
    if isinstance(exc, aiohttp.ClientResponseError):
        # The parser's (llhttp's) refusal of the response head.
        message = str(exc.message)
        if message.startswith("Bad status line"):
            return f"{where} answered something that is not HTTP ({_quoted_line(message)!r})"
        if message.startswith("Got more than"):
            return f"{where} answered a status or header line that is too long"
        return f"malformed response headers ({message.splitlines()[0][:300]})"
    return describe_failure(exc, where)


_QUOTED = re.compile(r"""\bb(['"])((?:\\.|(?!\1).)*)\1""")


def _quoted_line(message: str) -> str:
    """The response's line that the parser quotes in ``message`` (as bytes), as text."""
    found = _QUOTED.search(message)
    if found is None:
        return message.splitlines()[0][:300]
    try:
        line = ast.literal_eval(found.group(0))
    except (ValueError, SyntaxError):
        return found.group(2)[:300]
    return bytes(line).decode("latin-1")[:300]


def _close_soon(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    if not session.closed and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(session.close(), loop)


def _url_of(target: _Target) -> URL:
    """The URL with the checked address (or, through the proxy, as forwarded)."""
    if target.forwarded:
        return URL(target.path, encoded=True)
    address = target.address
    authority = f"[{address}]" if ":" in address else address
    return URL(f"{target.scheme}://{authority}:{target.port}{target.path}", encoded=True)


async def _excerpt_of(response: ClientResponse, cap: int) -> bytes:
    """The body's first ``cap`` bytes; the connection is kept only when the body was read."""
    complete = False
    try:
        kept = bytearray()
        read = 0
        while read <= cap + DRAIN_LIMIT:
            chunk = await response.content.read(_CHUNK)
            if not chunk:
                complete = True
                break
            read += len(chunk)
            if len(kept) < cap:
                kept += chunk[: cap - len(kept)]
    finally:
        if complete:
            response.release()
        else:
            # Unread bytes remain: the connection cannot carry another request.
            response.close()
    return bytes(kept)


def _shown(encoding: str, excerpt: bytes) -> str | None:
    """The excerpt as stored: text, or a note when it is content-encoded."""
    if encoding not in ("", "identity") and excerpt:
        return f"[{encoding}-encoded body, not decoded]"
    return excerpt.decode("utf-8", errors="replace") if excerpt else None
