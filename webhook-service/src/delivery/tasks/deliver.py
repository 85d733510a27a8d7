"""The ``delivery.deliver`` task: one leased batch of deliveries of one endpoint.

Thin on purpose: it takes the lease token and delivery ids the scheduler published and calls
:func:`delivery.engine.deliver_batch`, which re-checks state and lease in the database, so a
task delivered twice (a redelivery after a lost connection) sends nothing the second time.
Late acks and reject-on-worker-lost make RabbitMQ hand the task to another worker if this one
dies; if that fails too, the lease expires and the scheduler claims the batch again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import shared_task

from delivery.broker import DELIVER_QUEUE_NAME
from delivery.engine import deliver_batch
from delivery.runtime import runtime_for
from delivery.scheduling import DELIVER_TASK

logger = logging.getLogger(__name__)


@shared_task(  # type: ignore[untyped-decorator]
    name=DELIVER_TASK,
    bind=True,
    queue=DELIVER_QUEUE_NAME,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver(self: Any, lease_token: str, delivery_ids: list[int]) -> dict[str, int]:
    """Deliver the batch leased under ``lease_token``; returns counts by resulting state."""
    report = deliver_batch(runtime_for(self.app), uuid.UUID(lease_token), delivery_ids)
    if report.taken < len(delivery_ids):
        logger.info(
            "batch %s: %d of %d deliveries no longer leased to it (done or re-leased)",
            lease_token,
            len(delivery_ids) - report.taken,
            len(delivery_ids),
        )
    return {
        "taken": report.taken,
        "delivered": report.delivered,
        "retrying": report.retrying,
        "dead": report.dead,
        "cancelled": report.cancelled,
        "released": report.released,
    }
