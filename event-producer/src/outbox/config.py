"""The settings of the outbox relay (``WEBHOOKS_*``, read once at start).

:class:`RelaySettings` is what ``python -m outbox.relay`` reads: the producer's database
(whose outbox it drains), the broker it publishes to, and its pace.  A new setting of the
relay goes here; one of the people demo goes to ``producer.config``.
"""

from __future__ import annotations

from pydantic import Field

from webhooks_core.settings import CoreSettings


class RelaySettings(CoreSettings):
    """What the outbox relay of a producer may be configured with."""

    producer_database_url: str = Field(
        description="the producer's PostgreSQL database (the one holding the outbox), for "
        "example postgresql+psycopg2://postgres@127.0.0.1:5432/webhooks_producer "
        "(make run sets this one)"
    )
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
