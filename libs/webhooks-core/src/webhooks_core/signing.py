"""Standard Webhooks signatures (https://www.standardwebhooks.com/): ``v1`` and ``v1a``.

``v1`` (symmetric): a secret is ``whsec_`` followed by base64 of 24 random bytes.  The signed
content is ``{webhook-id}.{webhook-timestamp}.{body}``; the header carries one
``v1,<base64 HMAC-SHA256>`` per active secret, separated by spaces, so receivers keep verifying
during a rotation.  A rotation leaves at most two active secrets (the current one and the
previous one, for its grace period); a key is never signed with twice.

``v1a`` (asymmetric): an Ed25519 key pair per endpoint, the secret key serialised ``whsk_`` +
base64 (the 32-byte seed followed by the 32-byte public key, as libsodium and Go store it; a
bare 32-byte seed is accepted too), the public key ``whpk_`` + base64 of its 32 bytes.  The
same content is signed; the header entry is ``v1a,<base64 of the 64-byte signature>``, next to
the ``v1`` entries when an endpoint signs with both.  Rotation follows the same grace rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

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


def signature_header(
    keys: Iterable[bytes],
    msg_id: str,
    timestamp: int,
    body: bytes,
    ed25519_keys: Iterable[Ed25519PrivateKey] = (),
) -> str:
    """The ``webhook-signature`` header value: one signature per distinct key, space separated.

    ``keys`` sign ``v1`` (HMAC), ``ed25519_keys`` sign ``v1a``.
    """
    distinct = dict.fromkeys(keys)  # in order, without repeats
    entries = [sign(key, msg_id, timestamp, body) for key in distinct]
    entries += [sign_v1a(key, msg_id, timestamp, body) for key in ed25519_keys]
    return " ".join(entries)


def verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when one of the ``v1`` signatures in ``header`` matches ``secret``."""
    expected = sign(secret_key(secret), msg_id, timestamp, body)
    return any(
        hmac.compare_digest(expected, candidate)
        for candidate in header.split()
        if candidate.startswith("v1,")
    )


# --- v1a: Ed25519 (asymmetric) ---------------------------------------------------------

SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
SCHEMES = ("v1", "v1a")


def new_signing_key() -> str:
    """A fresh ``whsk_`` Ed25519 secret key: base64 of the 32-byte seed and the public key."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SIGNING_KEY_PREFIX + base64.b64encode(seed + public).decode()


def signing_key(key: str) -> Ed25519PrivateKey:
    """The Ed25519 private key of a ``whsk_`` key (a 32-byte seed, or seed and public key)."""
    if not key.startswith(SIGNING_KEY_PREFIX):
        raise ValueError("Ed25519 signing keys start with whsk_")
    raw = base64.b64decode(key[len(SIGNING_KEY_PREFIX) :], validate=True)
    if len(raw) not in (32, 64):
        raise ValueError("a whsk_ key holds 32 or 64 bytes")
    private = Ed25519PrivateKey.from_private_bytes(raw[:32])
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if len(raw) == 64 and not hmac.compare_digest(raw[32:], public):
        raise ValueError("the public half of the whsk_ key does not match its seed")
    return private


def is_valid_signing_key(key: str) -> bool:
    """True when ``key`` is a usable ``whsk_`` key."""
    try:
        signing_key(key)
    except ValueError:
        return False
    return True


def signing_key_public_bytes(key: str) -> bytes:
    """The raw public key of a ``whsk_`` key (what identifies it)."""
    return signing_key(key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key(key: str) -> str:
    """The ``whpk_`` public key receivers verify ``v1a`` signatures of ``key`` with."""
    raw = signing_key(key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def sign_v1a(key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1a,<signature>`` entry: Ed25519 over the same content as ``v1``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(key.sign(content)).decode()


def verifying_key(public: str) -> Ed25519PublicKey:
    """The Ed25519 public key of a ``whpk_`` key."""
    if not public.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError("Ed25519 public keys start with whpk_")
    raw = base64.b64decode(public[len(PUBLIC_KEY_PREFIX) :], validate=True)
    if len(raw) != 32:
        raise ValueError("a whpk_ key holds 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def is_valid_public_key(public: str) -> bool:
    """True when ``public`` is a ``whpk_`` Ed25519 public key."""
    try:
        verifying_key(public)
    except ValueError:
        return False
    return True


def verify_v1a(public: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when one of the ``v1a`` signatures in ``header`` verifies with ``whpk_`` ``public``."""
    verifier = verifying_key(public)
    content = f"{msg_id}.{timestamp}.".encode() + body
    for candidate in header.split():
        if not candidate.startswith("v1a,"):
            continue
        try:
            verifier.verify(base64.b64decode(candidate[4:], validate=True), content)
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def verify_with(key: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when a signature in ``header`` verifies with ``key``, whichever scheme it holds.

    A ``whsec_`` secret checks the ``v1`` entries, a ``whpk_`` public key the ``v1a`` ones; a
    receiver that keeps both kinds (an endpoint signing both, or rotating from one to the
    other) passes each here.  Anything else verifies nothing rather than raising: a receiver
    answers a bad request, not an error.
    """
    if is_valid_public_key(key):
        return verify_v1a(key, msg_id, timestamp, body, header)
    if is_valid_secret(key):
        return verify(key, msg_id, timestamp, body, header)
    return False
