"""``publish``: record an event in the caller's transaction; the relay sends it after commit."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from outbox.schema import NOTIFY_CHANNEL, OUTBOX
from webhooks_core.envelope import Envelope


def publish(session: Session, envelope: Envelope) -> str:
    """Write ``envelope`` to the outbox in ``session``'s transaction and return its event id.

    Nothing leaves the process here: if the transaction rolls back the event never existed;
    once it commits, a relay publishes it to RabbitMQ (at least once).  Publishing the same
    event id twice stores it once.
    """
    row = (
        insert(OUTBOX)
        .values(event_id=envelope.id, event_type=envelope.type, body=envelope.to_json().decode())
        .on_conflict_do_nothing(index_elements=[OUTBOX.c.event_id])
        .cte("outbox_row")
    )
    # The row and the notification in one round trip (the CTE runs whether or not its result
    # is read).  The notification wakes the relays at commit time; PostgreSQL folds repeated
    # notifications of one transaction into one and drops them all on rollback.
    session.execute(
        select(text("pg_notify(:channel, '')")).add_cte(row), {"channel": NOTIFY_CHANNEL}
    )
    return envelope.id
