"""What the relay declares on RabbitMQ before publishing: the platform's ingest topology.

The names and arguments are defined once, in :mod:`webhooks_core.topology`.
"""

from __future__ import annotations

from webhooks_core.topology import (
    EVENTS_EXCHANGE,
    INGEST_DEAD_EXCHANGE,
    INGEST_DEAD_QUEUE,
    INGEST_DECLARATIONS,
    INGEST_QUEUE,
)

DECLARATIONS = INGEST_DECLARATIONS

__all__ = [
    "DECLARATIONS",
    "EVENTS_EXCHANGE",
    "INGEST_DEAD_EXCHANGE",
    "INGEST_DEAD_QUEUE",
    "INGEST_QUEUE",
]
