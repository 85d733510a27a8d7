"""HTTP ingestion: publish a message for an application, and relay mode (one-off webhooks).

Both store the message with :func:`webhooks_core.fanout.accept_message` in one transaction
(the delivery engine picks up the delivery rows).  Both honour an ``Idempotency-Key``: the
first request with a key stores its message; a repeat within
``Settings.idempotency_window_seconds`` with the same body gets the first result back (no
second message), and a repeat with a different body is refused with 422, as the IETF
``Idempotency-Key`` draft recommends.  A transaction-scoped advisory lock on the key makes
concurrent repeats wait for the first instead of racing it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jsonschema
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import Conflict, DomainError, InvalidField, NotFound
from webhooks_core.db import transaction
from webhooks_core.envelope import Envelope, utcnow
from webhooks_core.fanout import AcceptResult, accept_message, record_accepted
from webhooks_core.models import (
    Application,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointKind,
    EndpointSecret,
    EventType,
    IdempotencyKey,
    Message,
)
from webhooks_core.observability import MESSAGES_DUPLICATE
from webhooks_core.settings import Settings
from webhooks_core.signing import is_valid_secret, new_secret
from webhooks_core.targets import TargetRefused, check_url

RELAY_EVENT_TYPE = "relay.message"
IDEMPOTENCY_FIELD = "Idempotency-Key"


class PayloadTooLarge(DomainError):
    """The payload is larger than ``Settings.max_payload_bytes``."""

    status = 413
    title = "Payload too large"


@dataclass(frozen=True)
class Accepted:
    """What an ingestion request stored (or had stored, for a repeat).

    ``duplicate`` is True when nothing new was stored: a repeated idempotency key, or an
    event id the application had already published.  ``secret`` is set only when relay mode
    generated the signing secret in this request.
    """

    message: Message
    deliveries: int
    duplicate: bool
    delivery_id: int | None = None
    endpoint_id: uuid.UUID | None = None
    secret: str | None = None


def request_hash(body: dict[str, Any]) -> str:
    """A stable digest of a request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_payload_size(settings: Settings, payload: dict[str, Any]) -> None:
    """Refuse a payload whose compact JSON exceeds the configured limit (413)."""
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"the payload is {size} bytes; the limit is {settings.max_payload_bytes}",
            field="payload",
        )


def _check_against_catalogue(session: Session, event_type: str, payload: dict[str, Any]) -> None:
    found = session.execute(
        select(EventType.archived, EventType.schema).where(EventType.name == event_type)
    ).one_or_none()
    if found is None:
        raise InvalidField(f"unknown event type {event_type!r}", field="event_type")
    archived, schema = found
    if archived:
        raise InvalidField(f"event type {event_type!r} is archived", field="event_type")
    if schema:
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
        if error is not None:
            path = ".".join(str(part) for part in error.absolute_path)
            raise InvalidField(
                f"does not match the event type's schema: {error.message}",
                field="payload" + (f".{path}" if path else ""),
            )


def _require_application(session: Session, app_id: uuid.UUID) -> None:
    if session.get(Application, app_id) is None:
        raise NotFound(f"application {app_id} not found")


def _claim_key(
    session: Session, settings: Settings, app_id: uuid.UUID, key: str, digest: str
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


def _remember_key(session: Session, app_id: uuid.UUID, key: str, digest: str, msg: int) -> None:
    session.add(IdempotencyKey(application_id=app_id, key=key, request_hash=digest, message_id=msg))


def _known_event(session: Session, app_id: uuid.UUID, result: AcceptResult) -> Message:
    """The stored message of a repeated event id, which must be this application's."""
    message = session.get(Message, result.message_id)
    assert message is not None
    if message.application_id != app_id:
        raise Conflict(f"event id {result.event_id!r} is already taken", field="event_id")
    return message


def _stored(session: Session, message_id: int) -> Message:
    message = session.get(Message, message_id)
    assert message is not None
    return message


def _delivery_count(session: Session, message_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.message_id == message_id)
        )
        or 0
    )


def publish_message(
    sessions: sessionmaker[Session],
    settings: Settings,
    app_id: uuid.UUID,
    *,
    event_type: str,
    payload: dict[str, Any],
    event_id: str | None = None,
    channels: list[str] | None = None,
    timestamp: datetime | None = None,
    idempotency_key: str | None = None,
    body: dict[str, Any] | None = None,
) -> Accepted:
    """Validate and store one message of ``app_id`` and fan it out to its endpoints.

    ``body`` is the request as received, hashed to recognise idempotent repeats.
    """
    check_payload_size(settings, payload)
    envelope_fields: dict[str, Any] = {"type": event_type, "data": payload, "channels": channels}
    if event_id is not None:
        envelope_fields["id"] = event_id
    if timestamp is not None:
        envelope_fields["timestamp"] = timestamp
    envelope = Envelope(**envelope_fields)
    digest = request_hash(body if body is not None else envelope_fields)

    with transaction(sessions) as session:
        _require_application(session, app_id)
        if idempotency_key is not None:
            first = _claim_key(session, settings, app_id, idempotency_key, digest)
            if first is not None:
                accepted = Accepted(first, _delivery_count(session, first.id), duplicate=True)
                MESSAGES_DUPLICATE.labels("http").inc()
                return accepted
        _check_against_catalogue(session, event_type, payload)
        result = accept_message(session, envelope, source="http", application_id=app_id)
        if not result.created:
            message = _known_event(session, app_id, result)
            deliveries = _delivery_count(session, message.id)
        else:
            message = _stored(session, result.message_id)
            deliveries = result.deliveries
        if idempotency_key is not None:
            _remember_key(session, app_id, idempotency_key, digest, message.id)
    record_accepted(event_type, result, "http")
    return Accepted(message, deliveries, duplicate=not result.created)


def relay_message(
    sessions: sessionmaker[Session],
    settings: Settings,
    app_id: uuid.UUID,
    *,
    url: str,
    payload: dict[str, Any],
    event_type: str | None = None,
    headers: dict[str, str] | None = None,
    secret: str | None = None,
    event_id: str | None = None,
    idempotency_key: str | None = None,
    body: dict[str, Any] | None = None,
) -> Accepted:
    """Send ``payload`` once to ``url`` without a subscription (relay mode).

    Stores a relay endpoint (``kind='relay'``, never matched by fan-out) with its signing
    secret, the message (``source='relay'``) and its single delivery, which the delivery
    engine sends with the usual signing, retries and attempt log.
    """
    try:
        check_url(url, settings.allowed_networks)
    except TargetRefused as exc:
        raise InvalidField(str(exc), field="url") from None
    if secret is not None and not is_valid_secret(secret):
        raise InvalidField("must be whsec_ followed by base64 of 24 to 64 bytes", field="secret")
    check_payload_size(settings, payload)
    event_type = event_type or RELAY_EVENT_TYPE
    envelope = Envelope(
        type=event_type, data=payload, **({"id": event_id} if event_id is not None else {})
    )
    digest = request_hash(body if body is not None else {"url": url, "payload": payload})

    with transaction(sessions) as session:
        _require_application(session, app_id)
        if idempotency_key is not None:
            first = _claim_key(session, settings, app_id, idempotency_key, digest)
            if first is not None:
                MESSAGES_DUPLICATE.labels("relay").inc()
                return _relay_view(session, first, duplicate=True)
        result = accept_message(session, envelope, source="relay", application_id=app_id)
        if not result.created:
            message = _known_event(session, app_id, result)
            MESSAGES_DUPLICATE.labels("relay").inc()
            return _relay_view(session, message, duplicate=True)
        endpoint = Endpoint(
            application_id=app_id,
            kind=EndpointKind.RELAY.value,
            url=url,
            description="relay mode",
            event_types=[event_type],
            headers=headers or {},
        )
        session.add(endpoint)
        session.flush()
        generated = None if secret is not None else new_secret()
        session.add(EndpointSecret(endpoint_id=endpoint.id, secret=secret or generated))
        delivery = Delivery(
            message_id=result.message_id,
            endpoint_id=endpoint.id,
            application_id=app_id,
            event_type=event_type,
            state=DeliveryState.PENDING.value,
            next_attempt_at=func.now(),
        )
        session.add(delivery)
        session.flush()
        if idempotency_key is not None:
            _remember_key(session, app_id, idempotency_key, digest, result.message_id)
        stored = session.get(Message, result.message_id)
        assert stored is not None
        accepted = Accepted(
            stored,
            1,
            duplicate=False,
            delivery_id=delivery.id,
            endpoint_id=endpoint.id,
            secret=generated,
        )
    record_accepted(event_type, AcceptResult(stored.id, stored.event_id, True, 1), "relay")
    return accepted


def _relay_view(session: Session, message: Message, *, duplicate: bool) -> Accepted:
    delivery = session.scalars(
        select(Delivery).where(Delivery.message_id == message.id).order_by(Delivery.id).limit(1)
    ).first()
    return Accepted(
        message,
        1 if delivery else 0,
        duplicate=duplicate,
        delivery_id=delivery.id if delivery else None,
        endpoint_id=delivery.endpoint_id if delivery else None,
    )
