"""The transactional outbox: publish events in the caller's transaction, relay them to RabbitMQ.

Any producer with a PostgreSQL database uses it in two steps:

* include :data:`outbox.schema.metadata` (the ``outbox`` table) in its migrations;
* call :func:`outbox.publish` with an :class:`~webhooks_core.messages.envelope.Envelope` inside the
  transaction that changes its own data, and run ``python -m outbox.relay`` against the same
  database.
"""

from outbox.publisher import publish
from outbox.schema import NOTIFY_CHANNEL, OUTBOX

__all__ = ["NOTIFY_CHANNEL", "OUTBOX", "publish"]
