"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is ``whsec_`` followed by base64 of 24 random bytes.  The signed content is
``{webhook-id}.{webhook-timestamp}.{body}``; the header carries one ``v1,<base64 HMAC-SHA256>``
per active secret, separated by spaces, so receivers keep verifying during a rotation.  A
rotation leaves at most two active secrets (the current one and the previous one, for its grace
period); a key is never signed with twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key bytes of a ``whsec_`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("signing secrets start with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)


def is_valid_secret(secret: str) -> bool:
    """True when ``secret`` is a ``whsec_`` secret whose key is 24 to 64 bytes long."""
    try:
        return 24 <= len(secret_key(secret)) <= 64
    except ValueError:
        return False


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` entry for ``body`` sent as ``msg_id`` at ``timestamp``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one signature per distinct key, space separated."""
    distinct = dict.fromkeys(keys)  # in order, without repeats
    return " ".join(sign(key, msg_id, timestamp, body) for key in distinct)


def verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when one of the ``v1`` signatures in ``header`` matches ``secret``."""
    expected = sign(secret_key(secret), msg_id, timestamp, body)
    return any(
        hmac.compare_digest(expected, candidate)
        for candidate in header.split()
        if candidate.startswith("v1,")
    )
