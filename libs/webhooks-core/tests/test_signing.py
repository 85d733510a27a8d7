"""Signatures are the Standard Webhooks ones: the official library verifies them."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks_core.signing import (
    is_valid_secret,
    new_secret,
    new_signing_key,
    public_key,
    secret_key,
    signature_header,
    signing_key,
    verify,
    verify_with,
)


def test_official_library_verifies_our_signature() -> None:
    secret = new_secret()
    body = b'{"type":"person.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":1}}'
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header([secret_key(secret)], "msg_1", now, body),
    }
    assert Webhook(secret).verify(body, headers)["data"] == {"id": 1}


def test_rotation_header_verifies_with_either_secret() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"a":1}'
    now = int(time.time())
    header = signature_header([secret_key(new), secret_key(old)], "msg_2", now, body)
    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
        assert verify(secret, "msg_2", now, body, header)


def test_tampering_is_detected() -> None:
    secret = new_secret()
    now = int(time.time())
    header = signature_header([secret_key(secret)], "msg_3", now, b"{}")
    assert not verify(secret, "msg_3", now, b'{"x":1}', header)
    assert not verify(new_secret(), "msg_3", now, b"{}", header)
    headers = {"webhook-id": "msg_3", "webhook-timestamp": str(now), "webhook-signature": header}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"x":1}', headers)


def test_secret_shape() -> None:
    assert is_valid_secret(new_secret())
    assert not is_valid_secret("whsec_c2hvcnQ=")  # too short a key
    assert not is_valid_secret("sk_live_abc")
    assert not is_valid_secret("whsec_not base64!")


def test_a_key_given_twice_signs_once() -> None:
    old, new = secret_key(new_secret()), secret_key(new_secret())
    header = signature_header([new, old, new], "msg_3", 1, b"{}")
    assert header.split(" ") == [
        signature_header([new], "msg_3", 1, b"{}"),
        signature_header([old], "msg_3", 1, b"{}"),
    ]


def test_verify_with_checks_the_scheme_of_the_key_it_is_given() -> None:
    """A whsec_ secret verifies the v1 entry, a whpk_ key the v1a one; garbage verifies none."""
    secret, key = new_secret(), new_signing_key()
    body = b'{"x":1}'
    both = signature_header([secret_key(secret)], "msg_1", 1, body, [signing_key(key)])
    v1_only = signature_header([secret_key(secret)], "msg_1", 1, body)
    assert verify_with(secret, "msg_1", 1, body, both)
    assert verify_with(public_key(key), "msg_1", 1, body, both)
    assert not verify_with(public_key(key), "msg_1", 1, body, v1_only)
    assert not verify_with(public_key(new_signing_key()), "msg_1", 1, body, both)
    assert not verify_with("whsec_not base64!", "msg_1", 1, body, both)
    assert not verify_with(key, "msg_1", 1, body, both)  # the secret half is not a public key
