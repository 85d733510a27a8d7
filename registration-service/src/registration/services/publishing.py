"""Publishing a message of an application over HTTP, one or a batch.

The message is stored with :func:`webhooks_core.messages.fanout.accept_message` in one
transaction (the delivery engine picks up the delivery rows), honouring an ``Idempotency-Key``
(:mod:`.idempotency`) and the type's schema (:mod:`.catalogue`).

The common case (a known, unarchived type; a new key; no client-chosen event id) takes the
fast path, one prepared statement (:mod:`.publish_statement`); anything else, or anything that
statement declines, takes the general path in the same transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from registration.config import APISettings
from registration.services.catalogue import catalogue, check_against_catalogue, validate_payload
from registration.services.errors import DomainError, InvalidField, NotFound
from registration.services.idempotency import claim_key, remember_key, request_hash
from registration.services.publish_statement import FAST_PUBLISH, FAST_PUBLISH_WITH_KEY
from webhooks_core.db import run_transaction
from webhooks_core.deliveries.ordering import lock_ordering_keys
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import AcceptResult, accept_message, record_accepted
from webhooks_core.models import (
    Application,
    Delivery,
    DeliveryState,
    EndpointKind,
    Message,
)


class PayloadTooLarge(DomainError):
    """The payload is larger than ``APISettings.max_payload_bytes``."""

    status = 413
    title = "Payload too large"


@dataclass(frozen=True)
class StoredMessage:
    """What an ingestion answer reports of a stored message."""

    id: int
    event_id: str
    event_type: str
    occurred_at: datetime
    channels: list[str] | None
    ordering_key: str | None = None

    @classmethod
    def of(cls, message: Message) -> StoredMessage:
        """The report of a loaded message."""
        return cls(
            message.id,
            message.event_id,
            message.event_type,
            message.occurred_at,
            message.channels,
            message.ordering_key,
        )


@dataclass(frozen=True)
class Accepted:
    """What an ingestion request stored (or had stored, for a repeat).

    ``duplicate`` is True when nothing new was stored: a repeated idempotency key, or an
    event id the application had already published.  ``secret`` is set only when relay mode
    generated the signing secret in this request.
    """

    message: StoredMessage
    deliveries: int
    duplicate: bool
    delivery_id: int | None = None
    endpoint_id: uuid.UUID | None = None
    secret: str | None = None


def check_payload_size(settings: APISettings, payload: dict[str, Any]) -> None:
    """Refuse a payload whose compact JSON exceeds the configured limit (413)."""
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"the payload is {size} bytes; the limit is {settings.max_payload_bytes}",
            field="payload",
        )


def require_application(session: Session, app_id: uuid.UUID) -> None:
    """404 unless the application exists."""
    if session.get(Application, app_id) is None:
        raise NotFound(f"application {app_id} not found")


def known_event(session: Session, app_id: uuid.UUID, result: AcceptResult) -> Message:
    """The stored message of an event id this application published before.

    Event ids are unique per application, so another application's use of the same id is
    never found here (nor revealed: it is a different message).
    """
    message = session.get(Message, result.message_id)
    assert message is not None
    assert message.application_id == app_id
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


@dataclass(frozen=True)
class Publication:
    """One message to publish, checked and ready to store."""

    envelope: Envelope
    idempotency_key: str | None
    digest: str
    client_event_id: bool  # the client chose the event id (it may have used it already)


def prepare_publication(
    settings: APISettings,
    *,
    event_type: str,
    payload: dict[str, Any],
    event_id: str | None = None,
    channels: list[str] | None = None,
    timestamp: datetime | None = None,
    ordering_key: str | None = None,
    idempotency_key: str | None = None,
    body: dict[str, Any] | None = None,
) -> Publication:
    """Check what needs no database (size) and build the envelope and the request digest.

    ``body`` is the request as received, hashed to recognise idempotent repeats.
    """
    check_payload_size(settings, payload)
    envelope_fields: dict[str, Any] = {"type": event_type, "data": payload, "channels": channels}
    if event_id is not None:
        envelope_fields["id"] = event_id
    if timestamp is not None:
        envelope_fields["timestamp"] = timestamp
    if ordering_key is not None:
        envelope_fields["ordering_key"] = ordering_key
    envelope = Envelope(**envelope_fields)
    digest = request_hash(body if body is not None else envelope_fields)
    return Publication(envelope, idempotency_key, digest, client_event_id=event_id is not None)


def publish_message(
    sessions: sessionmaker[Session],
    settings: APISettings,
    app_id: uuid.UUID,
    publication: Publication,
) -> Accepted:
    """Store one message of ``app_id`` (see :func:`prepare_publication`) and fan it out."""
    accepted = run_transaction(
        sessions, lambda session: _publish(session, settings, app_id, publication)
    )
    _record(accepted)
    return accepted


def publish_messages(
    sessions: sessionmaker[Session],
    settings: APISettings,
    app_id: uuid.UUID,
    publications: Sequence[Publication | DomainError],
) -> list[Accepted | DomainError]:
    """Store several messages of ``app_id`` in one transaction, each on its own terms.

    Each publication is accepted, recognised as a repeat, or refused (a :class:`DomainError`
    in its place of the result) exactly as :func:`publish_message` would treat it alone;
    entries that are already errors are passed through.  Idempotency keys are locked first,
    in sorted order, so concurrent batches sharing keys cannot deadlock; the messages are
    then stored in request order, which is their acceptance order (an ordering key's
    deliveries follow it).
    """

    def work(session: Session) -> list[Accepted | DomainError]:
        results: dict[int, Accepted | DomainError] = {}
        pending: list[tuple[int, Publication]] = []
        for index, publication in enumerate(publications):
            if isinstance(publication, Publication):
                pending.append((index, publication))
            else:
                results[index] = publication
        _lock_keys(session, app_id, [p.idempotency_key for _, p in pending])
        lock_ordering_keys(session, [p.envelope.ordering_key for _, p in pending])
        for index, publication in pending:
            try:
                results[index] = _publish(session, settings, app_id, publication)
            except NotFound:
                raise  # the application itself is missing: the whole batch is a 404
            except DomainError as exc:
                results[index] = exc
        return [results[index] for index in range(len(publications))]

    results = run_transaction(sessions, work)
    for result in results:
        if isinstance(result, Accepted):
            _record(result)
    return results


_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:names AS text[])) k"
)


def _lock_keys(session: Session, app_id: uuid.UUID, keys: Sequence[str | None]) -> None:
    """Take the idempotency keys' transaction locks (the ones each publish takes again,
    re-entrantly) in sorted order, in one round trip."""
    names = sorted({f"{app_id}:{key}" for key in keys if key is not None})
    if names:
        session.execute(_LOCK_KEYS, {"names": names})


def _record(accepted: Accepted) -> None:
    message = accepted.message
    created = not accepted.duplicate
    outcome = AcceptResult(message.id, message.event_id, created, accepted.deliveries * created)
    record_accepted(message.event_type, outcome, "http")


def _publish(
    session: Session, settings: APISettings, app_id: uuid.UUID, publication: Publication
) -> Accepted:
    """Store one publication in ``session``'s transaction: the fast path, else the general."""
    fast = _publish_fast(session, app_id, publication)
    return fast or _publish_general(session, settings, app_id, publication)


def _publish_fast(session: Session, app_id: uuid.UUID, publication: Publication) -> Accepted | None:
    envelope = publication.envelope
    entry = catalogue.get(envelope.type)
    if entry is None or publication.client_event_id:
        return None
    try:
        validate_payload(entry, envelope.data)
    except InvalidField:
        return None  # the general path refuses it, after looking for a first result
    key = publication.idempotency_key
    if envelope.ordering_key is not None:
        # The idempotency key's lock first, then the ordering key's, as every path takes them.
        _lock_keys(session, app_id, [key])
        lock_ordering_keys(session, [envelope.ordering_key])
    params: dict[str, Any] = {
        "app_id": str(app_id),
        "event_type": envelope.type,
        "schema_digest": entry.digest,
        "event_id": envelope.id,
        "payload": json.dumps(envelope.data, separators=(",", ":"), ensure_ascii=False),
        "channels": envelope.channels,
        "occurred_at": envelope.timestamp,
        "ordering_key": envelope.ordering_key,
        "pending": DeliveryState.PENDING.value,
        "subscription": EndpointKind.SUBSCRIPTION.value,
    }
    if key is not None:
        params |= {"key": key, "request_hash": publication.digest, "lock_name": f"{app_id}:{key}"}
    row = (FAST_PUBLISH_WITH_KEY if key else FAST_PUBLISH).execute(session, params)
    if row.message_id is None:
        return None
    message = StoredMessage(
        row.message_id,
        envelope.id,
        envelope.type,
        envelope.timestamp,
        envelope.channels,
        envelope.ordering_key,
    )
    return Accepted(message, int(row.deliveries), duplicate=False)


def _publish_general(
    session: Session, settings: APISettings, app_id: uuid.UUID, publication: Publication
) -> Accepted:
    envelope = publication.envelope
    key = publication.idempotency_key
    require_application(session, app_id)
    if key is not None:
        first = claim_key(session, settings, app_id, key, publication.digest)
        if first is not None:
            deliveries = _delivery_count(session, first.id)
            return Accepted(StoredMessage.of(first), deliveries, duplicate=True)
    check_against_catalogue(session, envelope.type, envelope.data)
    result = accept_message(session, envelope, source="http", application_id=app_id)
    if not result.created:
        message = known_event(session, app_id, result)
        deliveries = _delivery_count(session, message.id)
    else:
        message = _stored(session, result.message_id)
        deliveries = result.deliveries
    if key is not None:
        remember_key(session, app_id, key, publication.digest, message.id)
    return Accepted(StoredMessage.of(message), deliveries, duplicate=not result.created)
