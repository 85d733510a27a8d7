"""OAuth 2.0 client credentials (RFC 6749 section 4.4) for endpoints that take bearer tokens.

One :class:`TokenCache` per process (:data:`TOKENS`) keeps one token per endpoint and
credentials, shared by every delivery and thread: the first request that needs a token
fetches it while the others of that endpoint wait for it, and it is used until shortly
before it expires (:func:`refresh_margin`), so a process asks for one token per expiry
window however many deliveries it sends.  A 401 answered to a token drops that token (not
one another thread has fetched since); :mod:`delivery.credentials` refreshes once per batch.
The cache is bounded: a token past its expiry is dropped when a new endpoint's entry is made,
and past :data:`MAX_TOKENS` the least recently used one goes, so a long-lived worker that has
sent to many OAuth endpoints (some deleted, some with changed credentials, each a new key)
does not grow without end.

The token request and its response are oauthlib's (``BackendApplicationClient``); the
request goes out through the worker's own sender, so the token URL gets the same SSRF check
of its resolved address, timeouts and egress proxy as any webhook.  Every failure raises
:class:`TokenError` with a sentence the attempt records.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import urllib3
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from delivery.sender import USER_AGENT, OutboundRequest, Sender
from webhooks_core.endpoints.authentication import unseal_secret
from webhooks_core.observability import OAUTH_TOKEN_REQUESTS

# A token response is a small JSON object; a JWT access token fits many times over.
TOKEN_RESPONSE_MAX_BYTES = 64 * 1024
# When the token server does not say how long a token lasts (expires_in is RECOMMENDED).
DEFAULT_LIFETIME_SECONDS = 300.0
# Tokens one process keeps at most: far more endpoints with OAuth than a worker sends to within
# a token's life.  Past it the least recently used token is dropped, and fetched again if needed.
MAX_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class OAuthCredentials:
    """An endpoint's client credentials as stored (the secret still sealed)."""

    token_url: str
    client_id: str
    sealed_client_secret: str
    scopes: tuple[str, ...]
    audience: str | None
    auth_method: str  # client_secret_basic or client_secret_post

    @property
    def fingerprint(self) -> str:
        """Identifies these credentials: a changed one fetches a new token."""
        parts = (
            self.token_url,
            self.client_id,
            self.sealed_client_secret,
            " ".join(self.scopes),
            self.audience or "",
            self.auth_method,
        )
        return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()


class TokenError(Exception):
    """No token could be had; the message is the attempt's error."""


def refresh_margin(lifetime: float) -> float:
    """How long before its expiry a token is replaced: 10 % of its life, 60 s at most."""
    return min(60.0, lifetime * 0.1)


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str | None = None
    refresh_at: float = 0.0
    # When the entry is of no more use: the token's expiry; at once after a failure or a
    # dropped token; never while its first fetch is still to come.
    expires_at: float = math.inf
    failure: TokenError | None = None
    failed_at: float = 0.0


def token_request(credentials: OAuthCredentials) -> OutboundRequest:
    """The token request (grant_type=client_credentials) with the client's authentication."""
    secret = unseal_secret(credentials.sealed_client_secret)
    client = BackendApplicationClient(client_id=credentials.client_id)
    extra: dict[str, Any] = {}
    if credentials.audience:
        extra["audience"] = credentials.audience
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    scope: list[object] | None = list(credentials.scopes) or None
    if credentials.auth_method == "client_secret_post":
        body = client.prepare_request_body(
            scope=scope, include_client_id=True, client_secret=secret, **extra
        )
    else:
        body = client.prepare_request_body(scope=scope, **extra)
        # RFC 6749 section 2.3.1: both form-encoded before they are joined.
        user = f"{quote(credentials.client_id, safe='')}:{quote(secret, safe='')}"
        headers.update(urllib3.make_headers(basic_auth=user))
    return OutboundRequest(
        credentials.token_url,
        headers,
        body.encode("utf-8"),
        body_limit=TOKEN_RESPONSE_MAX_BYTES,
    )


def parse_token_response(
    credentials: OAuthCredentials, status: int, text: str
) -> tuple[str, float]:
    """The access token and its lifetime in seconds; raises :class:`TokenError`."""
    where = f"the token URL {credentials.token_url}"
    client = BackendApplicationClient(client_id=credentials.client_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            token = client.parse_request_body_response(text, scope=list(credentials.scopes))
    except OAuth2Error as exc:
        detail = f"{exc.error} ({exc.description})" if exc.description else exc.error
        raise TokenError(f"{where} answered HTTP {status}: {detail}") from None
    except Warning as changed:
        # The server granted other scopes than asked: the token is still the token.
        token = changed.token  # type: ignore[attr-defined]
    except ValueError as exc:
        raise TokenError(f"{where} answered HTTP {status}, not a token ({exc})") from None
    if not 200 <= status < 300:
        raise TokenError(f"{where} answered HTTP {status}")
    token_type = str(token.get("token_type") or "bearer")
    if token_type.lower() != "bearer":
        raise TokenError(f"{where} issued a {token_type!r} token; only bearer tokens are sent")
    access = token.get("access_token")
    if not isinstance(access, str) or not access or not access.isprintable():
        raise TokenError(f"{where} issued an access token that cannot be sent in a header")
    try:
        lifetime = float(token.get("expires_in") or DEFAULT_LIFETIME_SECONDS)
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME_SECONDS
    return access, max(lifetime, 1.0)


def fetch_token(sender: Sender, credentials: OAuthCredentials) -> tuple[str, float]:
    """Ask the token URL for a token; the token and its lifetime in seconds."""
    try:
        request = token_request(credentials)
    except Exception as exc:  # noqa: BLE001 - unsealing or encoding: say what, not the value
        raise TokenError(
            f"the endpoint's OAuth client secret cannot be used ({type(exc).__name__})"
        ) from None
    result = sender.send(request)
    if result.status_code is None:
        raise TokenError(
            f"the token request to {credentials.token_url} failed: {result.error or result.outcome}"
        )
    return parse_token_response(credentials, result.status_code, result.body_excerpt or "")


@dataclass
class TokenCache:
    """Tokens per endpoint and credentials, shared by the threads of a process.

    At most ``max_entries`` are kept (see the module doc).  Dropping an entry while a thread
    fetches its token is harmless: that thread and those waiting for it keep the entry they
    hold, and the next delivery of the endpoint fetches again.
    """

    clock: Callable[[], float] = time.monotonic
    max_entries: int = MAX_TOKENS
    issued: int = 0  # tokens fetched by this process (for tests and metrics)
    _entries: OrderedDict[tuple[object, str], _Entry] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        """How many endpoints' tokens (or entries being fetched) the cache holds."""
        with self._lock:
            return len(self._entries)

    def _entry(self, key: tuple[object, str]) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            self._trim()
            entry = self._entries[key] = _Entry()
            return entry

    def _trim(self) -> None:
        """Make room for one more entry: drop the expired ones, then the least recently used.

        Run under ``_lock`` when an entry is added, which is rare (once per endpoint and
        token life at most), so going through every entry costs nothing that matters.
        """
        now = self.clock()
        expired = [
            key
            for key, entry in self._entries.items()
            if entry.expires_at <= now and not entry.lock.locked()
        ]
        for key in expired:
            del self._entries[key]
        while self._entries and len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)

    def token(self, endpoint_id: object, credentials: OAuthCredentials, sender: Sender) -> str:
        """A valid token for the endpoint, fetched when there is none or it nearly expired.

        Threads that wait while another fetches take its token, or its failure: a token URL
        that is down is asked once by the waiting threads, not once each.
        """
        entry = self._entry((endpoint_id, credentials.fingerprint))
        token = entry.token
        if token is not None and self.clock() < entry.refresh_at:
            return token
        waited_from = self.clock()
        with entry.lock:
            if entry.token is not None and self.clock() < entry.refresh_at:
                return entry.token
            if entry.failure is not None and entry.failed_at >= waited_from:
                raise entry.failure
            started = self.clock()
            try:
                token, lifetime = fetch_token(sender, credentials)
            except TokenError as exc:
                entry.failure, entry.failed_at = exc, self.clock()
                entry.expires_at = entry.failed_at
                OAUTH_TOKEN_REQUESTS.labels("failed").inc()
                raise
            self.issued += 1
            OAUTH_TOKEN_REQUESTS.labels("issued").inc()
            entry.token, entry.failure = token, None
            entry.refresh_at = started + lifetime - refresh_margin(lifetime)
            entry.expires_at = started + lifetime
            return token

    def invalidate(self, endpoint_id: object, credentials: OAuthCredentials, token: str) -> None:
        """Forget ``token`` (a receiver refused it), unless another one replaced it already."""
        with self._lock:
            entry = self._entries.get((endpoint_id, credentials.fingerprint))
        if entry is None:
            return
        with entry.lock:
            if entry.token == token:
                entry.token = None
                entry.expires_at = self.clock()


TOKENS = TokenCache()
