"""The settings of the people demo producer (``WEBHOOKS_*``, read once at start).

The demo and its outbox relay share the producer database, so :class:`ProducerSettings`
extends the relay's settings (the database URL is declared once) with what only the demo app
reads.  A new setting of the demo goes here.
"""

from __future__ import annotations

from pydantic import Field

from outbox.config import RelaySettings


class ProducerSettings(RelaySettings):
    """What the people demo may be configured with."""

    upload_dir: str = "var/uploads"
    upload_max_bytes: int = Field(default=10 * 1_048_576, ge=1024)
