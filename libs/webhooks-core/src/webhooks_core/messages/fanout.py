"""Accepting a message: store it once, then create one delivery per matching endpoint.

Every ingestion path (broker consumer, HTTP API, relay mode) ends here.  Both steps are single
statements whose idempotency lives in the schema: the unique ``(event_id, application_id)`` of
``messages`` makes a second publish of the same event by the same application (or a second
broadcast of it) a no-op, and the unique ``(message_id, endpoint_id)`` pair keeps fan-out from
ever creating a delivery twice.  Event ids are scoped to their application: two applications
may publish the same id and each gets its own message.  The caller owns the transaction.

Which endpoints receive a message is the one matching rule of
:mod:`webhooks_core.endpoints.matching`; both fan-out statements here are built from it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, String, and_, cast, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import TEXT, insert
from sqlalchemy.orm import Session, aliased

from webhooks_core.deliveries.ordering import first_due_at, lock_ordering_keys
from webhooks_core.endpoints.matching import MAY_BROADCAST, receives, receives_values
from webhooks_core.messages.envelope import Envelope
from webhooks_core.models import Delivery, DeliveryState, Endpoint, Message
from webhooks_core.observability import (
    DELIVERIES_CREATED,
    MESSAGES_ACCEPTED,
    MESSAGES_DUPLICATE,
)

SOURCES = frozenset({"broker", "http", "relay", "platform"})  # platform: operational events
# Event ids are unique per application; broadcasts (no application) among themselves.
_EVENT_KEY = "uq_messages_event_id_application_id"
_EventKey = tuple[str, uuid.UUID | None]  # (event id, application id or None)


@dataclass(frozen=True)
class AcceptResult:
    """What accepting an envelope did.

    ``created`` is False when the event id was already stored for the same application (or as
    a broadcast); then ``message_id`` is that message and ``deliveries`` is 0 (nothing was
    fanned out again).
    """

    message_id: int
    event_id: str
    created: bool
    deliveries: int


def accept_message(
    session: Session,
    envelope: Envelope,
    *,
    source: str,
    application_id: uuid.UUID | None = None,
) -> AcceptResult:
    """Store ``envelope`` once and fan it out; the caller commits.

    ``application_id`` scopes the message to one application (None broadcasts it).
    ``source`` is ``broker``, ``http`` or ``relay``.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown message source {source!r}")
    lock_ordering_keys(session, [envelope.ordering_key])
    stored = session.execute(
        insert(Message)
        .values(
            event_id=envelope.id,
            application_id=application_id,
            event_type=envelope.type,
            payload=envelope.data,
            channels=envelope.channels,
            ordering_key=envelope.ordering_key,
            occurred_at=envelope.timestamp,
            source=source,
        )
        .on_conflict_do_nothing(constraint=_EVENT_KEY)
        .returning(Message.id)
    ).scalar_one_or_none()
    if stored is None:
        existing = session.execute(
            select(Message.id).where(
                Message.event_id == envelope.id,
                Message.application_id.is_not_distinct_from(application_id),
            )
        ).scalar_one()
        return AcceptResult(existing, envelope.id, created=False, deliveries=0)

    if source == "relay":
        # A relay message has exactly one target, created by the caller; no fan-out.
        return AcceptResult(stored, envelope.id, created=True, deliveries=0)

    count = fan_out(
        session,
        message_id=stored,
        event_type=envelope.type,
        channels=envelope.channels,
        application_id=application_id,
        ordering_key=envelope.ordering_key,
    )
    return AcceptResult(stored, envelope.id, created=True, deliveries=count)


def fan_out(
    session: Session,
    *,
    message_id: int,
    event_type: str,
    channels: list[str] | None,
    application_id: uuid.UUID | None,
    ordering_key: str | None = None,
) -> int:
    """Insert one pending delivery per matching endpoint in one statement; return how many.

    A keyed one is parked behind an open delivery of its endpoint and key
    (:func:`~webhooks_core.deliveries.ordering.first_due_at`).
    """
    conditions = receives_values(event_type, channels, application_id)
    key = literal(ordering_key, String)
    matching = select(
        literal(message_id),
        Endpoint.id,
        Endpoint.application_id,
        literal(event_type, String),
        literal(DeliveryState.PENDING.value, String),
        first_due_at(Endpoint.id, key),
        key,
    ).where(conditions)
    result = session.execute(
        insert(Delivery)
        .from_select(
            [
                "message_id",
                "endpoint_id",
                "application_id",
                "event_type",
                "state",
                "next_attempt_at",
                "ordering_key",
            ],
            matching,
        )
        .on_conflict_do_nothing(constraint="uq_deliveries_message_endpoint")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def deliver_to(
    session: Session,
    message_id: int,
    endpoint: Endpoint,
    event_type: str,
    ordering_key: str | None = None,
) -> int:
    """Create the one pending delivery of a message to ``endpoint``, due now (or parked
    behind its key, as in :func:`fan_out`); return its id.

    For the paths that choose the endpoint themselves instead of fanning out (relay mode,
    test events); the caller owns the transaction.
    """
    delivery = Delivery(
        message_id=message_id,
        endpoint_id=endpoint.id,
        application_id=endpoint.application_id,
        event_type=event_type,
        ordering_key=ordering_key,
        state=DeliveryState.PENDING.value,
        next_attempt_at=first_due_at(literal(endpoint.id), literal(ordering_key, String)),
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def accept_messages(
    session: Session,
    incoming: Sequence[tuple[Envelope, uuid.UUID | None]],
    *,
    source: str,
) -> list[AcceptResult]:
    """:func:`accept_message` for many envelopes at once, in two statements; the caller commits.

    ``incoming`` pairs each envelope with its application id (None broadcasts).  One
    multi-row ``INSERT ... ON CONFLICT (event_id, application_id) DO NOTHING RETURNING``
    stores the new messages, then one ``INSERT INTO deliveries ... SELECT`` joins them to every
    matching endpoint under the same rules.  Results come back in the order of ``incoming``; an
    (event id, application) already stored, or repeated within the batch, is a duplicate
    (``created=False``).
    """
    if source not in SOURCES - {"relay"}:
        raise ValueError(f"batch accept does not take source {source!r}")
    if not incoming:
        return []
    lock_ordering_keys(session, [envelope.ordering_key for envelope, _ in incoming])
    rows = [
        {
            "event_id": envelope.id,
            "application_id": application_id,
            "event_type": envelope.type,
            "payload": envelope.data,
            "channels": envelope.channels,
            "ordering_key": envelope.ordering_key,
            "occurred_at": envelope.timestamp,
            "source": source,
        }
        for envelope, application_id in incoming
    ]
    created: dict[_EventKey, int] = {
        (row.event_id, row.application_id): row.id
        for row in session.execute(
            insert(Message)
            .values(rows)
            .on_conflict_do_nothing(constraint=_EVENT_KEY)
            .returning(Message.event_id, Message.application_id, Message.id)
        )
    }
    keys = [(envelope.id, application_id) for envelope, application_id in incoming]
    existing = _stored_messages(session, set(keys) - created.keys())
    per_message: Counter[int] = Counter()
    if created:
        per_message = Counter(
            session.execute(
                insert(Delivery)
                .from_select(_DELIVERY_COLUMNS, _matching_endpoints(list(created.values())))
                .on_conflict_do_nothing(constraint="uq_deliveries_message_endpoint")
                .returning(Delivery.message_id)
            ).scalars()
        )
    results: list[AcceptResult] = []
    reported: set[_EventKey] = set()
    for key in keys:
        if key in created and key not in reported:
            reported.add(key)
            message_id = created[key]
            results.append(AcceptResult(message_id, key[0], True, per_message[message_id]))
        else:
            message_id = created.get(key) or existing[key]
            results.append(AcceptResult(message_id, key[0], created=False, deliveries=0))
    return results


def _stored_messages(session: Session, keys: set[_EventKey]) -> dict[_EventKey, int]:
    """The ids of the messages stored under ``keys`` (event id, application or None)."""
    if not keys:
        return {}
    broadcasts = [event_id for event_id, application_id in keys if application_id is None]
    scoped = [key for key in keys if key[1] is not None]
    conditions = []
    if broadcasts:
        conditions.append(and_(Message.application_id.is_(None), Message.event_id.in_(broadcasts)))
    if scoped:
        conditions.append(tuple_(Message.event_id, Message.application_id).in_(scoped))
    rows = session.execute(
        select(Message.event_id, Message.application_id, Message.id).where(or_(*conditions))
    )
    return {(row.event_id, row.application_id): row.id for row in rows}


_DELIVERY_COLUMNS = [
    "message_id",
    "endpoint_id",
    "application_id",
    "event_type",
    "state",
    "next_attempt_at",
    "ordering_key",
]


def _matching_endpoints(
    message_ids: list[int],
) -> Select[int, uuid.UUID, uuid.UUID, str, str, datetime, str | None]:
    """(message, endpoint) pairs of the stored messages ``message_ids``, as delivery rows,
    in message order: the deliveries' ids, which order a key's deliveries, follow the
    messages' acceptance order.  Keyed ones behind another of their key are parked."""
    message = aliased(Message)
    # A later message of a key, to the same endpoint, in this same statement waits too.
    earlier = (
        func.row_number().over(
            partition_by=(Endpoint.id, message.ordering_key), order_by=message.id
        )
        > 1
    )
    matches = receives(
        event_type=cast(message.event_type, TEXT),
        channels=message.channels,
        application_id=message.application_id,
        application=MAY_BROADCAST,
    )
    return (
        select(
            message.id,
            Endpoint.id,
            Endpoint.application_id,
            message.event_type,
            literal(DeliveryState.PENDING.value, String),
            first_due_at(Endpoint.id, message.ordering_key, earlier),
            message.ordering_key,
        )
        .select_from(message)
        .join(Endpoint, matches)
        .where(message.id.in_(message_ids))
        .order_by(message.id, Endpoint.id)
    )


def record_accepted(event_type: str, result: AcceptResult, path: str) -> None:
    """Count an accept in the platform metrics; call it only after the transaction commits."""
    if result.created:
        MESSAGES_ACCEPTED.labels(event_type, path).inc()
        DELIVERIES_CREATED.inc(result.deliveries)
    else:
        record_duplicate(path)


def record_duplicate(path: str) -> None:
    """Count a publish that stored nothing new (a repeated event id or idempotency key)."""
    MESSAGES_DUPLICATE.labels(path).inc()
