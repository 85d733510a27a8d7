"""The RabbitMQ names producers and the platform agree on, in the project's vhost.

Producers (the outbox relay) publish event envelopes to the topic exchange
``webhooks.events`` with the event type as routing key; the platform's ingest queue is bound
to it with a dead-letter exchange, so that what ingestion cannot parse is kept, never
dropped.  Both sides declare these same entities (RabbitMQ refuses a queue redeclared with
other arguments), so events published before any ingestion worker ran are queued, not lost.
"""

from __future__ import annotations

from kombu import Exchange, Queue

EVENTS_EXCHANGE = Exchange("webhooks.events", type="topic", durable=True)
INGEST_DEAD_EXCHANGE = Exchange("webhooks.ingest.dlx", type="fanout", durable=True)
INGEST_QUEUE = Queue(
    "webhooks.ingest",
    exchange=EVENTS_EXCHANGE,
    routing_key="#",
    durable=True,
    queue_arguments={"x-dead-letter-exchange": INGEST_DEAD_EXCHANGE.name},
)
INGEST_DEAD_QUEUE = Queue(
    "webhooks.ingest.dead", exchange=INGEST_DEAD_EXCHANGE, routing_key="#", durable=True
)
INGEST_DECLARATIONS = (EVENTS_EXCHANGE, INGEST_DEAD_EXCHANGE, INGEST_QUEUE, INGEST_DEAD_QUEUE)
