"""HTTP ingestion: publish a message for an application, and relay mode (one-off webhooks).

Both store the message with :func:`webhooks_core.fanout.accept_message` in one transaction
(the delivery engine picks up the delivery rows).  Both honour an ``Idempotency-Key``: the
first request with a key stores its message; a repeat within
``Settings.idempotency_window_seconds`` with the same body gets the first result back (no
second message), and a repeat with a different body is refused with 422, as the IETF
``Idempotency-Key`` draft recommends.  A transaction-scoped advisory lock on the key makes
concurrent repeats wait for the first instead of racing it.

The common case (a known, unarchived type; a new key; no client-chosen event id) takes a fast
path: one statement that checks the application and the event type, claims the key, stores the
message and fans it out (:data:`_PUBLISH_SQL`), so a request costs one round trip and the
commit.  The payload is validated beforehand against the type's schema as cached in this
process, and the statement stores nothing unless the catalogue still holds that very schema
(compared by digest) unarchived: a stale cache entry can only send a request down the general
path, which reads the catalogue again, never let a message past a changed schema.  Anything
else the statement meets (unknown application, a key already taken, an expired key) also
stores nothing and falls back to the general path in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jsonschema
from sqlalchemy import TEXT, Row, cast, delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import DomainError, InvalidField, NotFound
from webhooks_core.db import run_transaction, transaction
from webhooks_core.endpoints.matching import receives_sql
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
class StoredMessage:
    """What an ingestion answer reports of a stored message."""

    id: int
    event_id: str
    event_type: str
    occurred_at: datetime
    channels: list[str] | None

    @classmethod
    def of(cls, message: Message) -> StoredMessage:
        """The report of a loaded message."""
        return cls(
            message.id, message.event_id, message.event_type, message.occurred_at, message.channels
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


@dataclass(frozen=True)
class _CataloguedType:
    """An unarchived event type as this process last read it."""

    digest: str  # md5 of the schema's jsonb text ('' for none), as PostgreSQL computes it
    validator: Any  # a jsonschema validator, or None when the type has no schema


class _Catalogue:
    """Event types read from the catalogue, kept per process to validate payloads cheaply.

    Only what validation needs is kept; whether an entry is still current is checked by the
    statement that stores the message (see the module docstring), so entries need no expiry.
    """

    MAX_TYPES = 1024

    def __init__(self) -> None:
        self._types: dict[str, _CataloguedType] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> _CataloguedType | None:
        return self._types.get(name)

    def read(self, session: Session, name: str) -> _CataloguedType:
        """Read ``name`` from the catalogue (422 if unknown or archived) and remember it."""
        found = session.execute(
            select(
                EventType.archived,
                EventType.schema,
                func.md5(func.coalesce(cast(EventType.schema, TEXT), "")),
            ).where(EventType.name == name)
        ).one_or_none()
        if found is None:
            self.forget(name)
            raise InvalidField(f"unknown event type {name!r}", field="event_type")
        archived, schema, digest = found
        if archived:
            self.forget(name)
            raise InvalidField(f"event type {name!r} is archived", field="event_type")
        validator = jsonschema.validators.validator_for(schema)(schema) if schema else None
        entry = _CataloguedType(digest, validator)
        with self._lock:
            if len(self._types) >= self.MAX_TYPES:
                self._types.clear()
            self._types[name] = entry
        return entry

    def forget(self, name: str) -> None:
        with self._lock:
            self._types.pop(name, None)


_catalogue = _Catalogue()


def _validate_payload(entry: _CataloguedType, payload: dict[str, Any]) -> None:
    if entry.validator is None:
        return
    error = jsonschema.exceptions.best_match(entry.validator.iter_errors(payload))
    if error is not None:
        path = ".".join(str(part) for part in error.absolute_path)
        raise InvalidField(
            f"does not match the event type's schema: {error.message}",
            field="payload" + (f".{path}" if path else ""),
        )


def _check_against_catalogue(session: Session, event_type: str, payload: dict[str, Any]) -> None:
    _validate_payload(_catalogue.read(session, event_type), payload)


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


# The fast path of publish (see the module docstring): check the application and the event
# type, take the key's advisory lock (the general path takes the same one), claim the key,
# store the message under an id drawn in advance (so the key row can name it), fan it out.
# The fan-out join is the one matching rule (webhooks_core.endpoints.matching), as SQL text.
# It returns a null message id when it stored nothing.
_FAST_PUBLISH_CTES = """
WITH application AS (
    SELECT id FROM applications WHERE id = CAST(:app_id AS uuid)
), event_type AS (
    SELECT name FROM event_types
    WHERE name = :event_type AND NOT archived
      AND md5(coalesce(CAST(schema AS text), '')) = :schema_digest
), {claim}, message AS (
    INSERT INTO messages
        (id, event_id, application_id, event_type, payload, channels, occurred_at, source)
    SELECT claim.message_id, :event_id, CAST(:app_id AS uuid), :event_type,
           CAST(:payload AS jsonb), CAST(:channels AS text[]), :occurred_at, 'http'
    FROM claim
    RETURNING id
), fan_out AS (
    INSERT INTO deliveries
        (message_id, endpoint_id, application_id, event_type, state, next_attempt_at)
    SELECT message.id, endpoint.id, endpoint.application_id, :event_type, :pending, now()
    FROM message JOIN endpoints AS endpoint ON {receives}
    RETURNING 1
)
SELECT (SELECT id FROM message) AS message_id, (SELECT count(*) FROM fan_out) AS deliveries
"""
_CLAIM_WITHOUT_KEY = """claim AS (
    SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS message_id
    FROM application, event_type
)"""
_CLAIM_WITH_KEY = """key_lock AS (
    SELECT pg_advisory_xact_lock(hashtextextended(:lock_name, 0))
), claim AS (
    INSERT INTO idempotency_keys (application_id, key, request_hash, message_id)
    SELECT application.id, :key, :request_hash, nextval(pg_get_serial_sequence('messages', 'id'))
    FROM application, event_type, key_lock
    ON CONFLICT DO NOTHING
    RETURNING message_id
)"""
_PARAMETER_TYPES = {
    "app_id": "text",
    "event_type": "text",
    "schema_digest": "text",
    "event_id": "text",
    "payload": "text",
    "channels": "text[]",
    "occurred_at": "timestamptz",
    "pending": "text",
    "subscription": "text",
    "key": "text",
    "request_hash": "text",
    "lock_name": "text",
}
_BIND = re.compile(r"(?<![:\w]):(\w+)")


class _PreparedStatement:
    """A statement PostgreSQL plans once per connection (``PREPARE``), then only executes.

    Planning the publish statement cost more server CPU than running it (about 0.2 ms against
    0.15 ms); a prepared statement switches to a generic plan after five executions.  It is
    prepared on first use on each pooled connection (``Connection.info`` lives as long as the
    database connection, so a connection made after a restart prepares it again), and a
    ``PREPARE`` is not undone by a rollback.
    """

    def __init__(self, name: str, sql: str) -> None:
        names: list[str] = []

        def positional(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        body = _BIND.sub(positional, sql)
        types = ", ".join(_PARAMETER_TYPES[n] for n in names)
        self._name = name
        self._prepare = f"PREPARE {name} ({types}) AS {body}"
        self._execute = text(f"EXECUTE {name}({', '.join(f':{n}' for n in names)})")

    def execute(self, session: Session, params: dict[str, Any]) -> Row[Any]:
        """Run it in ``session``'s transaction; return its one row."""
        connection = session.connection()
        prepared: set[str] = connection.info.setdefault("prepared_statements", set())
        if self._name not in prepared:
            connection.exec_driver_sql(self._prepare)
            prepared.add(self._name)
        # Through the session, which first flushes what it holds (a key the general path
        # remembered for an earlier message of the same batch).
        return session.execute(self._execute, params).one()


_FAST_PUBLISH_CTES = _FAST_PUBLISH_CTES.replace("{receives}", receives_sql("endpoint"))
_FAST_PUBLISH = _PreparedStatement(
    "webhooks_publish", _FAST_PUBLISH_CTES.replace("{claim}", _CLAIM_WITHOUT_KEY)
)
_FAST_PUBLISH_WITH_KEY = _PreparedStatement(
    "webhooks_publish_keyed", _FAST_PUBLISH_CTES.replace("{claim}", _CLAIM_WITH_KEY)
)


@dataclass(frozen=True)
class Publication:
    """One message to publish, checked and ready to store."""

    envelope: Envelope
    idempotency_key: str | None
    digest: str
    client_event_id: bool  # the client chose the event id (it may have used it already)


def prepare_publication(
    settings: Settings,
    *,
    event_type: str,
    payload: dict[str, Any],
    event_id: str | None = None,
    channels: list[str] | None = None,
    timestamp: datetime | None = None,
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
    envelope = Envelope(**envelope_fields)
    digest = request_hash(body if body is not None else envelope_fields)
    return Publication(envelope, idempotency_key, digest, client_event_id=event_id is not None)


def publish_message(
    sessions: sessionmaker[Session],
    settings: Settings,
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
    settings: Settings,
    app_id: uuid.UUID,
    publications: Sequence[Publication | DomainError],
) -> list[Accepted | DomainError]:
    """Store several messages of ``app_id`` in one transaction, each on its own terms.

    Each publication is accepted, recognised as a repeat, or refused (a :class:`DomainError`
    in its place of the result) exactly as :func:`publish_message` would treat it alone;
    entries that are already errors are passed through.  Keys are locked in sorted order, so
    concurrent batches sharing keys cannot deadlock.
    """

    def work(session: Session) -> list[Accepted | DomainError]:
        results: dict[int, Accepted | DomainError] = {}
        pending: list[tuple[int, Publication]] = []
        for index, publication in enumerate(publications):
            if isinstance(publication, Publication):
                pending.append((index, publication))
            else:
                results[index] = publication
        pending.sort(
            key=lambda item: (item[1].idempotency_key is None, item[1].idempotency_key or "")
        )
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


def _record(accepted: Accepted) -> None:
    message = accepted.message
    created = not accepted.duplicate
    outcome = AcceptResult(message.id, message.event_id, created, accepted.deliveries * created)
    record_accepted(message.event_type, outcome, "http")


def _publish(
    session: Session, settings: Settings, app_id: uuid.UUID, publication: Publication
) -> Accepted:
    """Store one publication in ``session``'s transaction: the fast path, else the general."""
    fast = _publish_fast(session, app_id, publication)
    return fast or _publish_general(session, settings, app_id, publication)


def _publish_fast(session: Session, app_id: uuid.UUID, publication: Publication) -> Accepted | None:
    envelope = publication.envelope
    entry = _catalogue.get(envelope.type)
    if entry is None or publication.client_event_id:
        return None
    try:
        _validate_payload(entry, envelope.data)
    except InvalidField:
        return None  # the general path refuses it, after looking for a first result
    key = publication.idempotency_key
    params: dict[str, Any] = {
        "app_id": str(app_id),
        "event_type": envelope.type,
        "schema_digest": entry.digest,
        "event_id": envelope.id,
        "payload": json.dumps(envelope.data, separators=(",", ":"), ensure_ascii=False),
        "channels": envelope.channels,
        "occurred_at": envelope.timestamp,
        "pending": DeliveryState.PENDING.value,
        "subscription": EndpointKind.SUBSCRIPTION.value,
    }
    if key is not None:
        params |= {"key": key, "request_hash": publication.digest, "lock_name": f"{app_id}:{key}"}
    row = (_FAST_PUBLISH_WITH_KEY if key else _FAST_PUBLISH).execute(session, params)
    if row.message_id is None:
        return None
    message = StoredMessage(
        row.message_id, envelope.id, envelope.type, envelope.timestamp, envelope.channels
    )
    return Accepted(message, int(row.deliveries), duplicate=False)


def _publish_general(
    session: Session, settings: Settings, app_id: uuid.UUID, publication: Publication
) -> Accepted:
    envelope = publication.envelope
    key = publication.idempotency_key
    _require_application(session, app_id)
    if key is not None:
        first = _claim_key(session, settings, app_id, key, publication.digest)
        if first is not None:
            deliveries = _delivery_count(session, first.id)
            return Accepted(StoredMessage.of(first), deliveries, duplicate=True)
    _check_against_catalogue(session, envelope.type, envelope.data)
    result = accept_message(session, envelope, source="http", application_id=app_id)
    if not result.created:
        message = _known_event(session, app_id, result)
        deliveries = _delivery_count(session, message.id)
    else:
        message = _stored(session, result.message_id)
        deliveries = result.deliveries
    if key is not None:
        _remember_key(session, app_id, key, publication.digest, message.id)
    return Accepted(StoredMessage.of(message), deliveries, duplicate=not result.created)


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
            StoredMessage.of(stored),
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
        StoredMessage.of(message),
        1 if delivery else 0,
        duplicate=duplicate,
        delivery_id=delivery.id if delivery else None,
        endpoint_id=delivery.endpoint_id if delivery else None,
    )
