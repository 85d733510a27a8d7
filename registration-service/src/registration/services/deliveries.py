"""Reading what happened: messages, deliveries, attempts, dead letters, the undelivered view.

Every function takes ``application_id`` (None for the admin, who sees every application) and
filters, and returns a keyset-paginated :class:`~registration.services.pagination.Page`,
newest first.  Rows are returned with the message's public ``event_id`` attached, since that is
the ``webhook-id`` users see in their receivers' logs.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import InvalidField, NotFound
from registration.services.pagination import Page, paginate
from webhooks_core.db import run_transaction
from webhooks_core.messages.envelope import utcnow
from webhooks_core.models import (
    TERMINAL_STATES,
    Attempt,
    DeadLetter,
    Delivery,
    Endpoint,
    EndpointKind,
    Message,
)


@dataclass(frozen=True)
class Window:
    """Filters shared by every list: a time range (on the row's creation time)."""

    since: datetime | None = None
    until: datetime | None = None

    def apply(self, query: Select[Any], column: Any) -> Select[Any]:
        if self.since is not None:
            query = query.where(column >= self.since)
        if self.until is not None:
            query = query.where(column < self.until)
        return query


@dataclass(frozen=True)
class DeliverySearch:
    """Search filters of the deliveries list beyond state, endpoint and type.

    ``status_code`` is the last attempt's; ``channel`` one of the message's channels;
    ``payload`` a JSON object the message's data must contain (``@>``, served by the GIN
    index on ``messages.payload``), as :func:`payload_containment` builds it from a field
    path and a value.
    """

    status_code: int | None = None
    channel: str | None = None
    payload: dict[str, Any] | None = None

    def apply(self, query: Select[Any], application_id: uuid.UUID | None) -> Select[Any]:
        if self.status_code is not None:
            query = query.where(Delivery.last_status_code == self.status_code)
        messages = []
        if self.channel is not None:
            messages.append(Message.channels.any_() == self.channel)
        if self.payload is not None:
            messages.append(Message.payload.contains(self.payload))
        if messages:
            if application_id is not None:
                # The caller's messages and the broadcasts (the delivery scope keeps only
                # deliveries to the caller's endpoints).
                messages.append(
                    or_(Message.application_id == application_id, Message.application_id.is_(None))
                )
            query = query.where(Delivery.message_id.in_(select(Message.id).where(*messages)))
        return query


# A payload field path: dotted names (``data.person.id``).
PAYLOAD_FIELD_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"


def payload_containment(field: str, value: str) -> dict[str, Any]:
    """``data.person.id`` and ``42`` as ``{"person": {"id": 42}}``.

    The path is dotted, with or without the leading ``data.`` (the message's data is what is
    stored); the value is read as JSON when it is JSON (``42``, ``true``, ``"42"``), else
    taken as a string.
    """
    parts = field.split(".")
    if parts and parts[0] == "data":
        parts = parts[1:]
    if not parts or not re.fullmatch(PAYLOAD_FIELD_PATTERN, field):
        raise InvalidField(
            "must be a dotted path into the data, e.g. data.person.id", field="payload_field"
        )
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    contained: Any = parsed
    for name in reversed(parts):
        contained = {name: contained}
    result: dict[str, Any] = contained
    return result


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: the URL, and ``relay`` or ``deleted`` when no list shows it."""

    url: str = ""
    note: str = ""


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its message's event id and, in the undelivered view, its age."""

    delivery: Delivery
    event_id: str
    age_seconds: float
    # The target, also for a relay delivery or a deleted endpoint (which no list shows).
    target: Target = Target()

    @property
    def endpoint_url(self) -> str:
        """The URL the delivery goes (or went) to."""
        return self.target.url

    def __getattr__(self, name: str) -> Any:
        # Serializers read delivery fields straight off the view.
        return getattr(self.delivery, name)


def _event_ids(session: Session, message_ids: set[int]) -> dict[int, str]:
    if not message_ids:
        return {}
    rows = session.execute(select(Message.id, Message.event_id).where(Message.id.in_(message_ids)))
    return {row.id: row.event_id for row in rows}


def _targets(session: Session, endpoint_ids: set[uuid.UUID]) -> dict[uuid.UUID, Target]:
    """URLs of endpoints of any kind, deleted ones included."""
    if not endpoint_ids:
        return {}
    rows = session.execute(
        select(Endpoint.id, Endpoint.url, Endpoint.kind, Endpoint.deleted_at).where(
            Endpoint.id.in_(endpoint_ids)
        )
    )
    return {
        row.id: Target(
            row.url,
            "relay"
            if row.kind == EndpointKind.RELAY.value
            else ("deleted" if row.deleted_at is not None else ""),
        )
        for row in rows
    }


def _delivery_views(session: Session, deliveries: list[Delivery]) -> list[DeliveryView]:
    event_ids = _event_ids(session, {d.message_id for d in deliveries})
    targets = _targets(session, {d.endpoint_id for d in deliveries})
    now = utcnow()
    return [
        DeliveryView(
            d,
            event_ids.get(d.message_id, ""),
            (now - d.created_at).total_seconds(),
            targets.get(d.endpoint_id, Target()),
        )
        for d in deliveries
    ]


def _views(session: Session, page: Page[Delivery]) -> Page[DeliveryView]:
    return Page(_delivery_views(session, page.items), page.next_cursor)


def _delivery_scope(application_id: uuid.UUID | None) -> list[ColumnElement[bool]]:
    return [] if application_id is None else [Delivery.application_id == application_id]


def list_messages(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    event_type: str | None,
    window: Window,
    limit: int,
    cursor: str | None,
) -> Page[Message]:
    """Messages of an application: its own, and broadcasts that reached its endpoints."""
    query = select(Message)
    if application_id is not None:
        reached = (
            select(Delivery.id)
            .where(Delivery.message_id == Message.id, Delivery.application_id == application_id)
            .exists()
        )
        query = query.where(or_(Message.application_id == application_id, reached))
    if event_type is not None:
        query = query.where(Message.event_type == event_type)
    query = window.apply(query, Message.created_at)

    def work(session: Session) -> Page[Message]:
        return paginate(session, query, Message.created_at, Message.id, limit=limit, cursor=cursor)

    return run_transaction(sessions, work)


def find_message(
    session: Session, *, application_id: uuid.UUID | None, event_id: str
) -> Message | None:
    """The message ``application_id`` knows as ``event_id``, or None.

    Event ids are unique per application: this is the application's own message, else a
    broadcast with that id that reached its endpoints.  Another application's message with the
    same id is never found, so the answer does not tell whether one exists.  Without an
    application (the admin across applications) it is the oldest message with that id.
    """
    query = select(Message).where(Message.event_id == event_id)
    if application_id is not None:
        reached = (
            select(Delivery.id)
            .where(Delivery.message_id == Message.id, Delivery.application_id == application_id)
            .exists()
        )
        query = query.where(
            or_(
                Message.application_id == application_id,
                and_(Message.application_id.is_(None), reached),
            )
        ).order_by(Message.application_id.is_(None))
    return session.scalars(query.order_by(Message.id).limit(1)).first()


def get_message(
    sessions: sessionmaker[Session], *, application_id: uuid.UUID | None, event_id: str
) -> tuple[Message, list[DeliveryView]]:
    """One message by event id (see :func:`find_message`), with its deliveries (to the
    caller's endpoints)."""

    def work(session: Session) -> tuple[Message, list[DeliveryView]]:
        message = find_message(session, application_id=application_id, event_id=event_id)
        if message is None:
            raise NotFound(f"message {event_id} not found")
        deliveries = list(
            session.scalars(
                select(Delivery)
                .where(Delivery.message_id == message.id, *_delivery_scope(application_id))
                .order_by(Delivery.id)
            )
        )
        return message, _delivery_views(session, deliveries)

    return run_transaction(sessions, work)


def list_deliveries(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    endpoint_id: uuid.UUID | None = None,
    states: list[str] | None = None,
    event_type: str | None = None,
    event_id: str | None = None,
    window: Window = Window(),
    undelivered: bool = False,
    search: DeliverySearch = DeliverySearch(),
    limit: int,
    cursor: str | None,
) -> Page[DeliveryView]:
    """Deliveries, filtered; ``undelivered`` keeps only those not in a terminal state."""
    query = select(Delivery).where(*_delivery_scope(application_id))
    if endpoint_id is not None:
        query = query.where(Delivery.endpoint_id == endpoint_id)
    if states:
        query = query.where(Delivery.state.in_(states))
    if undelivered:
        query = query.where(Delivery.state.not_in([str(s) for s in TERMINAL_STATES]))
    if event_type is not None:
        query = query.where(Delivery.event_type == event_type)
    if event_id is not None:
        # Several applications may use one event id; the delivery scope keeps the caller's.
        query = query.where(
            Delivery.message_id.in_(select(Message.id).where(Message.event_id == event_id))
        )
    query = search.apply(window.apply(query, Delivery.created_at), application_id)

    def work(session: Session) -> Page[DeliveryView]:
        page = paginate(
            session, query, Delivery.created_at, Delivery.id, limit=limit, cursor=cursor
        )
        return _views(session, page)

    return run_transaction(sessions, work)


def get_delivery(
    sessions: sessionmaker[Session], *, application_id: uuid.UUID | None, delivery_id: int
) -> DeliveryView:
    """One delivery."""

    def work(session: Session) -> DeliveryView:
        delivery = session.scalar(
            select(Delivery).where(Delivery.id == delivery_id, *_delivery_scope(application_id))
        )
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return _delivery_views(session, [delivery])[0]

    return run_transaction(sessions, work)


def list_attempts(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    delivery_id: int | None = None,
    endpoint_id: uuid.UUID | None = None,
    outcome: str | None = None,
    status_code: int | None = None,
    event_type: str | None = None,
    window: Window = Window(),
    limit: int,
    cursor: str | None,
) -> Page[Attempt]:
    """Attempts, newest first, of one delivery or of an application's endpoints.

    With ``endpoint_id`` and ``status_code`` the index on (endpoint, status code, start)
    reads exactly one page.
    """
    query = select(Attempt)
    if application_id is not None or event_type is not None:
        owned = select(Delivery.id).where(Delivery.id == Attempt.delivery_id)
        if application_id is not None:
            owned = owned.where(Delivery.application_id == application_id)
        if event_type is not None:
            owned = owned.where(Delivery.event_type == event_type)
        query = query.where(owned.exists())
    if status_code is not None:
        query = query.where(Attempt.status_code == status_code)
    if delivery_id is not None:
        query = query.where(Attempt.delivery_id == delivery_id)
    if endpoint_id is not None:
        query = query.where(Attempt.endpoint_id == endpoint_id)
    if outcome is not None:
        query = query.where(Attempt.outcome == outcome)
    query = window.apply(query, Attempt.started_at)

    def work(session: Session) -> Page[Attempt]:
        if delivery_id is not None:
            exists = session.scalar(
                select(func.count()).where(
                    Delivery.id == delivery_id, *_delivery_scope(application_id)
                )
            )
            if not exists:
                raise NotFound(f"delivery {delivery_id} not found")
        return paginate(session, query, Attempt.started_at, Attempt.id, limit=limit, cursor=cursor)

    return run_transaction(sessions, work)


@dataclass(frozen=True)
class DeadLetterView:
    """A dead letter with what an operator needs to decide on a redrive."""

    dead_letter: DeadLetter
    event_id: str
    event_type: str
    attempt_count: int
    target: Target = Target()

    @property
    def endpoint_url(self) -> str:
        """The URL the delivery went to."""
        return self.target.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dead_letter, name)


def list_dead_letters(
    sessions: sessionmaker[Session],
    *,
    application_id: uuid.UUID | None,
    endpoint_id: uuid.UUID | None = None,
    event_type: str | None = None,
    include_redriven: bool = False,
    window: Window = Window(),
    limit: int,
    cursor: str | None,
) -> Page[DeadLetterView]:
    """Dead letters, open ones only unless ``include_redriven``."""
    query = select(DeadLetter)
    if application_id is not None:
        query = query.where(DeadLetter.application_id == application_id)
    if endpoint_id is not None:
        query = query.where(DeadLetter.endpoint_id == endpoint_id)
    if not include_redriven:
        query = query.where(DeadLetter.redriven_at.is_(None))
    if event_type is not None:
        query = query.where(
            select(Delivery.id)
            .where(Delivery.id == DeadLetter.delivery_id, Delivery.event_type == event_type)
            .exists()
        )
    query = window.apply(query, DeadLetter.created_at)

    def work(session: Session) -> Page[DeadLetterView]:
        page = paginate(
            session, query, DeadLetter.created_at, DeadLetter.id, limit=limit, cursor=cursor
        )
        deliveries = {
            d.id: d
            for d in session.scalars(
                select(Delivery).where(Delivery.id.in_({dl.delivery_id for dl in page.items}))
            )
        }
        event_ids = _event_ids(session, {d.message_id for d in deliveries.values()})
        targets = _targets(session, {dl.endpoint_id for dl in page.items})
        views = []
        for letter in page.items:
            delivery = deliveries[letter.delivery_id]
            views.append(
                DeadLetterView(
                    letter,
                    event_ids.get(delivery.message_id, ""),
                    delivery.event_type,
                    delivery.attempt_count,
                    targets.get(letter.endpoint_id, Target()),
                )
            )
        return Page(views, page.next_cursor)

    return run_transaction(sessions, work)
