"""Replays: resend a delivery or a message, recover an endpoint, redrive dead letters.

A replay makes deliveries due now (state ``pending``, ``attempt_count`` back to 0 so the
retry schedule starts over, ``next_trigger='replay'`` so the attempt says why it happened);
the scheduler's notification trigger wakes it at once.  Replays are idempotent: a delivery
already ``pending`` or ``sending`` is left alone, so replaying twice sends once while the first
replay is still open.  Deliveries of a disabled or deleted endpoint are not replayed (enable
the endpoint first).  Every request writes a :class:`~webhooks_core.models.Replay` audit row,
also when it requeued nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from registration.services.deliveries import find_message
from registration.services.errors import Conflict, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import run_transaction
from webhooks_core.deliveries.states import FAILED_STATES, RECOVERABLE_STATES, REPLAYABLE_STATES
from webhooks_core.models import (
    Application,
    DeadLetter,
    Delivery,
    DeliveryState,
    Endpoint,
    Message,
    Replay,
)
from webhooks_core.observability import REPLAYS


def _active_endpoint() -> ColumnElement[bool]:
    return (
        select(Endpoint.id)
        .where(
            Endpoint.id == Delivery.endpoint_id,
            Endpoint.enabled.is_(True),
            Endpoint.deleted_at.is_(None),
        )
        .exists()
    )


def _payload_kept() -> ColumnElement[bool]:
    # Retention may have emptied a finished message's payload: that is not sent again.
    return (
        select(Message.id)
        .where(Message.id == Delivery.message_id, Message.payload_dropped_at.is_(None))
        .exists()
    )


def _requeue(session: Session, conditions: list[ColumnElement[bool]]) -> list[int]:
    """Make the matching replayable deliveries of active endpoints whose payload retention
    kept due now; return their ids."""
    statement = (
        update(Delivery)
        .where(
            *conditions,
            Delivery.state.in_(REPLAYABLE_STATES),
            _active_endpoint(),
            _payload_kept(),
        )
        .values(
            state=DeliveryState.PENDING,
            attempt_count=0,
            next_attempt_at=func.now(),
            next_trigger="replay",
            lease_token=None,
            lease_expires_at=None,
            updated_at=func.now(),
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    requeued = list(session.scalars(statement))
    if requeued:
        # A redriven delivery's open dead letter is closed by the redrive itself; close it
        # too when the delivery came back by a resend or recover.
        session.execute(
            update(DeadLetter)
            .where(DeadLetter.delivery_id.in_(requeued), DeadLetter.redriven_at.is_(None))
            .values(redriven_at=func.now())
            .execution_options(synchronize_session=False)
        )
    return requeued


def _audit(
    session: Session,
    *,
    kind: str,
    application_id: uuid.UUID | None,
    criteria: dict[str, Any],
    requested_by: str,
    requeued: int,
) -> Replay:
    replay = Replay(
        application_id=application_id,
        kind=kind,
        criteria={k: (str(v) if v is not None else None) for k, v in criteria.items()},
        requested_by=requested_by,
        deliveries_requeued=requeued,
    )
    session.add(replay)
    session.flush()
    REPLAYS.labels(kind).inc(requeued)
    return replay


def _require_application(session: Session, application_id: uuid.UUID | None) -> None:
    """404 for an application that does not exist; kept from deletion until the commit."""
    if application_id is None:
        return
    found = session.scalar(
        select(Application.id)
        .where(Application.id == application_id)
        .with_for_update(key_share=True)
    )
    if found is None:
        raise NotFound(f"application {application_id} not found")


def _scope(application_id: uuid.UUID | None) -> list[ColumnElement[bool]]:
    return [] if application_id is None else [Delivery.application_id == application_id]


def resend_delivery(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    delivery_id: int,
    requested_by: str,
) -> Replay:
    """Send one delivery again (no-op while it is already pending or sending)."""

    def work(session: Session) -> Replay:
        query = select(Delivery).where(Delivery.id == delivery_id, *_scope(application_id))
        delivery = session.scalar(query.with_for_update())
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} not found")
        endpoint = session.get(Endpoint, delivery.endpoint_id)
        if endpoint is None or not endpoint.enabled or endpoint.deleted_at is not None:
            raise Conflict("the endpoint is disabled or deleted; enable it before resending")
        message = session.get(Message, delivery.message_id)
        if message is not None and message.payload_dropped_at is not None:
            raise Conflict("retention dropped this message's payload; it cannot be sent again")
        requeued = _requeue(session, [Delivery.id == delivery_id])
        return _audit(
            session,
            kind="delivery",
            application_id=delivery.application_id,
            criteria={"delivery_id": delivery_id},
            requested_by=requested_by,
            requeued=len(requeued),
        )

    return run_transaction(sessions, work)


def resend_message(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    event_id: str,
    requested_by: str,
) -> Replay:
    """Send every delivery of a message again (those of active endpoints, not already due)."""

    def work(session: Session) -> Replay:
        message = find_message(session, application_id=application_id, event_id=event_id)
        message_id = message.id if message is not None else None
        visible = message_id is not None and session.scalar(
            select(func.count()).where(Delivery.message_id == message_id, *_scope(application_id))
        )
        if not visible:
            raise NotFound(f"message {event_id} not found")
        requeued = _requeue(session, [Delivery.message_id == message_id, *_scope(application_id)])
        return _audit(
            session,
            kind="message",
            application_id=application_id,
            criteria={"event_id": event_id},
            requested_by=requested_by,
            requeued=len(requeued),
        )

    return run_transaction(sessions, work)


def recover_endpoint(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    since: datetime,
    until: datetime | None,
    requested_by: str,
    include_cancelled: bool = False,
) -> Replay:
    """Resend every failed (dead or retrying) delivery of an endpoint created since ``since``.

    With ``include_cancelled`` the deliveries cancelled when the endpoint was disabled (or
    answered 410) come back too: the way to recover what a disable cancelled, once the
    endpoint is enabled again.
    """

    def work(session: Session) -> Replay:
        endpoint = session.scalar(
            select(Endpoint).where(
                Endpoint.id == endpoint_id,
                Endpoint.application_id == application_id,
                Endpoint.deleted_at.is_(None),
            )
        )
        if endpoint is None:
            raise NotFound(f"endpoint {endpoint_id} not found")
        if not endpoint.enabled:
            raise Conflict("the endpoint is disabled; enable it before recovering")
        conditions = [
            Delivery.endpoint_id == endpoint_id,
            Delivery.state.in_(RECOVERABLE_STATES if include_cancelled else FAILED_STATES),
            Delivery.created_at >= since,
        ]
        if until is not None:
            conditions.append(Delivery.created_at < until)
        requeued = _requeue(session, conditions)
        return _audit(
            session,
            kind="recover",
            application_id=application_id,
            criteria={
                "endpoint_id": endpoint_id,
                "since": since.isoformat(),
                "until": until,
                "include_cancelled": include_cancelled,
            },
            requested_by=requested_by,
            requeued=len(requeued),
        )

    return run_transaction(sessions, work)


def redrive_dead_letters(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    requested_by: str,
    dead_letter_id: int | None = None,
    endpoint_id: uuid.UUID | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Replay:
    """Redrive one open dead letter, those matching a filter, or all (no filter)."""
    conditions: list[ColumnElement[bool]] = [DeadLetter.redriven_at.is_(None)]
    if application_id is not None:
        conditions.append(DeadLetter.application_id == application_id)
    if dead_letter_id is not None:
        conditions.append(DeadLetter.id == dead_letter_id)
    if endpoint_id is not None:
        conditions.append(DeadLetter.endpoint_id == endpoint_id)
    if since is not None:
        conditions.append(DeadLetter.created_at >= since)
    if until is not None:
        conditions.append(DeadLetter.created_at < until)

    def work(session: Session) -> Replay:
        _require_application(session, application_id)
        picked = select(DeadLetter.delivery_id).where(*conditions)
        if event_type is not None:
            picked = picked.join(Delivery, Delivery.id == DeadLetter.delivery_id).where(
                Delivery.event_type == event_type
            )
        if dead_letter_id is not None:
            exists = session.scalar(
                select(DeadLetter.id).where(
                    DeadLetter.id == dead_letter_id,
                    *(
                        []
                        if application_id is None
                        else [DeadLetter.application_id == application_id]
                    ),
                )
            )
            if exists is None:
                raise NotFound(f"dead letter {dead_letter_id} not found")
        requeued = _requeue(
            session, [Delivery.id.in_(picked), Delivery.state == DeliveryState.DEAD]
        )
        return _audit(
            session,
            kind="redrive",
            application_id=application_id,
            criteria={
                "dead_letter_id": dead_letter_id,
                "endpoint_id": endpoint_id,
                "event_type": event_type,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
            },
            requested_by=requested_by,
            requeued=len(requeued),
        )

    return run_transaction(sessions, work)


def list_replays(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> Page[Replay]:
    """The replay audit log, newest first."""
    query = select(Replay)
    if application_id is not None:
        query = query.where(Replay.application_id == application_id)

    def work(session: Session) -> Page[Replay]:
        return paginate(session, query, Replay.created_at, Replay.id, limit=limit, cursor=cursor)

    return run_transaction(sessions, work)
