"""``webhooks endpoints create`` with auth and v1a, ``public-key``, ``rotate-signing-key``,
and ``verify`` with a whpk_ public key."""

from __future__ import annotations

import json
import time

from webhooks_core import signing


def test_create_with_basic_auth_and_v1a_then_public_key_and_rotation(webhooks) -> None:
    created = webhooks(
        "endpoints", "create", "http://127.0.0.1:9/bank",
        "--basic-auth", "ada:correct-horse-battery", "--sign", "v1", "--sign", "v1a", "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    endpoint = json.loads(created.stdout)
    assert endpoint["auth"]["password"] == "********tery"
    assert "correct-horse-battery" not in created.stdout
    assert endpoint["signature_schemes"] == ["v1", "v1a"]

    public = webhooks("endpoints", "public-key", endpoint["id"])
    assert public.exit_code == 0, public.output
    first = public.stdout.strip()
    assert signing.is_valid_public_key(first)

    key = signing.new_signing_key()
    rotated = webhooks("endpoints", "rotate-signing-key", endpoint["id"], "--key", key)
    assert rotated.exit_code == 0, rotated.output
    assert rotated.stdout.strip() == signing.public_key(key)
    assert first in rotated.stderr  # the previous key, still signing

    refused = webhooks("endpoints", "create", "http://127.0.0.1:9/x", "--bearer-token", "has space")
    assert refused.exit_code == 1
    assert "auth.bearer.token" in refused.output
    both = webhooks(
        "endpoints", "create", "http://127.0.0.1:9/x", "--bearer-token", "t", "--basic-auth", "a:b"
    )
    assert both.exit_code == 2


def test_verify_checks_v1a_with_a_public_key(webhooks) -> None:
    key = signing.new_signing_key()
    body = b'{"type":"person.created","timestamp":"2026-12-01T10:00:00Z","data":{}}'
    stamp = int(time.time())
    header = signing.signature_header([], "msg_1", stamp, body, [signing.signing_key(key)])
    request = (
        f"POST /h HTTP/1.1\r\nwebhook-id: msg_1\r\nwebhook-timestamp: {stamp}\r\n"
        f"webhook-signature: {header}\r\n\r\n"
    ).encode() + body
    valid = webhooks("verify", "--secret", signing.public_key(key), input=request)
    assert valid.exit_code == 0, valid.output
    other = webhooks(
        "verify", "--secret", signing.public_key(signing.new_signing_key()), input=request
    )
    assert other.exit_code == 1
    assert "no v1a signature matches this public key" in other.stderr
    tampered = webhooks(
        "verify", "--secret", signing.public_key(key), input=request.replace(b"{}", b"[]")
    )
    assert tampered.exit_code == 1
    # A v1 secret finds no v1 signature in a v1a-only header; a malformed key is bad usage.
    assert webhooks("verify", "--secret", signing.new_secret(), input=request).exit_code == 1
    assert webhooks("verify", "--secret", "whpk_abc", input=request).exit_code == 2
