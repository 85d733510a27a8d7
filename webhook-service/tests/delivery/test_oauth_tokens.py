"""The OAuth token cache of a worker process is bounded: expired tokens go, and a size cap.

A real token server on 127.0.0.1 (the ``receiver`` fixture) issues the tokens; the cache's
clock is the test's, so expiry needs no waiting.
"""

from __future__ import annotations

from typing import Any

import pytest

from delivery.config import DeliverySettings
from delivery.oauth import OAuthCredentials, TokenCache, TokenError
from delivery.runtime import http_sender
from delivery.sender import Sender
from webhooks_core.endpoints.authentication import seal_secret


def _loopback_sender(settings: DeliverySettings) -> Sender:
    values = settings.model_dump()
    values.update(allowed_target_networks=["127.0.0.1/32"])
    return http_sender(DeliverySettings.from_env(**values))


def test_expired_tokens_are_dropped_and_the_cap_evicts_the_least_recently_used(
    settings: DeliverySettings, receiver: Any
) -> None:
    now = [1000.0]

    def token(_got: Any, n: int) -> dict[str, Any]:
        body = f'{{"access_token": "t{n}", "token_type": "Bearer", "expires_in": 100}}'
        return {"body": body.encode()}

    server = receiver(token)
    credentials = OAuthCredentials(
        server.url, "id", seal_secret("s"), (), None, "client_secret_post"
    )
    sender = _loopback_sender(settings)
    cache = TokenCache(clock=lambda: now[0], max_entries=3)

    assert [cache.token(e, credentials, sender) for e in ("e1", "e2", "e3")] == ["t1", "t2", "t3"]
    assert cache.token("e1", credentials, sender) == "t1"  # e1 used again: e2 is now the oldest
    assert cache.token("e4", credentials, sender) == "t4"
    assert len(cache) == 3
    assert cache.issued == 4
    assert cache.token("e1", credentials, sender) == "t1"  # kept
    assert cache.token("e3", credentials, sender) == "t3"  # kept
    assert cache.token("e2", credentials, sender) == "t5"  # evicted: fetched again
    assert len(cache) == 3

    now[0] += 101  # every token has expired
    assert cache.token("e9", credentials, sender) == "t6"
    assert len(cache) == 1  # the expired ones went when e9's entry was made
    assert len(server.received) == 6


def test_a_refused_or_failed_token_is_not_kept(settings: DeliverySettings, receiver: Any) -> None:
    """A token a receiver refused, or a fetch that failed, leaves nothing behind to keep."""
    now = [1000.0]

    def token(_got: Any, n: int) -> dict[str, Any]:
        if n == 2:
            return {"status": 400, "body": b'{"error": "invalid_client"}'}
        body = f'{{"access_token": "t{n}", "token_type": "Bearer", "expires_in": 100}}'
        return {"body": body.encode()}

    server = receiver(token)
    credentials = OAuthCredentials(
        server.url, "id", seal_secret("s"), (), None, "client_secret_post"
    )
    sender = _loopback_sender(settings)
    cache = TokenCache(clock=lambda: now[0])
    assert cache.token("refused", credentials, sender) == "t1"
    cache.invalidate("refused", credentials, "t1")
    cache.invalidate("never-seen", credentials, "t1")  # nothing to forget, nothing added
    assert len(cache) == 1
    with pytest.raises(TokenError, match="invalid_client"):
        cache.token("failing", credentials, sender)
    assert len(cache) == 1  # the refused token went when the failing entry was made
    assert cache.token("fresh", credentials, sender) == "t3"
    assert len(cache) == 1  # and the failure when this one was
