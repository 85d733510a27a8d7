"""``webhooks verify``: what a receiver's author runs on a captured request."""

from __future__ import annotations

import time

from click.testing import CliRunner

from registration.cli.main import cli
from webhooks_core import signing

SECRET = signing.new_secret()
BODY = b'{"type":"person.created","timestamp":"2026-11-23T10:00:00Z","data":{"id":7}}'


def _request(body: bytes = BODY, *, stamp: int | None = None, secret: str = SECRET) -> bytes:
    stamp = int(time.time()) if stamp is None else stamp
    signature = signing.signature_header([signing.secret_key(secret)], "msg_1", stamp, BODY)
    head = (
        "POST /hooks HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"
        f"webhook-id: msg_1\r\nwebhook-timestamp: {stamp}\r\nwebhook-signature: {signature}\r\n"
    )
    return head.encode() + b"\r\n" + body


def _verify(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, ["verify", *args], input=input)


def test_a_valid_request_on_stdin() -> None:
    result = _verify("--secret", SECRET, input=_request())
    assert result.exit_code == 0, result.output
    assert "valid: the signature is valid" in result.stdout
    assert "webhook-id:        msg_1" in result.stdout


def test_a_changed_body_or_another_secret_is_invalid() -> None:
    tampered = _verify("--secret", SECRET, input=_request(BODY.replace(b"7", b"8")))
    assert tampered.exit_code == 1
    assert "invalid: no signature matches" in tampered.stderr
    other = _verify("--secret", signing.new_secret(), input=_request())
    assert other.exit_code == 1


def test_an_old_timestamp_is_refused_unless_told_not_to_check() -> None:
    old = _request(stamp=int(time.time()) - 3600)
    refused = _verify("--secret", SECRET, input=old)
    assert refused.exit_code == 1
    assert "replayed or delayed" in refused.stderr
    accepted = _verify("--secret", SECRET, "--no-timestamp-check", input=old)
    assert accepted.exit_code == 0


def test_headers_and_body_files(tmp_path) -> None:
    raw = _request()
    head, body = raw.split(b"\r\n\r\n", 1)
    (tmp_path / "headers.txt").write_bytes(head)
    (tmp_path / "body.json").write_bytes(body)
    result = _verify(
        "--secret", SECRET,
        "--headers", str(tmp_path / "headers.txt"), "--body", str(tmp_path / "body.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    missing = _verify("--secret", SECRET, "--headers", str(tmp_path / "headers.txt"))
    assert missing.exit_code == 2


def test_a_rotation_header_with_two_signatures_verifies_with_either_secret() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    stamp = int(time.time())
    keys = [signing.secret_key(new), signing.secret_key(old)]
    header = signing.signature_header(keys, "msg_2", stamp, BODY)
    raw = (
        f"webhook-id: msg_2\nwebhook-timestamp: {stamp}\nwebhook-signature: {header}\n\n"
    ).encode() + BODY
    for secret in (old, new):
        assert _verify("--secret", secret, input=raw).exit_code == 0


def test_missing_headers_are_named() -> None:
    result = _verify("--secret", SECRET, input=b"Content-Type: application/json\n\n{}")
    assert result.exit_code == 1
    assert "missing header(s): webhook-id, webhook-timestamp, webhook-signature" in result.stderr
