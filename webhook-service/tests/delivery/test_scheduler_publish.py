"""A batch whose task the broker never took is due again at once, and not counted as a lease
that ran out (a broker outage must not turn healthy deliveries into poison ones).

No engine processes here: the scheduler under test runs in this process, against the real
database, publishing to a RabbitMQ address where nothing listens.
"""

from __future__ import annotations

import socket
from typing import Any

from sqlalchemy import select, text

from delivery.celery_app import create_celery
from delivery.clock import SystemClock
from delivery.config import DeliverySettings
from delivery.scheduler import CeleryClaimPublisher, Scheduler
from webhooks_core.db import transaction
from webhooks_core.messages.envelope import Envelope
from webhooks_core.messages.fanout import accept_message
from webhooks_core.models import Application, Delivery, Endpoint


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unpublished_batches_are_due_again_and_not_counted(
    db: Any, settings: DeliverySettings
) -> None:
    with transaction(db) as session:
        app = Application(name="broker down")
        session.add(app)
        session.flush()
        session.add(Endpoint(application_id=app.id, url="http://127.0.0.1:9/webhook"))
        session.flush()
        for n in range(3):
            envelope = Envelope(type="person.created", data={"n": n})
            accept_message(session, envelope, source="http", application_id=app.id)
    down = settings.model_copy(
        update={"broker_url": f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"}
    )
    scheduler = Scheduler(settings, db, CeleryClaimPublisher(create_celery(down)), SystemClock())

    claimed, _ = scheduler.cycle()

    assert claimed == 3  # claimed, then the publish failed
    with db() as session:
        rows = list(session.scalars(select(Delivery)))
        leases = session.scalar(text("SELECT count(*) FROM delivery_leases"))
    assert [(d.state, d.lease_token, d.lease_expiries) for d in rows] == [("pending", None, 0)] * 3
    assert leases == 0
    assert scheduler._publish_failed  # the run loop waits before it claims again
