"""Sending to an endpoint that has credentials: its TLS context, its OAuth bearer token.

Only endpoints with OAuth or TLS settings come here (:func:`delivery.sending._attempt`
checks one attribute); the plain HMAC path does no work of this module.

* TLS: the endpoint's context (:mod:`delivery.tls`) goes with each request; a context that
  cannot be built is a failed attempt (``error``), retried.  A refused handshake while the
  client certificate has expired says so.
* OAuth: the token comes from the process's cache (:data:`delivery.oauth.TOKENS`).  No
  token is a failed attempt with outcome ``auth_error`` and the reason, retried by schedule;
  the run remembers it, so the token URL is asked once per batch, not once per delivery.  A
  401 to a token drops it and the request goes once more with a new one: once per batch (per
  endpoint's run), and the attempt is the second request's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from delivery.attempt_errors import refused_in_tls
from delivery.batch import BatchEndpoint
from delivery.oauth import TOKENS, OAuthCredentials, TokenError
from delivery.sender import OutboundRequest, Sender, SendResult
from delivery.tls import TLSCredentials, TLSSetupError, endpoint_tls

Send = Callable[[OutboundRequest], SendResult]


@dataclass
class RunCredentials:
    """What one endpoint's run (its part of a batch) remembers about its credentials."""

    token_failure: SendResult | None = None
    refreshed: bool = False


def send_with_credentials(
    sender: Sender,
    send: Send,
    endpoint: BatchEndpoint,
    run: RunCredentials,
    request: OutboundRequest,
) -> SendResult:
    """Send ``request`` with the endpoint's TLS context and bearer token (see module doc).

    ``send`` is ``sender.send`` made safe (what it raises becomes a failed attempt); token
    requests go through ``sender`` itself.
    """
    started = time.perf_counter()
    endpoint_id, oauth, tls = endpoint.id, endpoint.oauth, endpoint.tls
    if tls is not None:
        try:
            request = dataclasses.replace(request, tls=endpoint_tls(endpoint_id, tls))
        except TLSSetupError as exc:
            return SendResult("error", (time.perf_counter() - started) * 1000, error=str(exc))
    if oauth is None:
        return _explained(send(request), tls)
    if run.token_failure is not None:
        return dataclasses.replace(run.token_failure, latency_ms=0.0)
    token = _token(endpoint_id, oauth, run, started, sender)
    if isinstance(token, SendResult):
        return token
    result = send(_with_token(request, token))
    if result.status_code == 401 and not run.refreshed:
        run.refreshed = True
        TOKENS.invalidate(endpoint_id, oauth, token)
        token = _token(endpoint_id, oauth, run, started, sender)
        if isinstance(token, SendResult):
            return token
        result = send(_with_token(request, token))
        result = dataclasses.replace(result, latency_ms=(time.perf_counter() - started) * 1000)
    return _explained(result, tls)


def _token(
    endpoint_id: object,
    oauth: OAuthCredentials,
    run: RunCredentials,
    started: float,
    sender: Sender,
) -> str | SendResult:
    """A token, or the failed attempt of not having one (remembered for the run)."""
    try:
        return TOKENS.token(endpoint_id, oauth, sender)
    except TokenError as exc:
        latency = (time.perf_counter() - started) * 1000
        run.token_failure = SendResult("auth_error", latency, error=f"no OAuth token: {exc}")
        return run.token_failure


def _with_token(request: OutboundRequest, token: str) -> OutboundRequest:
    headers = dict(request.headers)
    headers["Authorization"] = f"Bearer {token}"
    return dataclasses.replace(request, headers=headers)


def _explained(result: SendResult, tls: TLSCredentials | None) -> SendResult:
    """Say what the endpoint's TLS settings have to do with a failed TLS handshake.

    A server that refuses a client certificate (or its absence) after a TLS 1.3 handshake
    often just resets or closes the connection: the error alone would not say why.
    """
    if tls is None or result.status_code is not None or not refused_in_tls(result.error):
        return result
    if tls.client_certificate is None:
        hint = "the server may require a client certificate: this endpoint has none"
    elif tls.certificate_expires_at is not None and tls.certificate_expires_at <= datetime.now(UTC):
        expired = tls.certificate_expires_at.isoformat()
        hint = f"the endpoint's client certificate expired at {expired}: give it a current one"
    else:
        return result
    return dataclasses.replace(result, error=f"{result.error}; {hint}")
