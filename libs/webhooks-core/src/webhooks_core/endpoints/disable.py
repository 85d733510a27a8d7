"""Disabling an endpoint: the one way, whoever disables it.

The delivery engine disables an endpoint that answered 410 Gone (``gone``) or kept failing past
the auto-disable window (``failing``); an operator disables one through the API or the console
(``manual``).  Each time the same things happen, in the caller's transaction: the endpoint is
disabled with its reason, its breaker cleared, its open deliveries cancelled, and an
``endpoint.disabled`` message stored for its application (fanned out to the endpoints
subscribed to that type).  The platform's own disables are counted in
``webhooks_endpoints_disabled_total`` (an operator's are not: that counter drives an alert).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from webhooks_core.messages.envelope import Envelope
from webhooks_core.models import cancel_open_deliveries
from webhooks_core.observability import ENDPOINTS_DISABLED

logger = logging.getLogger(__name__)

EVENT_TYPE = "endpoint.disabled"
MANUAL_DETAIL = "disabled by a user"

_DISABLE = text(
    """
    UPDATE endpoints SET enabled = false, disabled_reason = :reason, disabled_at = :now,
                         circuit_open_until = NULL, updated_at = now()
    WHERE id = :id AND enabled
    RETURNING id
    """
)


def disable_detail(reason: str, detail: str | None = None) -> str:
    """The words stored as the endpoint's ``disabled_reason`` for ``reason``."""
    if reason == "gone":
        return "the endpoint answered 410 Gone"
    if reason == "failing":
        return "the endpoint kept failing past the auto-disable window"
    if reason == "manual":
        return detail or MANUAL_DETAIL
    raise ValueError(f"unknown disable reason {reason!r}")


def disable_endpoint(
    session: Session,
    endpoint_id: uuid.UUID,
    application_id: uuid.UUID,
    reason: str,
    now: datetime,
    *,
    detail: str | None = None,
) -> bool:
    """Disable an endpoint, clear its breaker, cancel its open deliveries, emit the event.

    ``reason`` is ``gone`` (it answered 410), ``failing`` (past the auto-disable window) or
    ``manual`` (an operator; ``detail`` is their reason).  Returns False when the endpoint
    was already disabled (then whoever disabled it emitted the event).  The caller commits.
    """
    # Imported here: fan-out imports this package's matching rule.
    from webhooks_core.messages.fanout import accept_message

    words = disable_detail(reason, detail)
    if session.execute(_DISABLE, {"id": endpoint_id, "reason": words, "now": now}).first() is None:
        return False
    session.execute(cancel_open_deliveries(endpoint_id, f"endpoint disabled: {words}"))
    envelope = Envelope(
        type=EVENT_TYPE,
        data={
            "endpoint_id": str(endpoint_id),
            "application_id": str(application_id),
            "reason": reason,
            "detail": words,
            "disabled_at": now.isoformat(),
        },
    )
    accept_message(session, envelope, source="platform", application_id=application_id)
    if reason == "manual":
        logger.info("endpoint disabled endpoint_id=%s reason=%s", endpoint_id, reason)
    else:
        ENDPOINTS_DISABLED.labels(reason).inc()
        logger.warning("endpoint disabled endpoint_id=%s reason=%s", endpoint_id, reason)
    return True
