"""Real deliveries: auth settings become the Authorization header; v1a (Ed25519) signatures.

The v1a signatures are checked three ways: an independent Ed25519 check written here with the
``cryptography`` package (not the platform's code), the CLI's ``webhooks verify`` with the
``whpk_`` public key, and (for v1 alongside) the official ``standardwebhooks`` library, which
verifies v1 only.
"""

from __future__ import annotations

import base64
from typing import Any

from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

from registration.cli.main import cli
from registration.services import endpoints
from webhooks_core.settings import Settings


def ed25519_verifies(public: str, got: Any) -> list[bool]:
    """Each v1a entry of the request checked with ``public`` (a whpk_ key), independently."""
    assert public.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public[len("whpk_") :]))
    headers = {name.lower(): value for name, value in got.headers.items()}
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + got.body
    results = []
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        raw = base64.b64decode(signature, validate=True)
        assert len(raw) == 64  # an Ed25519 signature, base64 as the specification shows
        try:
            key.verify(raw, content)
        except InvalidSignature:
            results.append(False)
        else:
            results.append(True)
    return results


def cli_verify(key: str, got: Any) -> Any:
    head = "".join(f"{name}: {value}\r\n" for name, value in got.headers.items())
    raw = f"POST {got.path} HTTP/1.1\r\n{head}\r\n".encode() + got.body
    return CliRunner().invoke(cli, ["verify", "--secret", key], input=raw)


def test_basic_auth_v1_and_v1a_on_a_real_delivery(
    platform: Any, receiver: Any, wait_for: Any, settings: Settings
) -> None:
    server = receiver()
    app_id = platform.application()
    endpoint, _ = endpoints.upsert_endpoint(
        platform.sessions,
        settings,
        app_id,
        {
            "url": server.url,
            "auth": {"type": "basic", "username": "ada", "password": "s3cret:with-colon"},
            "headers": {"X-Team": "billing", "X-Api-Key": "key-123"},
            "signature_schemes": ["v1", "v1a"],
        },
    )
    secret = endpoints.get_secret(platform.sessions, app_id, endpoint.id).key
    public = endpoints.get_signing_key(platform.sessions, app_id, endpoint.id).key

    platform.publish()
    got = wait_for(lambda: server.received and server.received[0], message="one delivery")
    expected = "Basic " + base64.b64encode(b"ada:s3cret:with-colon").decode()
    assert got.headers["Authorization"] == expected
    assert got.headers["X-Api-Key"] == "key-123"  # a sealed custom header, sent in clear
    assert got.headers["X-Team"] == "billing"
    entries = got.headers["webhook-signature"].split(" ")
    assert [entry.split(",")[0] for entry in entries] == ["v1", "v1a"]
    assert ed25519_verifies(public, got) == [True]
    Webhook(secret).verify(got.body, {k.lower(): v for k, v in got.headers.items()})
    for key in (public, secret):
        result = cli_verify(key, got)
        assert result.exit_code == 0, result.output
        assert "valid: the signature is valid" in result.stdout
    # Another endpoint's public key does not verify it, with the CLI nor independently.
    other, _ = endpoints.upsert_endpoint(
        platform.sessions,
        settings,
        app_id,
        {"url": server.url + "/other", "signature_schemes": ["v1a"]},
    )
    other_public = endpoints.get_signing_key(platform.sessions, app_id, other.id).key
    assert ed25519_verifies(other_public, got) == [False]
    assert cli_verify(other_public, got).exit_code == 1


def test_bearer_auth_and_v1a_only_through_a_rotation(
    platform: Any, receiver: Any, wait_for: Any, settings: Settings
) -> None:
    server = receiver()
    app_id = platform.application()
    endpoint, _ = endpoints.upsert_endpoint(
        platform.sessions,
        settings,
        app_id,
        {
            "url": server.url,
            "auth": {"type": "bearer", "token": "tok-0123456789"},
            "signature_schemes": ["v1a"],
        },
    )
    first = endpoints.get_signing_key(platform.sessions, app_id, endpoint.id).key
    assert settings.secret_rotation_grace_seconds > 0
    keys = [first]
    for _ in range(2):
        view = endpoints.rotate_signing_key(platform.sessions, settings, app_id, endpoint.id, None)
        keys.append(view.key)
        assert [key for key, _ in view.previous] == [keys[-2]]

    platform.publish()
    got = wait_for(lambda: server.received and server.received[0], message="one delivery")
    assert got.headers["Authorization"] == "Bearer tok-0123456789"
    entries = got.headers["webhook-signature"].split(" ")
    assert all(entry.startswith("v1a,") for entry in entries)
    assert len(entries) == 2  # the current key and the previous one, in its grace period
    assert any(ed25519_verifies(keys[-1], got))
    assert any(ed25519_verifies(keys[-2], got))
    assert not any(ed25519_verifies(keys[0], got))  # stopped signing at the next rotation
    assert cli_verify(keys[-2], got).exit_code == 0
    assert cli_verify(keys[0], got).exit_code == 1
