"""Names of everything the platform declares on RabbitMQ, in the project's vhost."""

from __future__ import annotations

from kombu import Exchange, Queue

# Producers publish event envelopes to EVENTS_EXCHANGE (routing key = event type); ingestion
# reads INGEST_QUEUE, and what it cannot parse is dead-lettered to INGEST_DEAD_QUEUE.
from webhooks_core.topology import (
    EVENTS_EXCHANGE,
    INGEST_DEAD_EXCHANGE,
    INGEST_DEAD_QUEUE,
    INGEST_QUEUE,
)

__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DELIVER_QUEUE_NAME",
    "EVENTS_EXCHANGE",
    "INGEST_DEAD_EXCHANGE",
    "INGEST_DEAD_QUEUE",
    "INGEST_QUEUE",
]

# Deliveries whose retries ran out are published here for operators to consume or alert on.
DEAD_LETTER_EXCHANGE = Exchange("webhooks.dead-letters", type="fanout", durable=True)
DEAD_LETTER_QUEUE = Queue(
    "webhooks.dead-letters", exchange=DEAD_LETTER_EXCHANGE, routing_key="#", durable=True
)
# Celery task queues.
DELIVER_QUEUE_NAME = "webhooks.deliver"
