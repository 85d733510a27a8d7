"""The auth scenario's services: the token server issues and counts tokens the receiver
accepts; the TLS receivers serve HTTPS with the test CA, the mutual one only to a client
with a certificate; the endpoints' credentials go through the API's own checks."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from bench.auth import BenchPKI
from bench.receiver import RunningReceiver, derive_client_secret, derive_secret
from bench.report import auth_line
from bench.tokens import TokenServer
from registration.config import APISettings
from registration.services.endpoint_credentials import oauth_columns, tls_columns
from webhooks_core.endpoints import sealing

SEED = "auth-test-seed"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> BenchPKI:
    return BenchPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer(seed=SEED, lifetime_seconds=120) as server:
        yield server


def signed(path: str, msg_id: str, body: bytes, **extra: str) -> dict[str, str]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(derive_secret(SEED, path)).sign(msg_id, now, body.decode()),
        **extra,
    }


def test_token_server_issues_counted_tokens_the_bearer_receiver_accepts(
    tokens: TokenServer, tmp_path: Path
) -> None:
    path = "/r/bearer/t1"
    secret = derive_client_secret(SEED, path)
    basic = requests.post(
        tokens.url, data={"grant_type": "client_credentials"}, auth=(path, secret), timeout=5
    )
    posted = requests.post(
        tokens.url,
        data={"grant_type": "client_credentials", "client_id": path, "client_secret": secret},
        timeout=5,
    )
    wrong = requests.post(
        tokens.url, data={"grant_type": "client_credentials"}, auth=(path, "nope"), timeout=5
    )
    grant = requests.post(
        tokens.url, data={"grant_type": "password"}, auth=(path, secret), timeout=5
    )
    assert (basic.status_code, posted.status_code) == (200, 200)
    assert basic.json()["token_type"] == "Bearer"
    assert basic.json()["expires_in"] == 120
    assert basic.json()["access_token"] != posted.json()["access_token"]
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_client"})
    assert (grant.status_code, grant.json()) == (400, {"error": "unsupported_grant_type"})
    assert tokens.issued == {path: 2}
    assert (tokens.issued_total, tokens.refused) == (2, 1)

    body = json.dumps({"type": "a.b", "data": {}}).encode()
    token = basic.json()["access_token"]
    with RunningReceiver(tmp_path / "recv", seed=SEED) as receiver, requests.Session() as http:
        answers = [
            http.post(receiver.url(p), data=body, headers=signed(p, f"m{n}", body, **extra))
            for n, (p, extra) in enumerate(
                [
                    (path, {"Authorization": f"Bearer {token}"}),
                    (path, {}),
                    # A token issued to another client is refused.
                    ("/r/bearer/t2", {"Authorization": f"Bearer {token}"}),
                ]
            )
        ]
        receipts = {r.webhook_id: (r.signature, r.status) for r in receiver.receipts()}
    assert [a.status_code for a in answers] == [200, 401, 401]
    assert receipts == {"m0": (1, 200), "m1": (1, 401), "m2": (1, 401)}


@pytest.fixture(params=["server", "mutual"])
def tls_receiver(
    request: pytest.FixtureRequest, pki: BenchPKI, tmp_path: Path
) -> Iterator[RunningReceiver]:
    tls = pki.server if request.param == "server" else pki.mutual
    with RunningReceiver(tmp_path / "recv", processes=2, seed=SEED, tls=tls) as receiver:
        yield receiver


def test_tls_receivers_serve_https_with_the_test_ca(
    tls_receiver: RunningReceiver, pki: BenchPKI
) -> None:
    assert tls_receiver.url("/x").startswith("https://127.0.0.1:")
    path, body = "/r/ok/tls", b'{"type":"a.b","data":{}}'
    tls = tls_receiver.tls
    assert tls is not None
    client = None
    if tls.client_ca is not None:
        assert tls.client_certificate is not None
        assert tls.client_key is not None
        client = (str(tls.client_certificate), str(tls.client_key))
        # Without a client certificate the handshake fails: nothing reaches the receiver.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(
                tls_receiver.url(path),
                data=body,
                headers=signed(path, "anon", body),
                verify=str(tls.ca),
                timeout=5,
            )
    # The system's CAs do not know the test CA.
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(tls_receiver.url(path), data=body, cert=client, timeout=5)
    answer = requests.post(
        tls_receiver.url(path),
        data=body,
        headers=signed(path, "tls_1", body),
        verify=str(tls.ca),
        cert=client,
        timeout=5,
    )
    assert answer.status_code == 200
    assert [(r.webhook_id, r.signature, r.status) for r in tls_receiver.receipts()] == [
        ("tls_1", 1, 200)
    ]
    assert tls_receiver.stats()["ok"] == 1


def test_endpoint_credentials_pass_the_api_checks_and_are_sealed(
    pki: BenchPKI, make_settings: Callable[..., APISettings]
) -> None:
    # The root conftest installs the test sealing keys.
    settings = make_settings(APISettings)
    secret = derive_client_secret(SEED, "/r/bearer/a")
    oauth = oauth_columns(
        settings,
        {"token_url": "http://127.0.0.1:9/oauth/token", "client_id": "/r/bearer/a",
         "client_secret": secret},
        None,
    )  # fmt: skip
    assert oauth["oauth_client_secret"] != secret
    assert sealing.unseal(oauth["oauth_client_secret"]) == secret
    mutual = tls_columns(
        {
            "client_certificate": pki.client_certificate_pem,
            "client_key": pki.client_key_pem,
            "ca_bundle": pki.ca_pem,
        }
    )
    assert sealing.unseal(mutual["tls_client_key"]) == pki.client_key_pem
    assert mutual["tls_certificate_expires_at"] is not None
    # The platform's client context from these PEMs trusts the receiver's certificate.
    context = ssl.create_default_context(cadata=pki.ca_pem)
    assert context.cert_store_stats()["x509_ca"] == 1


def test_auth_line_reads_the_scenario_and_zeros_what_did_not_run() -> None:
    results = {
        "auth": {
            "hmac_per_s": 812.4,
            "hmac_ms": 1.23456,
            "oauth_per_s": 790,
            "oauth_ms": 1.3,
            "oauth_tokens": 40,
            "https_per_s": 700.6,
            "https_ms": 1.9,
        }
    }
    assert auth_line(results) == (
        "bench-auth: hmac_per_s=812 hmac_ms=1.235 oauth_per_s=790 oauth_ms=1.300 "
        "oauth_tokens=40 https_per_s=701 https_ms=1.900 mtls_per_s=0 mtls_ms=0.000"
    )
    assert auth_line({}).startswith("bench-auth: hmac_per_s=0 hmac_ms=0.000")
