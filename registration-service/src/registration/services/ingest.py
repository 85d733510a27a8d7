"""HTTP ingestion: publish a message for an application, and relay mode (one-off webhooks).

The names the API uses, gathered from the modules that hold each concern:

* :mod:`.publishing`: publish one message or a batch (general path, results, size check);
* :mod:`.publish_statement`: the fast path, one prepared statement that stores and fans out;
* :mod:`.catalogue`: the event types as ingestion reads them, payloads checked against schemas;
* :mod:`.idempotency`: ``Idempotency-Key`` claims, repeats and request digests;
* :mod:`.relay`: relay mode, one webhook to a URL without a subscription.

Which endpoints receive a message is :mod:`webhooks_core.endpoints.matching`, for every path.
"""

from __future__ import annotations

from registration.services.idempotency import IDEMPOTENCY_FIELD, request_hash
from registration.services.publishing import (
    Accepted,
    PayloadTooLarge,
    Publication,
    StoredMessage,
    check_payload_size,
    prepare_publication,
    publish_message,
    publish_messages,
)
from registration.services.relay import RELAY_EVENT_TYPE, relay_message

__all__ = [
    "IDEMPOTENCY_FIELD",
    "RELAY_EVENT_TYPE",
    "Accepted",
    "PayloadTooLarge",
    "Publication",
    "StoredMessage",
    "check_payload_size",
    "prepare_publication",
    "publish_message",
    "publish_messages",
    "relay_message",
    "request_hash",
]
