"""Test events: one message delivered to one endpoint, so an operator can see it work.

The message goes to the chosen endpoint only (not fanned out), whatever it subscribes to; it
is a normal message and delivery otherwise, signed, retried and recorded like any other.  The
delivery is inserted due now, which wakes the delivery scheduler.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registration.services.errors import InvalidField, NotFound
from webhooks_core.db import run_transaction
from webhooks_core.ids import new_message_id
from webhooks_core.messages.envelope import utcnow
from webhooks_core.messages.fanout import deliver_to
from webhooks_core.models import Endpoint, EndpointKind, Message

TEST_EVENT_TYPE = "webhook.test"
TEST_SOURCE = "console"


@dataclass(frozen=True)
class SentTestEvent:
    """The message and delivery a test event created."""

    message_id: int
    event_id: str
    delivery_id: int


def send_test_event(
    sessions: sessionmaker[Session], app_id: uuid.UUID, endpoint_id: uuid.UUID
) -> SentTestEvent:
    """Create a ``webhook.test`` message and its one delivery to ``endpoint_id``."""
    now = utcnow()

    def work(session: Session) -> SentTestEvent:
        endpoint = session.scalar(
            select(Endpoint).where(
                Endpoint.id == endpoint_id,
                Endpoint.application_id == app_id,
                Endpoint.kind == EndpointKind.SUBSCRIPTION,
                Endpoint.deleted_at.is_(None),
            )
        )
        if endpoint is None:
            raise NotFound(f"endpoint {endpoint_id} not found")
        if not endpoint.enabled:
            raise InvalidField("the endpoint is disabled: enable it first", field="endpoint")
        message = Message(
            event_id=new_message_id(),
            application_id=app_id,
            event_type=TEST_EVENT_TYPE,
            payload={
                "test": True,
                "endpoint_id": str(endpoint_id),
                "message": "A test event sent from the webhooks console.",
            },
            channels=None,
            occurred_at=now,
            source=TEST_SOURCE,
        )
        session.add(message)
        session.flush()
        delivery_id = deliver_to(session, message.id, endpoint, TEST_EVENT_TYPE)
        return SentTestEvent(message.id, message.event_id, delivery_id)

    return run_transaction(sessions, work)
