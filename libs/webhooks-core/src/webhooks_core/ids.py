"""Identifiers that leave the platform.

Message ids become the ``webhook-id`` header, so they are unique, stable across retries and
roughly time-ordered (which keeps the unique index on them compact).
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in ULID.


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_ulid() -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits."""
    millis = int(time.time() * 1000)
    randomness = int.from_bytes(os.urandom(10), "big")
    return _base32(millis, 10) + _base32(randomness, 16)


def new_message_id() -> str:
    """A new message (event) id, e.g. ``msg_01JD3...``."""
    return f"msg_{new_ulid()}"
