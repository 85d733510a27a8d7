"""``publish``: record an event in the caller's transaction; the relay sends it after commit."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.schema import NOTIFY_CHANNEL
from webhooks_core.messages.envelope import Envelope

# The row and the notification in one round trip (the CTE runs whether or not its result is
# read).  The notification wakes the relays at commit time; PostgreSQL folds repeated
# notifications of one transaction into one and drops them all on rollback.  Plain SQL built
# once: building and hashing a Core statement per call was a fifth of a people request's CPU.
# The table is outbox.schema.OUTBOX.
_PUBLISH = text(
    "WITH outbox_row AS ("
    " INSERT INTO outbox (event_id, event_type, body) VALUES (:event_id, :event_type, :body)"
    " ON CONFLICT (event_id) DO NOTHING"
    ") SELECT pg_notify(:channel, '')"
)


def publish(session: Session, envelope: Envelope) -> str:
    """Write ``envelope`` to the outbox in ``session``'s transaction and return its event id.

    Nothing leaves the process here: if the transaction rolls back the event never existed;
    once it commits, a relay publishes it to RabbitMQ (at least once).  Publishing the same
    event id twice stores it once.
    """
    session.execute(
        _PUBLISH,
        {
            "event_id": envelope.id,
            "event_type": envelope.type,
            "body": envelope.to_json().decode(),
            "channel": NOTIFY_CHANNEL,
        },
    )
    return envelope.id
