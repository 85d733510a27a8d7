"""Idempotency keys of ingestion requests (publish and relay).

The first request with an ``Idempotency-Key`` stores its message; a repeat within
``APISettings.idempotency_window_seconds`` with the same body gets the first result back (no
second message), and a repeat with a different body is refused with 422, as the IETF
``Idempotency-Key`` draft recommends.  A transaction-scoped advisory lock on the key makes
concurrent repeats wait for the first instead of racing it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from registration.config import APISettings
from registration.services.errors import InvalidField
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import (
    IdempotencyKey,
    Message,
)

IDEMPOTENCY_FIELD = "Idempotency-Key"


def request_hash(body: dict[str, Any]) -> str:
    """A stable digest of a request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim_key(
    session: Session, settings: APISettings, app_id: uuid.UUID, key: str, digest: str
) -> Message | None:
    """Lock the key for this transaction; return the first request's message if it is known."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"{app_id}:{key}", 0))))
    row = session.get(IdempotencyKey, (app_id, key))
    if row is None:
        return None
    expired = row.created_at < utcnow() - timedelta(seconds=settings.idempotency_window_seconds)
    if expired:
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.application_id == app_id, IdempotencyKey.key == key
            )
        )
        session.flush()
        return None
    if row.request_hash != digest:
        raise InvalidField(
            "was already used with a different request body", field=IDEMPOTENCY_FIELD
        )
    return session.get(Message, row.message_id)


def remember_key(session: Session, app_id: uuid.UUID, key: str, digest: str, msg: int) -> None:
    """Record that the request ``digest`` under ``key`` stored message ``msg``."""
    session.add(IdempotencyKey(application_id=app_id, key=key, request_hash=digest, message_id=msg))
